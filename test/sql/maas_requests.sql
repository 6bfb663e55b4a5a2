-- maas: the requests sent to MAAS (method, path, form body), the decision
-- table from goal and status to the next request, and how answers move
-- machines and allocations. MAAS's answers are handed to
-- maas.on_http_result() as the HTTP executor would; no executor runs here.
\set VERBOSITY default
\set SHOW_CONTEXT never
\set alloc1 '''a0000000-0000-4000-8000-0000000000a1'''
\set alloc2 '''a0000000-0000-4000-8000-0000000000a2'''
\set alloc3 '''a0000000-0000-4000-8000-0000000000a3'''
\set node1 '''90000000-0000-4000-8000-0000000000f1'''
\set user1 '''c0000000-0000-4000-8000-0000000000c1'''
CREATE FUNCTION pg_temp.ev(t text, p jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT pgcloud.deliver('maas', gen_random_uuid(), t, split_part(t, '.', 1), coalesce(p ->> 'allocation_id', p ->> 'node_id'), p, '{}')
$$;
-- The request in flight for a machine, as the executor would send it.
CREATE FUNCTION pg_temp.request(sid text) RETURNS TABLE (kind text, method text, path text, body text)
LANGUAGE sql AS $$
    SELECT m.op_kind, i.method, i.path, i.body FROM maas.machines m JOIN pgcloud.http_intents i ON i.id = m.op_intent
     WHERE m.system_id = sid
$$;
-- MAAS answers the request in flight with a machine in the given status.
CREATE FUNCTION pg_temp.answer(sid text, status_name text, http integer DEFAULT 200, body text DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    SELECT maas.on_http_result(m.op_intent, http, '{}'::jsonb,
        coalesce(answer.body, jsonb_build_object('system_id', sid, 'hostname', 'gpu-node-1', 'status_name', answer.status_name,
                       'status', (SELECT s.status_code FROM maas.statuses s WHERE s.status_name = answer.status_name),
                       'status_message', CASE WHEN answer.status_name = 'Failed deployment' THEN 'curtin failed' ELSE '' END,
                       'distro_series', 'jammy', 'power_state', 'on', 'owner', 'pgcloud',
                       'ip_addresses', CASE WHEN answer.status_name = 'Deployed' THEN '["192.0.2.11"]'::jsonb ELSE '[]'::jsonb END)::text),
        jsonb_build_object('system_id', sid, 'op', m.op_kind), true)
      FROM maas.machines m WHERE m.system_id = sid
$$;
CREATE FUNCTION pg_temp.machine(sid text) RETURNS TABLE (goal text, status_name text, seen_busy boolean, op text, stuck boolean, last_error text)
LANGUAGE sql AS $$
    SELECT m.goal, m.status_name, m.seen_busy, m.op_kind, m.stuck, m.last_error FROM maas.machines m WHERE m.system_id = sid
$$;
CREATE FUNCTION pg_temp.events() RETURNS TABLE (event_type text, payload jsonb) LANGUAGE sql AS $$
    SELECT o.event_type, o.payload - 'at' - 'observed_at' - 'node_id' - 'user_id' - 'hostname'
      FROM pgcloud.outbox o WHERE o.source = 'maas' AND o.id > coalesce(current_setting('maas_test.seen', true), '0')::bigint
     ORDER BY o.id
$$;
CREATE FUNCTION pg_temp.seen() RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM set_config('maas_test.seen', (SELECT coalesce(max(id), 0)::text FROM pgcloud.outbox), false)
$$;
SELECT pg_temp.seen();

-- Form encoding.
SELECT maas.form_encode('') AS empty, maas.form_encode('jammy') AS plain, maas.form_encode('ubuntu/jammy') AS slash,
       maas.form_encode('a+b=c&d e') AS reserved, maas.form_encode('é') AS utf8;

-- The decision table: for each goal and MAAS status, what happens next
-- (before and after the goal's operation was seen running).
SELECT s.status_code, s.status_name, s.node_state,
       maas.next_action(ROW(NULL, NULL, NULL, 'commission', 0, NULL, NULL, NULL, false, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS commission,
       maas.next_action(ROW(NULL, NULL, NULL, 'commission', 0, NULL, NULL, NULL, true, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS "commission/seen",
       maas.next_action(ROW(NULL, NULL, NULL, 'deploy', 0, NULL, NULL, NULL, false, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS deploy,
       maas.next_action(ROW(NULL, NULL, NULL, 'deploy', 0, NULL, NULL, NULL, true, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS "deploy/seen",
       maas.next_action(ROW(NULL, NULL, NULL, 'release', 0, NULL, NULL, NULL, false, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS release,
       maas.next_action(ROW(NULL, NULL, NULL, 'release', 0, NULL, NULL, NULL, true, NULL, s.status_name, NULL, NULL, NULL, '[]', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL)::maas.machines) AS "release/seen"
  FROM maas.statuses s ORDER BY s.status_code;

-- Malformed events are refused.
SELECT pg_temp.ev('node.registered', '{"node_id": "90000000-0000-4000-8000-0000000000f1", "maas_system_id": "ABC"}');
SELECT pg_temp.ev('deploy.requested', '{"allocation_id": "a0000000-0000-4000-8000-0000000000a1", "maas_system_id": "abc123", "distro_series": "jammy; reboot"}');
SELECT pg_temp.ev('deploy.requested', '{"allocation_id": "a0000000-0000-4000-8000-0000000000a1", "maas_system_id": "abc123", "distro_series": "jammy", "ssh_public_keys": ["ssh-ed25519 AAAA\n#cloud-config"]}');
SELECT pg_temp.ev('deploy.requested', '{"allocation_id": "a0000000-0000-4000-8000-0000000000a1", "maas_system_id": "abc123", "distro_series": "jammy", "ssh_public_keys": "ssh-ed25519 AAAA"}');
SELECT pg_temp.ev('release.requested', '{"allocation_id": "nope"}');
SELECT pg_temp.ev('payment.succeeded', '{}');

-- Registration: read, then commission, then read until Ready.
SELECT pg_temp.ev('node.registered', jsonb_build_object('node_id', :node1, 'hostname', 'gpu-node-1', 'maas_system_id', 'abc123'));
SELECT * FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Ready');
SELECT * FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Commissioning');
SELECT * FROM pg_temp.machine('abc123');
SELECT maas.poll() AS acted;                       -- the status is fresh: nothing to do yet
UPDATE maas.machines SET observed_at = observed_at - interval '1 minute' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;                       -- stale: read it
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Ready');
SELECT * FROM pg_temp.machine('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();

-- Two allocations on the machine: the first deploys it (allocate, then
-- deploy with both users' keys as cloud-init user data), the second joins.
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', :alloc1, 'user_id', :user1, 'node_id', :node1,
    'maas_system_id', 'abc123', 'image', 'ubuntu-22.04', 'distro_series', 'jammy',
    'ssh_public_keys', '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn"]'::jsonb));
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', :alloc2, 'user_id', :user1, 'node_id', :node1,
    'maas_system_id', 'abc123', 'image', 'ubuntu-22.04', 'distro_series', 'jammy',
    'ssh_public_keys', '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGH0adccsKaI+zwzZ0Oc3/JiKzJtNi+7cBLNC/z21t0I", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn"]'::jsonb));
-- a repeated deploy.requested changes nothing
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', :alloc2, 'maas_system_id', 'abc123', 'distro_series', 'jammy'));
-- another series cannot join
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', :alloc3, 'maas_system_id', 'abc123', 'distro_series', 'noble'));
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Ready');
SELECT * FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Allocated');
SELECT kind, method, path, split_part(body, '&user_data=', 1) AS form FROM pg_temp.request('abc123');
SELECT convert_from(decode(replace(replace(replace(split_part(body, '&user_data=', 2), '%2B', '+'), '%2F', '/'), '%3D', '='), 'base64'), 'UTF8') AS user_data
  FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Deploying');
UPDATE maas.machines SET observed_at = observed_at - interval '1 minute' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;
SELECT pg_temp.answer('abc123', 'Deployed');
SELECT * FROM pg_temp.machine('abc123');
SELECT allocation_id, state, reason FROM maas.allocations ORDER BY allocation_id;
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();

-- Releasing one allocation of two: the machine stays deployed.
SELECT pg_temp.ev('release.requested', jsonb_build_object('allocation_id', :alloc1, 'maas_system_id', 'abc123'));
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
-- A third allocation of the same series joins the running deployment at once.
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000a4',
    'maas_system_id', 'abc123', 'distro_series', 'jammy', 'image', 'ubuntu-22.04'));
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
-- The last ones leave: release (erase per policy), then Ready.
SELECT pg_temp.ev('release.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000a4', 'maas_system_id', 'abc123'));
SELECT pg_temp.ev('release.requested', jsonb_build_object('allocation_id', :alloc2, 'maas_system_id', 'abc123'));
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Deployed');
SELECT * FROM pg_temp.request('abc123');
-- the answer to the release POST was lost; the executor's retry is refused (409): read and decide again
SELECT pg_temp.answer('abc123', NULL, 409, 'Machine cannot be released in its current state (''Releasing'').');
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT pg_temp.answer('abc123', 'Releasing');
SELECT * FROM pg_temp.machine('abc123');
UPDATE maas.machines SET observed_at = observed_at - interval '1 minute' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;
SELECT pg_temp.answer('abc123', 'Ready');
SELECT * FROM pg_temp.machine('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
-- A release for an allocation never deployed here answers at once.
SELECT pg_temp.ev('release.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000a9', 'maas_system_id', 'abc123'));
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();

-- MAAS refuses the deployment (400): the allocation fails with MAAS's answer;
-- the machine, allocated already, is released.
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000b1',
    'maas_system_id', 'abc123', 'distro_series', 'bionic', 'image', 'ubuntu-18.04'));
SELECT pg_temp.answer('abc123', 'Ready');
SELECT pg_temp.answer('abc123', 'Allocated');
SELECT pg_temp.answer('abc123', NULL, 400, '{"distro_series": ["''bionic'' is not a valid distro_series."]}');
SELECT * FROM pg_temp.machine('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
SELECT pg_temp.answer('abc123', 'Releasing');
SELECT pg_temp.answer('abc123', 'Ready');

-- A failed deployment: every deploying allocation fails with the reason.
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000b2',
    'maas_system_id', 'abc123', 'distro_series', 'jammy', 'image', 'ubuntu-22.04'));
SELECT pg_temp.answer('abc123', 'Ready');
SELECT pg_temp.answer('abc123', 'Allocated');
SELECT pg_temp.answer('abc123', 'Deploying');
UPDATE maas.machines SET observed_at = observed_at - interval '1 minute' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;
SELECT pg_temp.answer('abc123', 'Failed deployment');
SELECT * FROM pg_temp.machine('abc123');
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
SELECT pg_temp.answer('abc123', 'Releasing');
SELECT pg_temp.answer('abc123', 'Ready');

-- A deployment that stalls past maas.deploy_timeout_seconds fails and is released.
SELECT pg_temp.ev('deploy.requested', jsonb_build_object('allocation_id', 'a0000000-0000-4000-8000-0000000000b3',
    'maas_system_id', 'abc123', 'distro_series', 'jammy', 'image', 'ubuntu-22.04'));
SELECT pg_temp.answer('abc123', 'Ready');
SELECT pg_temp.answer('abc123', 'Allocated');
SELECT pg_temp.answer('abc123', 'Deploying');
UPDATE maas.machines SET goal_since = goal_since - interval '2401 seconds', observed_at = observed_at - interval '1 minute',
       last_error_at = last_error_at - interval '2401 seconds' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;
SELECT * FROM pg_temp.machine('abc123');
SELECT kind, method, path FROM pg_temp.request('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
-- MAAS reports the release running
SELECT pg_temp.answer('abc123', 'Releasing');

-- A release that never finishes: its allocations end anyway, the machine is stuck.
UPDATE maas.machines SET goal_since = goal_since - interval '1801 seconds', observed_at = observed_at - interval '1 minute',
       last_error_at = last_error_at - interval '1801 seconds' WHERE system_id = 'abc123';
SELECT maas.poll() AS acted;
SELECT * FROM pg_temp.machine('abc123');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();

-- Wrong credentials (401) fail a commissioning with MAAS's answer; 5xx is left to the poller.
SELECT pg_temp.ev('node.registered', jsonb_build_object('node_id', '90000000-0000-4000-8000-0000000000f2', 'hostname', 'gpu-node-2',
    'maas_system_id', 'abc124'));
SELECT pg_temp.answer('abc124', NULL, 503, 'Service Unavailable');
SELECT * FROM pg_temp.machine('abc124');
UPDATE maas.machines SET observed_at = NULL WHERE system_id = 'abc124';
SELECT maas.poll() AS acted;
SELECT pg_temp.answer('abc124', NULL, 401, 'Authorization Error: Invalid access token: ''tk2''');
SELECT * FROM pg_temp.machine('abc124');
SELECT * FROM pg_temp.events();
SELECT pg_temp.seen();
-- An answer that is not the machine is an error, not a status.
SELECT pg_temp.ev('node.registered', jsonb_build_object('node_id', '90000000-0000-4000-8000-0000000000f2', 'hostname', 'gpu-node-2',
    'maas_system_id', 'abc124'));
SELECT pg_temp.answer('abc124', NULL, 200, '<html>proxy</html>');
SELECT * FROM pg_temp.machine('abc124');

-- Nothing here holds the API key.
SELECT count(*) AS intents_with_credentials FROM pgcloud.http_intents
 WHERE headers::text ~* 'authorization|oauth' OR coalesce(body, '') ~* 'oauth';
