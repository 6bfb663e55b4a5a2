-- inventory: grants, node lifecycle (illegal transitions refused), MAAS
-- statuses onto node states, slots and marketplace, events carrying the
-- whole node, audit, idempotency.
BEGIN;
SELECT * FROM no_plan();

CREATE FUNCTION pg_temp.maas(t text, p jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM pg_temp.handle('inventory', t, p ->> 'system_id', p, aggregate_type => 'machine')
$$;
CREATE FUNCTION pg_temp.state(host text) RETURNS text LANGUAGE sql AS $$
    SELECT state FROM inventory.nodes WHERE hostname = host AND state <> 'retired'
$$;

-- ---- grants ------------------------------------------------------------
SELECT ok(has_function_privilege('pgcloud_anon', 'api.marketplace()', 'EXECUTE')
      AND has_function_privilege('pgcloud_anon', 'api.list_skus()', 'EXECUTE')
      AND has_function_privilege('pgcloud_anon', 'api.list_images()', 'EXECUTE'), 'anyone reads the catalogue and the marketplace');
SELECT ok(NOT has_function_privilege('pgcloud_user', 'api.admin_register_node(text, text, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'api.admin_retire_node(uuid)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_service', 'api.admin_set_node_maintenance(uuid, boolean)', 'EXECUTE'),
    'only admins may call the admin functions');
SELECT ok(has_function_privilege('pgcloud_admin', 'api.admin_upsert_image(text, text)', 'EXECUTE')
      AND has_function_privilege('pgcloud_admin', 'api.admin_list_nodes()', 'EXECUTE'), 'admins may');
SELECT is_empty($$ SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'inventory' AND has_function_privilege('pgcloud_user', p.oid, 'EXECUTE') $$,
    'users cannot call inventory''s internal functions');

-- ---- catalogue ---------------------------------------------------------
SELECT pg_temp.as_admin();
SELECT api.admin_upsert_sku('t-h100x8', 'H100-SXM', 8, 128, 1024, 8000, 'tap-1', 2400);
SELECT api.admin_upsert_sku('t-h100x1', 'H100-SXM', 1, 16, 128, 1000, 'tap-1', 300);
SELECT api.admin_upsert_sku('t-h100x4', 'H100-SXM', 4, 64, 512, 4000, 'tap-1', 1200);
SELECT api.admin_upsert_sku('t-a10x2', 'A10', 2, 16, 128, 1000, 'tap-2', 120);
SELECT api.admin_upsert_image('t-jammy', 'jammy');
SELECT is((SELECT payload FROM pgcloud.outbox WHERE event_type = 'sku.upserted' AND aggregate_id = 't-h100x1' ORDER BY id DESC LIMIT 1) - 'updated_at',
    '{"code": "t-h100x1", "vcpus": 16, "region": "tap-1", "disk_gb": 1000, "currency": "usd", "gpu_count": 1, "gpu_model": "H100-SXM", "memory_gb": 128, "price_per_hour": 300}'::jsonb,
    'sku.upserted carries the whole SKU');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'sku.upserted' AND target_id LIKE 't-%'), 4, 'SKU changes are audited');

-- ---- registration, idempotent ------------------------------------------
SELECT set_config('request.headers', '{"x-idempotency-key": "tap-register-1"}', true);
SELECT api.admin_register_node('t-node-1', 'tap001', 't-h100x8') ->> 'id' AS n1 \gset
SELECT is(api.admin_register_node('t-node-1', 'tap001', 't-h100x8') ->> 'id', :'n1', 'the same idempotency key returns the same node');
SELECT is(pg_temp.error_of($$ SELECT api.admin_register_node('t-node-x', 'tap001', 't-h100x8') $$),
    '{"code": "idempotency_key_reused", "status": 422}', 'the key with other arguments: 422');
SELECT set_config('request.headers', '{}', true);
SELECT is((SELECT count(*)::int FROM inventory.nodes WHERE maas_system_id = 'tap001'), 1, 'one node registered');
SELECT is((SELECT array_agg(slot_index ORDER BY slot_index) FROM inventory.slots WHERE node_id = :'n1'),
    ARRAY[0, 1, 2, 3, 4, 5, 6, 7], 'one slot per GPU of the node''s SKU');
SELECT is(pg_temp.state('t-node-1'), 'commissioning', 'a registered node is commissioning');
SELECT is((SELECT payload - 'registered_at' - 'updated_at' - 'changed_at' FROM pgcloud.outbox WHERE event_type = 'node.registered' AND aggregate_id = :'n1'),
    jsonb_build_object('node_id', :'n1', 'hostname', 't-node-1', 'maas_system_id', 'tap001', 'sku', 't-h100x8', 'region', 'tap-1',
                       'gpu_model', 'H100-SXM', 'slot_count', 8, 'state', 'commissioning', 'previous_state', NULL,
                       'reason', 'registered; commissioning through MAAS', 'maas_status', NULL, 'cached_images', '[]'::jsonb),
    'node.registered carries the whole node');
SELECT is(pg_temp.error_of($$ SELECT api.admin_register_node('t-node-2', 'tap001', 't-h100x8') $$),
    '{"code": "node_already_registered", "status": 409}', 'a system id in use is refused');
SELECT api.admin_register_node('t-node-2', 'tap002', 't-h100x8') ->> 'id' AS n2 \gset
SELECT api.admin_register_node('t-node-3', 'tap003', 't-h100x4') ->> 'id' AS n3 \gset
SELECT api.admin_register_node('t-node-4', 'tap004', 't-a10x2') ->> 'id' AS n4 \gset

-- ---- node state machine ------------------------------------------------
SELECT is(pg_temp.error_of(format($$ UPDATE inventory.nodes SET state = 'maintenance' WHERE id = %L $$, :'n1')),
    '{"code": "invalid_state_transition", "status": 409}', 'commissioning -> maintenance is refused');
SELECT is(pg_temp.error_of(format($$ UPDATE inventory.nodes SET state = 'bogus' WHERE id = %L $$, :'n1')),
    '{"code": "invalid_state_transition", "status": 409}', 'an unknown state is refused');
SELECT is(pg_temp.error_of($$ INSERT INTO inventory.nodes (hostname, maas_system_id, sku, region, gpu_model, slot_count, state)
                               VALUES ('t-node-9', 'tap009', 't-h100x8', 'tap-1', 'H100-SXM', 8, 'ready') $$),
    '{"code": "invalid_state_transition", "status": 409}', 'a node cannot start ready');

-- ---- MAAS statuses onto node states -------------------------------------
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap001", "status_name": "Commissioning", "node_state": "commissioning"}');
SELECT is(pg_temp.state('t-node-1'), 'commissioning', 'Commissioning keeps it commissioning');
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap001", "status_name": "Ready", "node_state": "ready"}');
SELECT is(pg_temp.state('t-node-1'), 'commissioning', 'a Ready status alone does not end commissioning (it may predate it)');
SELECT pg_temp.maas('maas.machine_commissioned', '{"system_id": "tap001", "status_name": "Ready"}');
SELECT is(pg_temp.state('t-node-1'), 'ready', 'maas.machine_commissioned makes it ready');
SELECT pg_temp.maas('maas.machine_commissioned', jsonb_build_object('system_id', 'tap002', 'node_id', :'n2'));
SELECT pg_temp.maas('maas.machine_commissioned', jsonb_build_object('system_id', 'tap003', 'node_id', :'n3'));
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap004", "status_name": "Failed commissioning", "node_state": "failed"}');
SELECT is(pg_temp.state('t-node-4'), 'failed', 'Failed commissioning fails the node');
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap002", "status_name": "Broken", "node_state": "broken", "status_message": "PSU"}');
SELECT is((SELECT state || ': ' || state_reason FROM inventory.nodes WHERE id = :'n2'), 'broken: MAAS status Broken: PSU', 'Broken breaks a ready node, with the reason');
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap002", "status_name": "Ready", "node_state": "ready"}');
SELECT is(pg_temp.state('t-node-2'), 'ready', 'Ready again repairs it');
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap002", "status_name": "Releasing", "stuck": true, "node_state": "broken", "reason": "the release did not finish within 1800 s"}');
SELECT is((SELECT state || ': ' || state_reason FROM inventory.nodes WHERE id = :'n2'), 'broken: the release did not finish within 1800 s',
    'a stuck release breaks the node');
SELECT api.admin_set_node_maintenance(:'n2', true);
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap002", "status_name": "Ready", "node_state": "ready"}');
SELECT is(pg_temp.state('t-node-2'), 'maintenance', 'MAAS does not end maintenance');
SELECT api.admin_set_node_maintenance(:'n2', false);
SELECT is(pg_temp.state('t-node-2'), 'ready', 'the operator does');
SELECT is((SELECT array_agg(action ORDER BY id) FROM pgcloud.audit_logs WHERE target_id = :'n2'),
    ARRAY['node.registered', 'node.state_changed', 'node.state_changed', 'node.state_changed', 'node.state_changed',
          'node.maintenance_on', 'node.maintenance_off'], 'every change of the node is audited');
SELECT is((SELECT array_agg(payload ->> 'previous_state' || '->' || (payload ->> 'state') ORDER BY id) FROM pgcloud.outbox
            WHERE event_type = 'node.state_changed' AND aggregate_id = :'n2'),
    ARRAY['commissioning->ready', 'ready->broken', 'broken->ready', 'ready->broken', 'broken->maintenance', 'maintenance->ready'],
    'node.state_changed announces each change with the previous state');

-- ---- image cache ---------------------------------------------------------
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap003", "status_name": "Deployed", "image": "t-jammy"}');
SELECT is((SELECT array_agg(image) FROM inventory.node_image_cache WHERE node_id = :'n3'), ARRAY['t-jammy'], 'a deployment caches its image');
SELECT is((SELECT payload -> 'cached_images' FROM pgcloud.outbox WHERE event_type = 'node.state_changed' AND aggregate_id = :'n3' ORDER BY id DESC LIMIT 1),
    '["t-jammy"]'::jsonb, 'and the node is announced again with it');
SELECT pg_temp.maas('maas.machine_status_changed', '{"system_id": "tap003", "status_name": "Deployed", "image": "t-jammy"}');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'node.state_changed' AND aggregate_id = :'n3'), 2,
    'a second deployment of a cached image announces nothing');

-- ---- slots and the marketplace --------------------------------------------
SELECT is((SELECT available || '/' || free_gpus || '/' || total_gpus || '/' || nodes FROM inventory.marketplace WHERE sku = 't-h100x1'),
    '20/20/20/3', '1-GPU SKU: every free slot of the three ready H100 nodes');
SELECT is((SELECT available FROM inventory.marketplace WHERE sku = 't-h100x8'), 2::bigint, '8-GPU SKU: the two 8-slot nodes');
SELECT is((SELECT available || '/' || nodes FROM inventory.marketplace WHERE sku = 't-a10x2'), '0/0', 'a failed node offers nothing');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.requested', 'allocation', 'a0000000-0000-4000-8000-00000000000a',
    jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-00000000000a', 'node_id', :'n1', 'slots', '[0,1,2,3,4]'::jsonb), '{}');
SELECT is((SELECT available || '/' || free_gpus FROM inventory.marketplace WHERE sku = 't-h100x4'), '3/15',
    'claims count: node 1 takes no 4-GPU allocation any more, nodes 2 and 3 do');
SELECT is(pg_temp.error_of(format('SELECT api.admin_retire_node(%L)', :'n1')), '{"code": "node_in_use", "status": 409}',
    'a node with claimed slots is not retired');
SELECT pgcloud.deliver('inventory', gen_random_uuid(), 'allocation.released', 'allocation', 'a0000000-0000-4000-8000-00000000000a',
    '{"allocation_id": "a0000000-0000-4000-8000-00000000000a"}', '{}');
SELECT is((SELECT count(*)::int FROM inventory.slots WHERE node_id = :'n1' AND allocation_id IS NOT NULL), 0, 'allocation.released frees the slots');
SELECT is((api.admin_retire_node(:'n1')) ->> 'state', 'retired', 'then it is retired');
SELECT is(pg_temp.error_of(format($$ UPDATE inventory.nodes SET state = 'ready' WHERE id = %L $$, :'n1')),
    '{"code": "invalid_state_transition", "status": 409}', 'retired is terminal');

SELECT * FROM finish();
ROLLBACK;
