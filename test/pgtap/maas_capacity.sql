-- services: maas inventory provisioning
-- The capacity pipeline through the embedded relay (pgcloud.relay_once) with
-- MAAS's answers handed to maas.on_http_result() as the HTTP executor would:
-- register -> commissioned -> ready; allocate -> deploy -> active; a second
-- allocation joins the deployment; release -> Ready; a failed deployment and
-- a deploy timeout fail the allocation with the reason and free its slots;
-- nothing is billed for them. Also: the intents (no credentials, service
-- role, callback) and the poller's schedule.
BEGIN;
SELECT * FROM no_plan();

\set u1 '''51000000-0000-4000-8000-000000000001'''
\set key1 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn'

-- The whole test is one transaction, so now() stands still: each step
-- moves the machines' clocks back a second, as if time passed between the
-- relay's, the executor's and the poller's transactions.
CREATE FUNCTION pg_temp.tick() RETURNS void LANGUAGE sql AS $$
    UPDATE maas.machines SET observed_at = observed_at - interval '1 second', goal_since = goal_since - interval '1 second',
           last_action_at = last_action_at - interval '1 second', last_error_at = last_error_at - interval '1 second',
           op_sent_at = op_sent_at - interval '1 second';
$$;
-- The clocks move, then the relay delivers everything pending (1000 a round).
CREATE FUNCTION pg_temp.tick_relay() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.tick();
    RETURN pg_temp.relay(1000);
END $$;
-- MAAS answers the machine's request in flight with the machine in a status.
CREATE FUNCTION pg_temp.answer(sid text, status_name text, message text DEFAULT '') RETURNS text LANGUAGE plpgsql AS $$
DECLARE m maas.machines;
BEGIN
    PERFORM pg_temp.tick();
    SELECT * INTO m FROM maas.machines x WHERE x.system_id = sid;
    IF m.op_intent IS NULL THEN
        RETURN 'no request in flight';
    END IF;
    PERFORM maas.on_http_result(m.op_intent, 200, '{}'::jsonb,
        jsonb_build_object('system_id', sid, 'hostname', m.hostname, 'status_name', answer.status_name,
                           'status', (SELECT s.status_code FROM maas.statuses s WHERE s.status_name = answer.status_name),
                           'status_message', message, 'distro_series', 'jammy', 'power_state', 'on',
                           'ip_addresses', CASE WHEN answer.status_name = 'Deployed' THEN '["192.0.2.21"]'::jsonb ELSE '[]'::jsonb END)::text,
        jsonb_build_object('system_id', sid, 'op', m.op_kind), true);
    RETURN m.op_kind;
END $$;
-- The poller, as if maas.poll_interval_ms had passed.
CREATE FUNCTION pg_temp.poll(sid text) RETURNS integer LANGUAGE sql AS $$
    UPDATE maas.machines SET observed_at = observed_at - interval '1 hour' WHERE system_id = sid;
    SELECT maas.poll();
$$;
CREATE FUNCTION pg_temp.op(sid text) RETURNS text LANGUAGE sql AS $$
    SELECT op_kind FROM maas.machines WHERE system_id = sid
$$;
CREATE FUNCTION pg_temp.alloc_state(id text) RETURNS text LANGUAGE sql AS $$
    SELECT state || coalesce(': ' || reason, '') FROM provisioning.allocations WHERE allocations.id = alloc_state.id::uuid
$$;

-- ---- catalogue and a node, commissioned through MAAS ---------------------
SELECT pg_temp.as_admin('51000000-0000-4000-8000-0000000000ad');
SELECT api.admin_upsert_sku('mx-8', 'MX-GPU', 8, 64, 512, 4000, 'mx-r', 1600);
SELECT api.admin_upsert_sku('mx-1', 'MX-GPU', 1, 8, 64, 500, 'mx-r', 200);
SELECT api.admin_upsert_image('mx-jammy', 'jammy');
SELECT api.admin_register_node('mx-node-1', 'mx0001', 'mx-8') ->> 'id' AS node1 \gset
SELECT cmp_ok(pg_temp.tick_relay(), '>=', 4, 'the relay delivers the catalogue and the registration');
SELECT is((SELECT goal || '/' || op_kind FROM maas.machines WHERE system_id = 'mx0001'), 'commission/read',
    'node.registered: maas reads the machine to commission it');
SELECT is((SELECT i.method || ' ' || i.path FROM pgcloud.http_intents i JOIN maas.machines m ON m.op_intent = i.id WHERE m.system_id = 'mx0001'),
    'GET /api/2.0/machines/mx0001/', 'a GET of the machine');
SELECT is(pg_temp.answer('mx0001', 'Ready'), 'read', 'MAAS answers: Ready');
SELECT is(pg_temp.op('mx0001'), 'commission', 'then commission');
SELECT pg_temp.answer('mx0001', 'Commissioning');
SELECT is(pg_temp.op('mx0001'), NULL, 'nothing to send while it commissions');
SELECT is(pg_temp.poll('mx0001'), 1, 'the poller reads it again');
SELECT pg_temp.answer('mx0001', 'Ready');
SELECT cmp_ok(pg_temp.tick_relay(), '>=', 1, 'maas.machine_commissioned is delivered');
SELECT is((SELECT state FROM inventory.nodes WHERE id = :'node1'), 'ready', 'inventory: the node is ready');
SELECT cmp_ok(pg_temp.tick_relay(), '>=', 0, 'node.state_changed is delivered');
SELECT is((SELECT state || '/' || free_slots FROM provisioning.nodes WHERE node_id = :'node1'), 'ready/8', 'provisioning: ready with 8 free slots');

-- ---- allocate: deploy through MAAS -----------------------------------------
-- A top-up through billing, which reports the standing (account.standing_changed).
SELECT api.admin_adjust_balance(:u1, 100000, 'test top-up');
SELECT pgcloud.emit('ssh_key.added', 'ssh_key', '5e000000-0000-4000-8000-000000000001',
    jsonb_build_object('id', '5e000000-0000-4000-8000-000000000001', 'user_id', :u1, 'public_key', :'key1', 'fingerprint', 'SHA256:x'));
SELECT pg_temp.tick_relay();
SELECT pg_temp.as_user('51000000-0000-4000-8000-000000000001');
SELECT api.create_allocation('mx-1', 'mx-jammy', ARRAY['5e000000-0000-4000-8000-000000000001']::uuid[]) ->> 'id' AS a1 \gset
SELECT pg_temp.tick_relay();
SELECT is((SELECT state FROM maas.allocations WHERE allocation_id = :'a1'), 'deploying', 'maas: deploy.requested received');
SELECT is((SELECT array_agg(slot_index) FROM inventory.slots WHERE allocation_id = :'a1'), ARRAY[0], 'inventory: the slot is claimed');
SELECT is(pg_temp.answer('mx0001', 'Ready'), 'read', 'read: Ready');
SELECT is((SELECT i.path || ' ' || i.body FROM pgcloud.http_intents i JOIN maas.machines m ON m.op_intent = i.id WHERE m.system_id = 'mx0001'),
    '/api/2.0/machines/?op=allocate system_id=mx0001&agent_name=pgcloud', 'allocate by system id');
SELECT pg_temp.answer('mx0001', 'Allocated');
SELECT is((SELECT i.path || ' ' || split_part(i.body, '&user_data=', 1) FROM pgcloud.http_intents i JOIN maas.machines m ON m.op_intent = i.id
            WHERE m.system_id = 'mx0001'),
    '/api/2.0/machines/mx0001/?op=deploy distro_series=jammy&agent_name=pgcloud', 'deploy the image''s series');
SELECT ok((SELECT convert_from(decode(replace(replace(replace(split_part(i.body, '&user_data=', 2), '%2B', '+'), '%2F', '/'), '%3D', '='),
                                      'base64'), 'UTF8') LIKE E'#cloud-config\nssh_authorized_keys:\n  - "' || :'key1' || E'"\n'
             FROM pgcloud.http_intents i JOIN maas.machines m ON m.op_intent = i.id WHERE m.system_id = 'mx0001'),
    'with the allocation''s SSH key as cloud-init user data');
SELECT pg_temp.answer('mx0001', 'Deploying');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a1'), 'provisioning', 'deploying: still provisioning');
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.answer('mx0001', 'Deployed');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a1'), 'active', 'Deployed: active');
SELECT is((SELECT (payload ->> 'price_per_hour')::bigint FROM pgcloud.outbox WHERE aggregate_id = :'a1' AND event_type = 'allocation.activated'),
    200::bigint, 'allocation.activated with the price');
SELECT is((SELECT state FROM releases.allocations WHERE allocation_id = :'a1'), 'active', 'releases may now mint access for it');
SELECT pg_temp.tick_relay();
SELECT is((SELECT cached_images FROM provisioning.nodes WHERE node_id = :'node1'), ARRAY['mx-jammy'],
    'the image is in the node''s cache (inventory -> provisioning)');

-- ---- a second allocation joins the deployment ---------------------------------
SELECT api.create_allocation('mx-1', 'mx-jammy') ->> 'id' AS a2 \gset
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.op('mx0001'), NULL, 'no MAAS request: the machine is deployed with the series');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a2'), 'active', 'active at once');

-- ---- release -------------------------------------------------------------------
SELECT api.release_allocation(:'a1');
SELECT pg_temp.tick_relay();
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a1'), 'released: released by the user (the machine stays deployed for other allocations)',
    'the first released: its share is free, the machine stays deployed');
SELECT api.release_allocation(:'a2');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.answer('mx0001', 'Deployed'), 'read', 'the last one: read ...');
SELECT is(pg_temp.op('mx0001'), 'release', '... and release');
SELECT pg_temp.answer('mx0001', 'Releasing');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a2'), 'releasing: released by the user', 'releasing while MAAS releases');
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.answer('mx0001', 'Ready');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a2'), 'released: released by the user (the machine was released in MAAS)', 'Ready: released');
SELECT is((SELECT free_slots || '/' || live_allocations FROM provisioning.nodes WHERE node_id = :'node1'), '8/0', 'all slots free again');

-- ---- a failed deployment ------------------------------------------------------
SELECT api.create_allocation('mx-1', 'mx-jammy') ->> 'id' AS a3 \gset
SELECT pg_temp.tick_relay();
SELECT pg_temp.answer('mx0001', 'Ready');
SELECT pg_temp.answer('mx0001', 'Allocated');
SELECT pg_temp.answer('mx0001', 'Deploying');
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.answer('mx0001', 'Failed deployment', 'Installation failed (curtin)');
SELECT pg_temp.tick_relay();
SELECT is(pg_temp.alloc_state(:'a3'), 'failed: deployment failed (MAAS status: Failed deployment, Installation failed (curtin))',
    'the allocation failed with MAAS''s reason');
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE allocation_id = :'a3'), 0, 'its slot is freed');
SELECT is((SELECT count(*)::int FROM inventory.slots WHERE allocation_id = :'a3'), 0, 'in inventory''s view too');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE aggregate_id = :'a3' AND event_type = 'allocation.activated'), 0,
    'nothing billed');
SELECT is(pg_temp.op('mx0001'), 'release', 'the machine is given back to MAAS');
SELECT pg_temp.answer('mx0001', 'Releasing');
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.answer('mx0001', 'Ready');

-- ---- a deployment that stalls ----------------------------------------------------
SELECT api.create_allocation('mx-1', 'mx-jammy') ->> 'id' AS a4 \gset
SELECT pg_temp.tick_relay();
SELECT pg_temp.answer('mx0001', 'Ready');
SELECT pg_temp.answer('mx0001', 'Allocated');
SELECT pg_temp.answer('mx0001', 'Deploying');
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.answer('mx0001', 'Deploying');
SELECT is((SELECT goal FROM maas.machines WHERE system_id = 'mx0001'), 'deploy', 'still deploying');
UPDATE maas.machines SET goal_since = goal_since - make_interval(secs => pgcloud.policy('maas.deploy_timeout_seconds', NULL::int) + 1),
       last_error_at = last_error_at - make_interval(secs => pgcloud.policy('maas.deploy_timeout_seconds', NULL::int) + 1)
 WHERE system_id = 'mx0001';
SELECT pg_temp.poll('mx0001');
SELECT pg_temp.tick_relay();
SELECT matches(pg_temp.alloc_state(:'a4'), '^failed: the deployment did not finish within [0-9]+ s \(MAAS status: Deploying\)$',
    'the deploy timeout fails the allocation');
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE allocation_id = :'a4'), 0, 'and frees its slot');
SELECT is((SELECT free_slots || '/' || live_allocations || '/' || coalesce(current_image, '-') FROM provisioning.nodes WHERE node_id = :'node1'),
    '8/0/-', 'the node is free again');
SELECT is(pg_temp.op('mx0001'), 'read', 'the machine is read ...');
SELECT pg_temp.answer('mx0001', 'Deploying');
SELECT is(pg_temp.op('mx0001'), 'release', '... and released');

-- ---- intents -----------------------------------------------------------
SELECT is((SELECT count(*)::int FROM pgcloud.http_intents WHERE target = 'maas' AND requested_by <> 'pgcloud_svc_maas'), 0,
    'every MAAS request is written by the maas service role');
SELECT is((SELECT count(*)::int FROM pgcloud.http_intents WHERE target = 'maas'
             AND callback <> 'maas.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure), 0,
    'and answered to maas.on_http_result');
SELECT is((SELECT count(*)::int FROM pgcloud.http_intents WHERE target = 'maas'
             AND (headers::text ~* 'authorization|oauth' OR coalesce(body, '') ~* 'oauth|secret')), 0,
    'no credentials in any intent (the executor adds the OAuth header)');
SELECT is_empty('SELECT * FROM provisioning.capacity_problems', 'claims, counters and allocations agree');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox o WHERE o.event_type = 'allocation.activated'
             AND EXISTS (SELECT 1 FROM provisioning.allocations a WHERE a.id = o.aggregate_id::uuid AND a.state = 'failed')), 0,
    'no failed allocation was ever activated');

-- ---- the poller's schedule -----------------------------------------------
SELECT is((SELECT function FROM pgcloud.jobs WHERE job = 'maas.poll'), 'maas.poll()', 'the poller is a job installed with maas');
SELECT is((SELECT schedule FROM pgcloud.jobs WHERE job = 'maas.poll'),
    'every 250 ms (policy maas.poller_interval_ms), and when woken', 'every maas.poller_interval_ms, and at once when a goal is set');

SELECT * FROM finish();
ROLLBACK;
