-- provisioning: grants, the allocation state machine (illegal transitions
-- refused), the standing read model refusing allocation, placement policy,
-- the slot claims' unique key as the last line against double booking,
-- idempotent creation, releases and the force-release paths.
BEGIN;
SELECT * FROM no_plan();

\set u1 '''10000000-0000-4000-8000-000000000001'''
\set u2 '''20000000-0000-4000-8000-000000000002'''
\set u3 '''30000000-0000-4000-8000-000000000003'''
\set u4 '''40000000-0000-4000-8000-000000000004'''
\set na '''9a000000-0000-4000-8000-00000000000a'''
\set nb '''9b000000-0000-4000-8000-00000000000b'''
\set nc '''9c000000-0000-4000-8000-00000000000c'''

CREATE FUNCTION pg_temp.node(id text, host text, slots int, cached text[] DEFAULT '{}', state text DEFAULT 'ready')
RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.handle('provisioning', 'node.state_changed', NULL, jsonb_build_object('node_id', id, 'hostname', host, 'maas_system_id', 'm' || left(md5(host), 6),
        'region', 'tap-r', 'gpu_model', 'TAP-GPU', 'slot_count', slots, 'state', state, 'cached_images', to_jsonb(cached)))
$$;
CREATE FUNCTION pg_temp.alloc(sku text, image text DEFAULT 'tap-jammy') RETURNS jsonb LANGUAGE sql AS $$
    SELECT api.create_allocation(sku, image)
$$;
CREATE FUNCTION pg_temp.state(id text) RETURNS text LANGUAGE sql AS $$
    SELECT state FROM provisioning.allocations WHERE allocations.id = state.id::uuid
$$;

-- ---- grants ------------------------------------------------------------
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.create_allocation(text, text, uuid[])', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'api.list_allocations()', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_service', 'api.release_allocation(uuid)', 'EXECUTE'),
    'anonymous callers and services cannot allocate');
SELECT ok(has_function_privilege('pgcloud_user', 'api.create_allocation(text, text, uuid[])', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.get_allocation(uuid)', 'EXECUTE'), 'users can');
SELECT is_empty($$ SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'provisioning' AND has_table_privilege('pgcloud_user', c.oid, 'SELECT') $$,
    'users cannot read provisioning''s tables directly');
SELECT is((SELECT provolatile::text FROM pg_proc WHERE oid = 'provisioning.allocation_json(provisioning.allocations)'::regprocedure), 's',
    'the API form of an allocation is STABLE like the calls in its body, so the planner inlines it');

-- api.create_allocation is C: it authorizes with pgcloud.authorize('user')'s
-- answers (a user or an administrator passes; anyone else is refused by
-- pgcloud.authorize itself), before anything else.
SELECT pg_temp.as_role('pgcloud_anon');
SELECT is(pg_temp.error_of($$ SELECT api.create_allocation('tap-x1', 'tap-jammy') $$), '{"code": "unauthenticated", "status": 401}',
    'create_allocation: an anonymous request is refused (unauthenticated)');
SELECT pg_temp.as_role('pgcloud_service', '5e000000-0000-4000-8000-00000000005e');
SELECT is(pg_temp.error_of($$ SELECT api.create_allocation('tap-x1', 'tap-jammy') $$), '{"code": "forbidden", "status": 403}',
    'create_allocation: a service account is refused (forbidden)');
SELECT pg_temp.as_role('pgcloud_user');
SELECT is(pg_temp.error_of($$ SELECT api.create_allocation('tap-x1', 'tap-jammy') $$), '{"code": "unauthenticated", "status": 401}',
    'create_allocation: a user role without a subject is refused (unauthenticated)');
SELECT pg_temp.as_operator();

-- ---- read models ---------------------------------------------------------
SELECT pg_temp.handle('provisioning', 'sku.upserted', NULL, '{"code": "tap-x1", "gpu_model": "TAP-GPU", "gpu_count": 1, "region": "tap-r", "price_per_hour": 250, "currency": "usd"}');
SELECT pg_temp.handle('provisioning', 'sku.upserted', NULL, '{"code": "tap-x2", "gpu_model": "TAP-GPU", "gpu_count": 2, "region": "tap-r", "price_per_hour": 500, "currency": "usd"}');
SELECT pg_temp.handle('provisioning', 'sku.upserted', NULL, '{"code": "tap-x8", "gpu_model": "TAP-GPU", "gpu_count": 8, "region": "tap-r", "price_per_hour": 2000, "currency": "usd"}');
SELECT pg_temp.handle('provisioning', 'image.upserted', NULL, '{"code": "tap-jammy", "distro_series": "jammy"}');
SELECT pg_temp.handle('provisioning', 'image.upserted', NULL, '{"code": "tap-noble", "distro_series": "noble"}');
SELECT pg_temp.node(:na, 'tap-a', 8);
SELECT pg_temp.node(:nb, 'tap-b', 8, ARRAY['tap-jammy']);
SELECT pg_temp.node(:nc, 'tap-c', 4);
SELECT is((SELECT free_slots FROM provisioning.nodes WHERE node_id = :nb), 8, 'a new node''s slots are free');
SELECT is((SELECT array_agg(node_id::text || ' ' || image || ' ' || free_slots) FROM provisioning.idle_node_images
            WHERE node_id IN (:na, :nb, :nc)), ARRAY[:nb || ' tap-jammy 8'],
    'placement''s index of idle nodes by cached image lists the idle node with a cache');

-- ---- standing ----------------------------------------------------------
SELECT pg_temp.as_user(:u1);
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x1') $$), '{"code": "insufficient_balance", "status": 402}',
    'no report from billing yet: refused (a new account has 0)');
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u1, 'standing', 'exhausted', 'balance', -20, 'currency', 'usd'));
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x1') $$), '{"code": "insufficient_balance", "status": 402}', 'exhausted: refused');
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u1, 'standing', 'blocked', 'balance', 9000, 'currency', 'usd'));
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x1') $$), '{"code": "account_not_in_good_standing", "status": 403}', 'blocked: refused');
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u1, 'standing', 'good', 'balance', 500, 'currency', 'usd',
                                                                  'min_balance_to_allocate', 1000));
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x1') $$), '{"code": "insufficient_balance", "status": 402}',
    'good but under the minimum billing reported: refused');
SELECT is((SELECT count(*)::int FROM provisioning.allocations WHERE user_id = :u1), 0, 'refusals write nothing');
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u1, 'standing', 'good', 'balance', 5000, 'currency', 'usd',
                                                                  'min_balance_to_allocate', 1000));
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u2, 'standing', 'low', 'balance', 150, 'currency', 'usd'));
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u3, 'standing', 'good', 'balance', 99999, 'currency', 'usd'));
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u4, 'standing', 'good', 'balance', 99999, 'currency', 'usd'));

-- ---- placement policy ------------------------------------------------------
SELECT n_tup_upd AS alloc_updates FROM pg_stat_xact_user_tables WHERE schemaname = 'provisioning' AND relname = 'allocations' \gset
SELECT pg_temp.alloc('tap-x1') AS a1 \gset
SELECT is(:'a1'::jsonb ->> 'node_hostname', 'tap-b', 'a node with the image cached comes before a fuller one');
SELECT is(:'a1'::jsonb ->> 'state', 'provisioning', 'placed and deploying: provisioning');
SELECT is((SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE schemaname = 'provisioning' AND relname = 'allocations'),
    :alloc_updates::bigint, 'the allocation is written once, as it leaves the transaction (inserted, never updated)');
SELECT is((SELECT state || ' ' || (provisioning_at = requested_at) || ' ' || (updated_at = requested_at)
             FROM provisioning.allocations WHERE id = (:'a1'::jsonb ->> 'id')::uuid),
    'provisioning true true', 'in provisioning since its request (the same transaction)');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE aggregate_id = :'a1'::jsonb ->> 'id'
            AND event_type IN ('allocation.requested', 'deploy.requested', 'allocation.provisioning')), 3,
    'with its three events: allocation.requested, deploy.requested, allocation.provisioning');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'allocation.created' AND target_id = :'a1'::jsonb ->> 'id'), 1,
    'and its audit entry');
SELECT is((SELECT count(*)::int FROM provisioning.idle_node_images WHERE node_id = :nb), 0,
    'a node placed onto leaves the index of idle nodes');
SELECT is(pg_temp.alloc('tap-x2') ->> 'node_hostname', 'tap-b', 'then the node already running the image');
SELECT is(pg_temp.alloc('tap-x1', 'tap-noble') ->> 'node_hostname', 'tap-c', 'another image: the fullest node that fits (4 slots)');
SELECT is(pg_temp.alloc('tap-x8', 'tap-noble') ->> 'node_hostname', 'tap-a', 'a whole node: the only one free');
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x8') $$), '{"code": "capacity_unavailable", "status": 409}',
    'no node has 8 free slots any more');
SELECT pg_temp.as_user(:u2);
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x1') $$), '{"code": "capacity_unavailable", "status": 409}',
    'single tenancy: another user gets no slot on u1''s nodes');
SELECT is((SELECT array_agg(n.hostname || ':' || n.free_slots || ':' || n.live_allocations || ':' || coalesce(n.current_image, '-') ORDER BY n.hostname)
             FROM provisioning.nodes n WHERE n.region = 'tap-r'),
    ARRAY['tap-a:0:1:tap-noble', 'tap-b:5:2:tap-jammy', 'tap-c:3:1:tap-noble'], 'counters follow the claims');
SELECT is_empty('SELECT * FROM provisioning.capacity_problems', 'claims, counters and allocations agree');

-- ---- the unique key is the last line -----------------------------------
SELECT throws_ok(format($$ INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id) VALUES (%L, 0, %L) $$,
                        :nb, :'a1'::jsonb ->> 'id'),
    '23505', NULL, 'a slot already claimed cannot be claimed again');
-- A lost update of the counter (as if a lock had been missed): the node
-- counts 4 free slots, only 3 of them are not claimed.
UPDATE provisioning.nodes SET free_slots = 4 WHERE node_id = :nc;
SELECT pg_temp.as_user(:u1);
SELECT is(pg_temp.error_of($$ SELECT pg_temp.alloc('tap-x8', 'tap-noble') $$), '{"code": "capacity_unavailable", "status": 409}',
    'no node fits an 8-slot allocation even by the counters');
SELECT is(pg_temp.error_of($$ SELECT api.create_allocation('tap-x2', 'tap-noble') FROM generate_series(1, 2) $$),
    '{"code": "capacity_conflict", "status": 409}', 'claims short of the counter: refused, never double booked');
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE node_id = :nc), 1, 'the refused placements claimed nothing');
UPDATE provisioning.nodes SET free_slots = 3 WHERE node_id = :nc;

-- ---- idempotent creation ---------------------------------------------------
SELECT set_config('request.headers', '{"x-idempotency-key": "tap-alloc-1"}', true);
SELECT pg_temp.alloc('tap-x1') ->> 'id' AS a5 \gset
SELECT is(pg_temp.alloc('tap-x1') ->> 'id', :'a5', 'the same key returns the same allocation');
SELECT set_config('request.headers', '{}', true);
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE allocation_id = :'a5'), 1, 'and claims once');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE aggregate_id = :'a5' AND event_type = 'deploy.requested'), 1,
    'and writes one deploy intent');

-- ---- state machine ------------------------------------------------------
SELECT :'a1'::jsonb ->> 'id' AS a1id \gset
SELECT is(pg_temp.error_of(format($$ UPDATE provisioning.allocations SET state = 'released' WHERE id = %L $$, :'a1id')),
    '{"code": "invalid_state_transition", "status": 409}', 'provisioning -> released is refused (no release without releasing)');
SELECT is(pg_temp.error_of(format($$ UPDATE provisioning.allocations SET state = 'requested' WHERE id = %L $$, :'a1id')),
    '{"code": "invalid_state_transition", "status": 409}', 'provisioning -> requested is refused');
SELECT is(pg_temp.error_of($$ INSERT INTO provisioning.allocations (id, user_id, sku, image, distro_series, gpu_count, region,
        price_per_hour, currency, node_id, node_hostname, maas_system_id, state)
    SELECT gen_random_uuid(), user_id, sku, image, distro_series, gpu_count, region, price_per_hour, currency, node_id,
           node_hostname, maas_system_id, 'active' FROM provisioning.allocations LIMIT 1 $$),
    '{"code": "invalid_state_transition", "status": 409}', 'an allocation cannot start active');
SELECT pg_temp.handle('provisioning', 'maas.machine_deployed', NULL, jsonb_build_object('allocation_id', :'a1id', 'system_id', 'x', 'ip_addresses', '["192.0.2.7"]'::jsonb));
SELECT is(pg_temp.state(:'a1id'), 'active', 'maas.machine_deployed: active');
SELECT is((SELECT payload - 'started_at' - 'allocation_id' - 'node_id' - 'slots' - 'requested_at'
             FROM pgcloud.outbox WHERE aggregate_id = :'a1id' AND event_type = 'allocation.activated'),
    jsonb_build_object('user_id', :u1, 'sku', 'tap-x1', 'price_per_hour', 250, 'currency', 'usd', 'node_hostname', 'tap-b',
                       'region', 'tap-r', 'gpu_count', 1, 'image', 'tap-jammy', 'ip_addresses', '["192.0.2.7"]'::jsonb),
    'allocation.activated carries what billing needs (price, currency, started_at, node)');
SELECT is(pg_temp.error_of(format($$ UPDATE provisioning.allocations SET state = 'provisioning' WHERE id = %L $$, :'a1id')),
    '{"code": "invalid_state_transition", "status": 409}', 'active -> provisioning is refused');
SELECT is(pg_temp.error_of(format($$ UPDATE provisioning.allocations SET state = 'failed' WHERE id = %L $$, :'a1id')),
    '{"code": "invalid_state_transition", "status": 409}', 'active -> failed is refused');
SELECT pg_temp.handle('provisioning', 'maas.deploy_failed', NULL, jsonb_build_object('allocation_id', :'a1id', 'reason', 'late'));
SELECT is(pg_temp.state(:'a1id'), 'active', 'a late failure does not touch an active allocation');

-- ---- release by the user ---------------------------------------------------
SELECT pg_temp.as_user(:u2);
SELECT is(pg_temp.error_of(format('SELECT api.release_allocation(%L)', :'a1id')), '{"code": "allocation_not_found", "status": 404}',
    'another user''s allocation is not found');
SELECT pg_temp.as_user(:u1);
SELECT is(api.release_allocation(:'a1id') ->> 'state', 'releasing', 'the owner releases it: releasing');
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE allocation_id = :'a1id'), 1, 'slots stay held while MAAS releases');
SELECT is((SELECT payload ->> 'maas_system_id' FROM pgcloud.outbox WHERE aggregate_id = :'a1id' AND event_type = 'release.requested'),
    (SELECT maas_system_id FROM provisioning.nodes WHERE node_id = :nb), 'release.requested names the machine');
SELECT pg_temp.handle('provisioning', 'maas.machine_released', NULL, jsonb_build_object('allocation_id', :'a1id', 'system_id', 'x'));
SELECT is(pg_temp.state(:'a1id'), 'released', 'maas.machine_released: released');
SELECT is((SELECT count(*)::int FROM provisioning.slot_claims WHERE allocation_id = :'a1id'), 0, 'its slot is free');
SELECT is((SELECT (payload ->> 'ended_at')::timestamptz = now() FROM pgcloud.outbox o
            WHERE o.aggregate_id = :'a1id' AND o.event_type = 'allocation.released'), true,
    'allocation.released ends billing when MAAS confirms the release');

-- ---- force release: billing and admin ---------------------------------------
SELECT pg_temp.as_user(:u3);
SELECT pg_temp.node('9d000000-0000-4000-8000-00000000000d', 'tap-d', 8);
SELECT pg_temp.alloc('tap-x1') ->> 'id' AS b1 \gset
SELECT pg_temp.alloc('tap-x1') ->> 'id' AS b2 \gset
SELECT pg_temp.handle('provisioning', 'maas.machine_deployed', NULL, jsonb_build_object('allocation_id', :'b1'));
SELECT pg_temp.handle('provisioning', 'billing.force_release_requested', NULL, jsonb_build_object('user_id', :u3, 'allocation_ids', jsonb_build_array(:'b1'),
                                                                         'reason', 'balance exhausted'));
SELECT is(ARRAY[pg_temp.state(:'b1'), pg_temp.state(:'b2')], ARRAY['releasing', 'provisioning'],
    'billing force-releases the allocations it names');
SELECT is((SELECT reason || ' / ' || released_by FROM provisioning.allocations WHERE id = :'b1'::uuid), 'billing: balance exhausted / billing',
    'with its reason');
SELECT pg_temp.handle('provisioning', 'billing.force_release_requested', NULL, jsonb_build_object('user_id', :u3, 'reason', 'account closed'));
SELECT is(pg_temp.state(:'b2'), 'releasing', 'without ids: every live allocation of the user');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE aggregate_id IN (:'b1', :'b2') AND event_type = 'release.requested'), 2,
    'one release intent each (an allocation already releasing is not released twice)');
SELECT pg_temp.as_user(:u4);
SELECT pg_temp.node('9e000000-0000-4000-8000-00000000000e', 'tap-e', 8);
SELECT pg_temp.alloc('tap-x2') ->> 'id' AS c1 \gset
SELECT pg_temp.handle('provisioning', 'admin.force_release_requested', NULL, jsonb_build_object('allocation_id', :'c1', 'reason', 'hardware recall'));
SELECT is((SELECT state || ' / ' || reason || ' / ' || released_by FROM provisioning.allocations WHERE id = :'c1'::uuid),
    'releasing / admin: hardware recall / admin', 'admin force-release');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'allocation.force_released' AND target_id IN (:'b1', :'b2', :'c1')), 3,
    'force releases are audited');
-- The deployment of c1 fails while it is releasing: nothing to release, released.
SELECT pg_temp.handle('provisioning', 'maas.deploy_failed', NULL, jsonb_build_object('allocation_id', :'c1', 'reason', 'Failed deployment'));
SELECT is(pg_temp.state(:'c1'), 'released', 'a release racing a failed deployment ends released');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE aggregate_id = :'c1' AND event_type = 'allocation.activated'), 0,
    'nothing billed for it');
SELECT is_empty('SELECT * FROM provisioning.capacity_problems', 'claims, counters and allocations still agree');
-- The index of idle nodes by cached image follows the nodes: a cache
-- reported for an idle node, a node leaving ready, the index out of step.
SELECT pg_temp.as_operator();
SELECT pg_temp.node('9f000000-0000-4000-8000-00000000000f', 'tap-f', 8, ARRAY['tap-noble', 'tap-jammy', 'tap-noble']);
SELECT is((SELECT array_agg(image ORDER BY image) FROM provisioning.idle_node_images WHERE node_id = '9f000000-0000-4000-8000-00000000000f'),
    ARRAY['tap-jammy', 'tap-noble'], 'an idle node''s cache is indexed once per image');
SELECT is((SELECT count(*)::int FROM provisioning.idle_node_images WHERE node_id = :na), 0, 'a busy node''s cache is not');
SELECT pg_temp.node('9f000000-0000-4000-8000-00000000000f', 'tap-f', 8, ARRAY['tap-noble'], 'broken');
SELECT is((SELECT count(*)::int FROM provisioning.idle_node_images WHERE node_id = '9f000000-0000-4000-8000-00000000000f'), 0,
    'a node that is not ready leaves the index');
SELECT is_empty('SELECT * FROM provisioning.capacity_problems', 'the index agrees with the nodes');
SET LOCAL session_replication_role = replica;
INSERT INTO provisioning.idle_node_images VALUES ('9f000000-0000-4000-8000-00000000000f', 'tap-jammy', 'TAP-GPU', 'tap-r', 8);
RESET session_replication_role;
SELECT is((SELECT count(*)::int FROM provisioning.capacity_problems WHERE problem LIKE '%index of idle nodes%'), 1,
    'capacity_problems reports an index out of step with the nodes');
DELETE FROM provisioning.idle_node_images WHERE node_id = '9f000000-0000-4000-8000-00000000000f';

-- ---- the live limit and the reservation of first intervals -------------------
-- tap-x1 costs 250 an hour: its first interval (billing.accrual_interval_seconds,
-- 60) reserves ceil(250 * 60 / 3600) = 5 of the balance while it is live.
\set u5 '''50000000-0000-4000-8000-000000000005'''
CREATE FUNCTION pg_temp.refusal_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT;
    RETURN (m::jsonb ->> 'code') || ': ' || (m::jsonb ->> 'details');
END $$;
SELECT pg_temp.node('9a100000-0000-4000-8000-00000000001a', 'tap-g', 8);
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u5, 'standing', 'good', 'balance', 1009,
                                                                  'currency', 'usd', 'min_balance_to_allocate', 1000));
SELECT pg_temp.as_user(:u5);
SELECT is(pg_temp.alloc('tap-x1') ->> 'node_hostname', 'tap-g', 'the minimum and the first interval (1000 + 5) fit a balance of 1009');
SELECT is(pg_temp.refusal_of($$ SELECT pg_temp.alloc('tap-x1') $$),
    'insufficient_balance: the balance is 1009 usd; with the first interval of your 1 live allocation(s) reserved (5), another needs at least 1010',
    'a second one: the live allocation''s first interval is held against the balance too');
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :u5, 'standing', 'low', 'balance', 1010,
                                                                  'currency', 'usd', 'min_balance_to_allocate', 1000));
SELECT is(pg_temp.alloc('tap-x1') ->> 'node_hostname', 'tap-g', 'billing''s new report is read under the user''s lock: 1010 fits');
SELECT pg_temp.as_operator();
SELECT pgcloud.set_policy('provisioning.reserve_first_interval', 'false');
SELECT pg_temp.as_user(:u5);
SELECT is(pg_temp.alloc('tap-x1') ->> 'node_hostname', 'tap-g', 'without the reservation policy: the minimum alone');
SELECT pg_temp.as_operator();
SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '3');
SELECT pg_temp.as_user(:u5);
SELECT is(pg_temp.refusal_of($$ SELECT pg_temp.alloc('tap-x1') $$), 'allocation_limit_reached: at most 3 live allocations per user',
    'the live limit counts the user''s live allocations');
SELECT is((SELECT count(*)::int FROM provisioning.allocations WHERE user_id = :u5), 3, 'the refusals wrote nothing');
SELECT is_empty('SELECT * FROM provisioning.capacity_problems', 'claims, counters and allocations agree at the end');

SELECT * FROM finish();
ROLLBACK;
