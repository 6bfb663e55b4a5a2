-- inventory: every rejection of the admin functions, then the catalogue,
-- node lifecycle and the marketplace as an operator sees them.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET request.jwt.claims = '{"role": "pgcloud_admin", "sub": "ad000000-0000-4000-8000-000000000001"}';

-- SKUs: missing and malformed arguments.
SELECT api.admin_upsert_sku(NULL, 'H100', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('', 'H100', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('H100X1', 'H100', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100 x1', 'H100', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku(repeat('a', 64), 'H100', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', NULL, 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', E'H100\n', 1, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 0, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 65, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', NULL, 16, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 0, 128, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 0, 100, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, -1, 'eu-west', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'EU West', 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, NULL, 300);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'eu-west', -1);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'eu-west', 100000000001);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'eu-west', NULL);
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'eu-west', 300, 'dollars');
SELECT api.admin_upsert_sku('h100x1', 'H100', 1, 16, 128, 100, 'eu-west', 300, NULL);

-- Images.
SELECT api.admin_upsert_image(NULL, 'jammy');
SELECT api.admin_upsert_image('Ubuntu', 'jammy');
SELECT api.admin_upsert_image('ubuntu-22.04', NULL);
SELECT api.admin_upsert_image('ubuntu-22.04', 'Jammy');
SELECT api.admin_upsert_image('ubuntu-22.04', 'ubuntu/jammy/x');
SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy; rm -rf /');

-- Defined.
SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'eu-west', 2400) - 'updated_at';
SELECT api.admin_upsert_sku('h100x1', 'H100-SXM', 1, 16, 128, 1000, 'eu-west', 300) - 'updated_at';
SELECT api.admin_upsert_sku('h100x2', 'H100-SXM', 2, 32, 256, 2000, 'eu-west', 600, 'EUR') - 'updated_at';
SELECT api.admin_upsert_sku('a10x1', 'A10', 1, 8, 64, 500, 'us-east', 90) - 'updated_at';
SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy') - 'updated_at';
SELECT api.admin_upsert_image('ubuntu-24.04', 'ubuntu/noble') - 'updated_at';
-- Again: an update (a new price), not a second SKU.
SELECT api.admin_upsert_sku('h100x1', 'H100-SXM', 1, 16, 128, 1000, 'eu-west', 320) - 'updated_at';

-- Nodes: malformed arguments, unknown SKU, duplicates.
SELECT api.admin_register_node(NULL, 'abc123', 'h100x8');
SELECT api.admin_register_node('-gpu', 'abc123', 'h100x8');
SELECT api.admin_register_node('gpu_node', 'abc123', 'h100x8');
SELECT api.admin_register_node(repeat('a', 64), 'abc123', 'h100x8');
SELECT api.admin_register_node('gpu-node-1', NULL, 'h100x8');
SELECT api.admin_register_node('gpu-node-1', 'ABC123', 'h100x8');
SELECT api.admin_register_node('gpu-node-1', 'abc/123', 'h100x8');
SELECT api.admin_register_node('gpu-node-1', 'abc123', NULL);
SELECT api.admin_register_node('gpu-node-1', 'abc123', 'nope');
SELECT api.admin_register_node('GPU-Node-1.Example', 'abc123', 'h100x8') - 'id' - 'registered_at';
SELECT api.admin_register_node('gpu-node-1.example', 'abc999', 'h100x8');
SELECT api.admin_register_node('gpu-node-9', 'abc123', 'h100x1');
SELECT api.admin_register_node('gpu-node-2', 'abc124', 'h100x8') - 'id' - 'registered_at';
SELECT api.admin_register_node('a10-node-1', 'abc200', 'a10x1') - 'id' - 'registered_at';
SELECT hostname, slot_count, (SELECT count(*) FROM inventory.slots s WHERE s.node_id = n.id) AS slots, state, state_reason
  FROM inventory.nodes n ORDER BY hostname;

-- A SKU's shape is fixed once nodes use it; its price is not.
SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 4, 128, 1024, 8000, 'eu-west', 2400);
SELECT api.admin_upsert_sku('h100x8', 'H200', 8, 128, 1024, 8000, 'eu-west', 2400);
SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'us-east', 2400);
SELECT api.admin_upsert_sku('h100x8', 'H100-SXM', 8, 120, 1000, 7000, 'eu-west', 2200) ->> 'price_per_hour' AS new_price;

-- Maintenance and retirement: unknown node, states that do not allow it.
SELECT api.admin_set_node_maintenance(NULL, true);
SELECT api.admin_set_node_maintenance('00000000-0000-4000-8000-000000000000', true);
SELECT api.admin_set_node_maintenance(id, NULL) FROM inventory.nodes WHERE hostname = 'gpu-node-2';
-- commissioning -> maintenance is not a transition
SELECT api.admin_set_node_maintenance(id, true) FROM inventory.nodes WHERE hostname = 'gpu-node-2';
SELECT api.admin_set_node_maintenance(id, false) FROM inventory.nodes WHERE hostname = 'gpu-node-2';
SELECT api.admin_retire_node(NULL);
SELECT api.admin_retire_node('00000000-0000-4000-8000-000000000000');

-- MAAS commissions the nodes (events as maas sends them).
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_commissioned', 'machine', 'abc123',
    '{"system_id": "abc123", "status_name": "Ready"}', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_commissioned', 'machine', 'abc124',
    jsonb_build_object('system_id', 'abc124', 'node_id', id, 'status_name', 'Ready'), '{}')
  FROM inventory.nodes WHERE hostname = 'gpu-node-2';
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_status_changed', 'machine', 'abc200',
    '{"system_id": "abc200", "status_name": "Failed commissioning", "node_state": "failed", "status_message": "no disks"}', '{}');
SELECT hostname, state, state_reason, maas_status FROM inventory.nodes ORDER BY hostname;

-- Now maintenance works, both ways; asking twice changes nothing.
SELECT api.admin_set_node_maintenance(id, true) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-2';
SELECT api.admin_set_node_maintenance(id, true) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-2';
-- MAAS cannot take a node out of maintenance.
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_status_changed', 'machine', 'abc124',
    '{"system_id": "abc124", "status_name": "Broken", "node_state": "broken"}', '{}');
SELECT api.admin_set_node_maintenance(id, false) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-2';
SELECT api.admin_set_node_maintenance(id, false) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-2';

-- Marketplace: every SKU, free capacity from the slots of ready nodes.
SELECT sku, region, price_per_hour, currency, available, free_gpus, total_gpus, nodes FROM inventory.marketplace ORDER BY sku;
-- Three slots of gpu-node-1 taken by two allocations (provisioning's events).
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'a1000000-0000-4000-8000-000000000001',
    jsonb_build_object('allocation_id', 'a1000000-0000-4000-8000-000000000001', 'node_id', id, 'slots', '[0, 1]'::jsonb), '{}')
  FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'a1000000-0000-4000-8000-000000000002',
    jsonb_build_object('allocation_id', 'a1000000-0000-4000-8000-000000000002', 'node_id', id, 'slots', '[2]'::jsonb), '{}')
  FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
SELECT sku, available, free_gpus, total_gpus FROM inventory.marketplace ORDER BY sku;
-- A node holding allocations is not retired.
SELECT api.admin_retire_node(id) FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.released', 'allocation', 'a1000000-0000-4000-8000-000000000001',
    '{"allocation_id": "a1000000-0000-4000-8000-000000000001"}', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.failed', 'allocation', 'a1000000-0000-4000-8000-000000000002',
    '{"allocation_id": "a1000000-0000-4000-8000-000000000002"}', '{}');
SELECT api.admin_retire_node(id) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
SELECT api.admin_retire_node(id) - 'id' FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
SELECT api.admin_set_node_maintenance(id, true) FROM inventory.nodes WHERE hostname = 'gpu-node-1.example';
-- The machine may be registered again once retired.
SELECT api.admin_register_node('gpu-node-1.example', 'abc123', 'h100x8') - 'id' - 'registered_at';

-- Malformed events are refused (and so retried, then dead-lettered).
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'x', '[]', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'x', '{"allocation_id": "nope"}', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'a1000000-0000-4000-8000-000000000003',
    '{"node_id": "00000000-0000-4000-8000-000000000000", "slots": 3}', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_status_changed', 'machine', 'x', '{"system_id": 7}', '{}');
-- Unknown machines and event types are ignored.
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'maas.machine_status_changed', 'machine', 'zzz', '{"system_id": "zzz", "node_state": "broken"}', '{}');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'payment.succeeded', 'payment', 'x', '{}', '{}');

-- The public catalogue (anyone).
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT jsonb_array_elements(api.list_skus()) - 'updated_at' AS sku;
SELECT jsonb_array_elements(api.list_images()) - 'updated_at' AS image;
SELECT jsonb_array_elements(api.marketplace()) AS offer;
SELECT api.admin_upsert_image('x', 'jammy');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "ad000000-0000-4000-8000-000000000002"}';
SELECT api.admin_register_node('gpu-node-7', 'abc777', 'h100x8');

-- Audit trail of the operator's changes.
SELECT action, target_type, result, details ->> 'hostname' AS hostname
  FROM pgcloud.audit_logs WHERE action LIKE 'sku.%' OR action LIKE 'image.%' OR action LIKE 'node.%' ORDER BY id;
-- Events published.
SELECT event_type, count(*) FROM pgcloud.outbox
 WHERE event_type IN ('sku.upserted', 'image.upserted', 'node.registered', 'node.state_changed')
 GROUP BY 1 ORDER BY 1;
RESET request.jwt.claims;
