-- provisioning: every refusal of api.create_allocation() and the other
-- calls, then placement and the lifecycle driven by events, as a user sees
-- them. The read models are fed by calling pgcloud.deliver('provisioning', ) as the
-- relay would.
\set VERBOSITY default
\set SHOW_CONTEXT never
\set alice '''a11ce000-0000-4000-8000-000000000001'''
\set bob '''b0b00000-0000-4000-8000-000000000002'''
\set carol '''ca401000-0000-4000-8000-000000000003'''
\set key_a '''ae000000-0000-4000-8000-00000000000a'''
\set key_b '''be000000-0000-4000-8000-00000000000b'''
\set n1 '''90000000-0000-4000-8000-000000000001'''
\set n2 '''90000000-0000-4000-8000-000000000002'''
\set n3 '''90000000-0000-4000-8000-000000000003'''
CREATE FUNCTION pg_temp.ev(t text, p jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT pgcloud.deliver('provisioning', gen_random_uuid(), t, split_part(t, '.', 1), coalesce(p ->> 'allocation_id', p ->> 'node_id', 'x'), p, '{}')
$$;
CREATE FUNCTION pg_temp.as_user(sub text) RETURNS void LANGUAGE sql AS $$
    SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_user', 'sub', sub)::text, false)
$$;
CREATE FUNCTION pg_temp.node(id text, host text, sid text, slots int, state text DEFAULT 'ready', cached text[] DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.ev('node.state_changed', jsonb_build_object('node_id', id, 'hostname', host, 'maas_system_id', sid,
        'sku', 'h100x8', 'region', 'eu-west', 'gpu_model', 'H100-SXM', 'slot_count', slots, 'state', state,
        'cached_images', to_jsonb(cached)))
$$;
-- The error's code and HTTP status only (for calls whose details hold random ids).
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text; r text;
BEGIN
    EXECUTE q INTO r;
    RETURN r;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
    RETURN format('HTTP %s %s', d::jsonb ->> 'status', m::jsonb ->> 'code');
END $$;
CREATE FUNCTION pg_temp.nodes() RETURNS TABLE (hostname text, state text, free_slots int, live int, image text, claims text)
LANGUAGE sql AS $$
    SELECT n.hostname, n.state, n.free_slots, n.live_allocations, n.current_image,
           (SELECT string_agg(c.slot_index::text, ',' ORDER BY c.slot_index) FROM provisioning.slot_claims c WHERE c.node_id = n.node_id)
      FROM provisioning.nodes n ORDER BY n.hostname
$$;
-- The catalogue as inventory announces it.
SELECT pg_temp.ev('sku.upserted', '{"code": "h100x1", "gpu_model": "H100-SXM", "gpu_count": 1, "vcpus": 16, "memory_gb": 128, "disk_gb": 1000, "region": "eu-west", "price_per_hour": 300, "currency": "usd"}');
SELECT pg_temp.ev('sku.upserted', '{"code": "h100x2", "gpu_model": "H100-SXM", "gpu_count": 2, "region": "eu-west", "price_per_hour": 600, "currency": "usd"}');
SELECT pg_temp.ev('sku.upserted', '{"code": "h100x8", "gpu_model": "H100-SXM", "gpu_count": 8, "region": "eu-west", "price_per_hour": 2400, "currency": "usd"}');
SELECT pg_temp.ev('sku.upserted', '{"code": "a10x1", "gpu_model": "A10", "gpu_count": 1, "region": "us-east", "price_per_hour": 90, "currency": "usd"}');
SELECT pg_temp.ev('image.upserted', '{"code": "ubuntu-22.04", "distro_series": "jammy"}');
SELECT pg_temp.ev('image.upserted', '{"code": "ubuntu-24.04", "distro_series": "noble"}');
SELECT pg_temp.ev('ssh_key.added', jsonb_build_object('id', :key_a, 'user_id', :alice, 'fingerprint', 'SHA256:a',
    'public_key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn'));
SELECT pg_temp.ev('ssh_key.added', jsonb_build_object('key_id', :key_b, 'user_id', :bob,
    'public_key', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGH0adccsKaI+zwzZ0Oc3/JiKzJtNi+7cBLNC/z21t0I'));

-- Who may call.
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "5e000000-0000-4000-8000-000000000005"}';
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SET request.jwt.claims = '{"role": "pgcloud_user"}';
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT api.list_allocations();

-- Arguments.
SELECT pg_temp.as_user(:alice);
SELECT api.create_allocation(NULL, 'ubuntu-22.04');
SELECT api.create_allocation('h100x1', NULL);
SELECT api.create_allocation('h999', 'ubuntu-22.04');
SELECT api.create_allocation('h100x1', 'windows');

-- Standing: billing never reported on alice yet (a new account has 0).
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'insufficient', 'balance', 0, 'currency', 'usd'));
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'suspended', 'balance', 5000, 'currency', 'usd'));
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'good', 'balance', 99, 'currency', 'usd', 'min_balance_to_allocate', 100));
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
-- without min_balance_to_allocate in the report: policy billing.min_balance_to_allocate (100)
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'low', 'balance', 50, 'currency', 'usd'));
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
-- an older report does not replace a newer one
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'good', 'balance', 90000, 'currency', 'usd', 'as_of', '2030-01-01T00:00:00Z'));
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'suspended', 'balance', 0, 'currency', 'usd', 'as_of', '2029-01-01T00:00:00Z'));
SELECT standing, balance FROM provisioning.account_standing WHERE user_id = :alice;
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :bob, 'standing', 'good', 'balance', 50000, 'currency', 'usd'));
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :carol, 'standing', 'good', 'balance', 50000, 'currency', 'usd'));

-- SSH keys: only the caller's own, at most provisioning.max_ssh_keys_per_allocation.
SELECT api.create_allocation('h100x1', 'ubuntu-22.04', ARRAY[:key_b]::uuid[]);
SELECT api.create_allocation('h100x1', 'ubuntu-22.04', ARRAY[:key_a, 'ffffffff-0000-4000-8000-000000000000']::uuid[]);
SELECT api.create_allocation('h100x1', 'ubuntu-22.04', ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 11)));

-- Capacity: no node yet.
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT pg_temp.node(:n1, 'gpu-1', 'abc001', 8);
SELECT pg_temp.node(:n2, 'gpu-2', 'abc002', 8, 'commissioning');
SELECT pg_temp.node(:n3, 'gpu-3', 'abc003', 4, 'ready', ARRAY['ubuntu-24.04']);
SELECT api.create_allocation('a10x1', 'ubuntu-22.04');
SELECT * FROM pg_temp.nodes();

-- Placement: the fullest node that fits (gpu-3, 4 slots) ...
SELECT api.create_allocation('h100x1', 'ubuntu-22.04', ARRAY[:key_a, :key_a]::uuid[]) - 'id' - 'requested_at' AS first;
SELECT id AS a1 FROM provisioning.allocations WHERE user_id = :alice ORDER BY requested_at LIMIT 1 \gset
-- ... then the node running the image (gpu-3 again), then a whole node elsewhere.
SELECT api.create_allocation('h100x2', 'ubuntu-22.04') ->> 'node_hostname' AS second;
SELECT api.create_allocation('h100x8', 'ubuntu-22.04') ->> 'node_hostname' AS third;
SELECT * FROM pg_temp.nodes();
-- Another image cannot join gpu-3 (one deployment per node); bob cannot
-- share alice's node (single tenancy) and gpu-2 is not ready.
SELECT api.create_allocation('h100x1', 'ubuntu-24.04');
SELECT pg_temp.as_user(:bob);
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
SELECT pg_temp.node(:n2, 'gpu-2', 'abc002', 8, 'ready', ARRAY['ubuntu-24.04']);
SELECT api.create_allocation('h100x1', 'ubuntu-24.04', ARRAY[:key_b]::uuid[]) ->> 'node_hostname' AS bob_first;
SELECT pg_temp.as_user(:carol);
SELECT api.create_allocation('h100x1', 'ubuntu-24.04');
-- Shared tenancy is refused (co-tenants would share the node's one account).
RESET request.jwt.claims;
SELECT pgcloud.set_policy('provisioning.node_tenancy', '"shared"') ->> 'value' AS tenancy;
SELECT pg_temp.as_user(:carol);
SELECT api.create_allocation('h100x1', 'ubuntu-24.04') ->> 'node_hostname' AS carol_shared;
RESET request.jwt.claims;
SELECT pgcloud.set_policy('provisioning.node_tenancy', '"single"') ->> 'value' AS tenancy;
SELECT * FROM pg_temp.nodes();
SELECT * FROM provisioning.capacity_problems;

-- The deploy intent and the events of a creation.
SELECT event_type, payload - 'allocation_id' - 'requested_at' - 'provisioning_at' - 'node_id' - 'user_id' AS payload
  FROM pgcloud.outbox WHERE aggregate_id = :'a1' ORDER BY id;

-- The per-user limit.
SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '3') ->> 'value' AS max_live;
SELECT pg_temp.as_user(:alice);
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
RESET request.jwt.claims;
SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '32') ->> 'value' AS max_live;
-- The reservation: the first accrual interval of every live allocation, and
-- of this one, is held against the balance (an interval of 10,000 hours here).
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '36000000') ->> 'value' AS accrual_interval;
SELECT pg_temp.as_user(:alice);
SELECT api.create_allocation('h100x1', 'ubuntu-22.04');
RESET request.jwt.claims;
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '60') ->> 'value' AS accrual_interval;

-- Reading: own allocations only.
SELECT pg_temp.as_user(:alice);
SELECT api.get_allocation(:'a1') - 'id' - 'requested_at' AS mine;
SELECT jsonb_array_length(api.list_allocations()) AS alice_has;
SELECT api.get_allocation('00000000-0000-4000-8000-000000000000');
SELECT pg_temp.as_user(:bob);
SELECT pg_temp.try(format('SELECT api.get_allocation(%L)', :'a1')) AS bob_reads_alices;
SELECT pg_temp.try(format('SELECT api.release_allocation(%L)', :'a1')) AS bob_releases_alices;
SELECT jsonb_array_length(api.list_allocations()) AS bob_has;
SELECT api.get_allocation(NULL);
SELECT api.release_allocation(NULL);

-- MAAS deploys it: active, billed from now (allocation.activated with the price).
SELECT pg_temp.ev('maas.machine_deployed', jsonb_build_object('allocation_id', :'a1', 'system_id', 'abc003', 'ip_addresses', '["192.0.2.5"]'::jsonb));
-- A repeated or late outcome changes nothing.
SELECT pg_temp.ev('maas.machine_deployed', jsonb_build_object('allocation_id', :'a1', 'system_id', 'abc003'));
SELECT pg_temp.ev('maas.deploy_failed', jsonb_build_object('allocation_id', :'a1', 'system_id', 'abc003', 'reason', 'late'));
SELECT state, reason, started_at IS NOT NULL AS started FROM provisioning.allocations WHERE id = :'a1';
SELECT payload - 'allocation_id' - 'user_id' - 'started_at' - 'node_id' - 'requested_at' AS activated
  FROM pgcloud.outbox WHERE aggregate_id = :'a1' AND event_type = 'allocation.activated';

-- The user releases it: releasing (slots still held) until MAAS released the machine.
SELECT pg_temp.as_user(:alice);
SELECT api.release_allocation(:'a1') ->> 'state' AS state;
SELECT api.release_allocation(:'a1') ->> 'state' AS again;
SELECT event_type, payload ->> 'reason' AS reason, payload ->> 'maas_system_id' AS machine, payload -> 'ssh_public_keys' AS keys
  FROM pgcloud.outbox WHERE aggregate_id = :'a1' AND event_type IN ('allocation.releasing', 'release.requested') ORDER BY id;
SELECT * FROM pg_temp.nodes();
SELECT pg_temp.ev('maas.machine_released', jsonb_build_object('allocation_id', :'a1', 'system_id', 'abc003', 'reason', 'the machine stays deployed for other allocations'));
SELECT state, reason, ended_at >= releasing_at AS billed_until_maas_confirmed FROM provisioning.allocations WHERE id = :'a1';
SELECT payload - 'allocation_id' - 'user_id' - 'ended_at' - 'node_id' - 'started_at' AS released
  FROM pgcloud.outbox WHERE aggregate_id = :'a1' AND event_type = 'allocation.released';

-- A failed deployment frees the slots; nothing was billed (no activation).
SELECT x.id AS a2 FROM provisioning.allocations x WHERE x.user_id = :alice AND x.sku = 'h100x2' \gset
SELECT pg_temp.ev('maas.deploy_failed', jsonb_build_object('allocation_id', :'a2', 'system_id', 'abc003', 'reason', 'deployment failed (MAAS status: Failed deployment)'));
SELECT state, reason, started_at FROM provisioning.allocations WHERE id = :'a2';
SELECT count(*) AS activations FROM pgcloud.outbox WHERE aggregate_id = :'a2' AND event_type = 'allocation.activated';

-- Force release: billing (all of a user's, or the ids given) and admin.
SELECT pg_temp.ev('billing.force_release_requested', jsonb_build_object('user_id', :alice, 'reason', 'balance exhausted'));
SELECT pg_temp.ev('admin.force_release_requested', jsonb_build_object('allocation_id', x.id, 'reason', 'abuse'))
  FROM provisioning.allocations x WHERE x.user_id = :bob;
SELECT u.name, x.sku, x.state, x.reason, x.released_by FROM provisioning.allocations x
  JOIN (VALUES (:alice::uuid, 'alice'), (:bob::uuid, 'bob'), (:carol::uuid, 'carol')) u (id, name) ON u.id = x.user_id
 ORDER BY u.name, x.requested_at;
SELECT action, result, details ->> 'by' AS by, details ->> 'reason' AS reason FROM pgcloud.audit_logs
 WHERE action LIKE 'allocation.%' ORDER BY id;

-- The state machine guards the column whoever writes it.
UPDATE provisioning.allocations SET state = 'active' WHERE id = :'a2';
UPDATE provisioning.allocations SET state = 'requested' WHERE id = :'a1';

-- Malformed events are refused.
SELECT pg_temp.ev('sku.upserted', '{"code": "x", "gpu_model": "H100", "gpu_count": 0, "region": "eu-west", "price_per_hour": 1, "currency": "usd"}');
SELECT pg_temp.ev('sku.upserted', '{"code": "x", "gpu_model": "H100", "gpu_count": 1, "region": "eu-west", "price_per_hour": "1", "currency": "usd"}');
SELECT pg_temp.ev('node.state_changed', '{"node_id": "nope"}');
SELECT pg_temp.ev('node.state_changed', jsonb_build_object('node_id', :n1, 'hostname', 'gpu-1', 'maas_system_id', 'abc001', 'region', 'eu-west', 'gpu_model', 'H100-SXM', 'slot_count', 8, 'state', 'ready', 'cached_images', 'x'));
SELECT pg_temp.ev('account.standing_changed', jsonb_build_object('user_id', :alice, 'standing', 'Good!'));
SELECT pg_temp.ev('ssh_key.added', jsonb_build_object('id', :key_a, 'user_id', :alice, 'public_key', 'ssh-dss AAAA'));
SELECT pg_temp.ev('billing.force_release_requested', jsonb_build_object('user_id', :alice, 'allocation_ids', '["x"]'::jsonb));
SELECT pg_temp.ev('maas.machine_deployed', '{"allocation_id": 5}');
-- Unknown allocations and event types are ignored.
SELECT pg_temp.ev('maas.machine_deployed', '{"allocation_id": "00000000-0000-4000-8000-000000000000"}');
SELECT pg_temp.ev('payment.succeeded', '{}');
RESET request.jwt.claims;
