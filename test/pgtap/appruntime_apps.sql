-- appruntime: manifests, launch rules, idempotency, members' rights, the
-- agent's reports, the guarded lifecycle, release with the allocation.
BEGIN;
SELECT * FROM no_plan();
\set alice '''7a7a0000-0000-4000-8000-000000000001'''
\set bob '''7a7a0000-0000-4000-8000-000000000002'''
\set a1 '''7a7aa100-0000-4000-8000-000000000001'''
\set a2 '''7a7aa100-0000-4000-8000-000000000002'''

CREATE FUNCTION pg_temp.as_agent() RETURNS void LANGUAGE sql AS $$
    SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_service', 'sub', '7a7a5e55-0000-4000-8000-000000000001',
                                                               'scopes', 'apps:run')::text, true)
$$;
SELECT pg_temp.handle('appruntime', 'user.created', :alice, jsonb_build_object('user_id', :alice, 'posix_username', 'alice'));
SELECT pg_temp.handle('appruntime', 'user.created', :bob, jsonb_build_object('user_id', :bob, 'posix_username', 'bob'));
SELECT pg_temp.handle('appruntime', 'allocation.activated', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice, 'node_hostname', 'n1'));
SELECT pg_temp.handle('appruntime', 'allocation.activated', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :alice, 'node_hostname', 'n2'));

-- ---- manifests ----------------------------------------------------------------------
SELECT is((api.publish_app_manifest('{"name": "web", "version": "1", "start": "python3 -m http.server 8080", "ports": [8080],
          "env": {"GREETING": {"type": "string", "default": "hi"}, "WORKERS": {"type": "integer", "required": true}}}', true)) ->> 'catalogue',
          'true', 'an operator publishes to the catalogue');
SELECT is(pg_temp.error_of($$SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1]}', true)$$),
          '{"code": "conflict", "status": 409}', 'a name@version is published once');
SELECT pg_temp.as_user(:alice);
SELECT is(pg_temp.error_of($$SELECT api.publish_app_manifest('{"name": "x", "version": "1", "start": "x", "ports": [1]}', true)$$),
          '{"code": "forbidden", "status": 403}', 'users may not publish to the catalogue');
SELECT is(pg_temp.error_of(format('SELECT api.publish_app_manifest(%L)', m)), '{"code": "app_manifest_invalid", "status": 400}', why)
  FROM (VALUES ('{"name": "Bad", "version": "1", "start": "x", "ports": [1]}', 'an upper-case name'),
               ('{"name": "x", "version": "1", "start": "", "ports": [1]}', 'an empty start command'),
               ('{"name": "x", "version": "1", "start": "a\nb", "ports": [1]}', 'a multi-line start command'),
               ('{"name": "x", "version": "1", "start": "x", "ports": []}', 'no ports'),
               ('{"name": "x", "version": "1", "start": "x", "ports": [0]}', 'port 0'),
               ('{"name": "x", "version": "1", "start": "x", "ports": ["80"]}', 'a port as a string'),
               ('{"name": "x", "version": "1", "start": "x", "ports": [1], "env": {"lower": {}}}', 'a lower-case env name'),
               ('{"name": "x", "version": "1", "start": "x", "ports": [1], "env": {"X": {"type": "float"}}}', 'an unknown env type'),
               ('{"name": "x", "version": "1", "start": "x", "ports": [1], "image": "x"}', 'an unknown field'),
               ('[]', 'not an object')) AS t(m, why);
SELECT is(api.publish_app_manifest('{"name": "web", "version": "2", "start": "mine", "ports": [9000]}') ->> 'catalogue', 'false',
          'a user publishes their own web@2');
SELECT is(jsonb_array_length(api.list_app_manifests()), 2, 'alice lists the catalogue and hers');
SELECT pg_temp.as_user(:bob);
SELECT is(jsonb_array_length(api.list_app_manifests()), 1, 'bob lists only the catalogue');

-- ---- launch -------------------------------------------------------------------------
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L)', :a1, 'web@1')), '{"code": "allocation_not_found", "status": 404}',
          'launching on someone else''s allocation: 404');
SELECT pg_temp.as_user(:alice);
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L, %L)', :a1, 'nope', '{}')), '{"code": "app_manifest_not_found", "status": 404}',
          'an unknown manifest: 404');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L, %L)', :a1, 'web@1', '{}')), '{"code": "app_env_invalid", "status": 400}',
          'a required variable missing: 400');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L, %L)', :a1, 'web@1', '{"WORKERS": "four"}')), '{"code": "app_env_invalid", "status": 400}',
          'a variable of the wrong type: 400');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L, %L)', :a1, 'web@1', '{"WORKERS": 4, "EXTRA": "x"}')), '{"code": "app_env_invalid", "status": 400}',
          'a variable not in the schema: 400');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L)', :a1, 'web; rm -rf /')), '{"code": "invalid_argument", "status": 400}',
          'a malformed manifest reference: 400');
SELECT set_config('request.headers', '{"x-idempotency-key": "launch-1"}', true);
SELECT api.launch_app(:a1, 'web@1', '{"WORKERS": 4}') AS i1 \gset
SELECT is(api.launch_app(:a1, 'web@1', '{"WORKERS": 4}') ->> 'id', :'i1'::jsonb ->> 'id', 'a retry with the same key: the same instance');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L, %L)', :a1, 'web@1', '{"WORKERS": 5}')),
          '{"code": "idempotency_key_reused", "status": 422}', 'the same key with other arguments: 422');
SELECT set_config('request.headers', '', true);
SELECT (:'i1'::jsonb) ->> 'id' AS inst \gset
SELECT is((:'i1'::jsonb) -> 'env', '{"GREETING": "hi", "WORKERS": "4"}', 'defaults are filled in');
SELECT is((:'i1'::jsonb) ->> 'state', 'launch', 'the instance starts in launch');
SELECT is((SELECT count(*) FROM appruntime.instances)::int, 1, 'one instance');
SELECT is(api.launch_app(:a2, 'web', '{}') -> 'manifest' ->> 'version', '2', '"web" names alice''s own web@2 first');

-- ---- the agent ------------------------------------------------------------------------
SELECT pg_temp.as_agent();
SELECT is((SELECT e ->> 'action' FROM jsonb_array_elements(api.service_app_work()) e WHERE e ->> 'instance_id' = :'inst'), 'start',
          'the agent is told to start it');
SELECT is(api.service_app_report(:'inst', 'running'), '{"state": "launch", "applied": false}', 'running before starting is not applied');
SELECT is(api.service_app_report(:'inst', 'starting', 'pid 42'), '{"state": "starting", "applied": true}', 'starting');
SELECT is((SELECT e ->> 'action' FROM jsonb_array_elements(api.service_app_work()) e WHERE e ->> 'instance_id' = :'inst'), 'probe',
          '... then to probe its port');
SELECT is(api.service_app_report(:'inst', 'running', 'port 8080 answers') ->> 'state', 'running', 'running');
SELECT is(pg_temp.error_of(format('SELECT api.service_app_report(%L, %L)', :'inst', 'launch')), '{"code": "invalid_argument", "status": 400}',
          'the agent reports only starting, running, stopped or failed');
SELECT pg_temp.as_user(:alice);
SELECT is(pg_temp.error_of(format('SELECT api.service_app_report(%L, %L)', :'inst', 'stopped')), '{"code": "forbidden", "status": 403}',
          'users cannot report');

-- ---- members -------------------------------------------------------------------------
SELECT pg_temp.as_user(:bob);
SELECT is(pg_temp.error_of(format('SELECT api.get_app(%L)', :'inst')), '{"code": "app_instance_not_found", "status": 404}',
          'a stranger does not see it');
SELECT pg_temp.as_user(:alice);
SELECT is(pg_temp.error_of(format('SELECT api.add_app_member(%L, %L, %L)', :'inst', :bob, 'admin')), '{"code": "app_member_role_invalid", "status": 400}',
          'an unknown role: 400');
SELECT is(pg_temp.error_of(format('SELECT api.add_app_member(%L, %L, %L)', :'inst', '7a7a0000-0000-4000-8000-00000000dead', 'viewer')),
          '{"code": "app_user_not_found", "status": 404}', 'an unknown user: 404');
SELECT is(jsonb_array_length(api.add_app_member(:'inst', :bob, 'viewer') -> 'members'), 2, 'bob becomes a viewer');
SELECT pg_temp.as_user(:bob);
SELECT is(api.get_app(:'inst') ->> 'state', 'running', 'a viewer sees it');
SELECT is(pg_temp.error_of(format('SELECT api.stop_app(%L)', :'inst')), '{"code": "forbidden", "status": 403}', 'a viewer may not stop it');
SELECT is(pg_temp.error_of(format('SELECT api.add_app_member(%L, %L, %L)', :'inst', :bob, 'owner')), '{"code": "forbidden", "status": 403}',
          'a viewer may not promote himself');
SELECT pg_temp.as_user(:alice);
SELECT api.add_app_member(:'inst', :bob, 'editor');
SELECT pg_temp.as_user(:bob);
SELECT is(api.stop_app(:'inst') ->> 'state', 'stopping', 'an editor stops it');
SELECT is(api.stop_app(:'inst') ->> 'state', 'stopping', 'stopping twice changes nothing');
SELECT pg_temp.as_agent();
SELECT is(api.service_app_report(:'inst', 'running') ->> 'applied', 'false', 'a late running report does not undo the stop');
SELECT is(api.service_app_report(:'inst', 'stopped') ->> 'state', 'stopped', 'stopped');
SELECT set_config('request.jwt.claims', '', true);
SELECT throws_ok(format('UPDATE appruntime.instances SET state = %L WHERE id = %L', 'running', :'inst'), 'PGRST', NULL,
                 'the transition trigger refuses stopped -> running');
SELECT throws_ok(format('DELETE FROM appruntime.instance_events WHERE instance_id = %L', :'inst'), NULL, NULL,
                 'the history is immutable');
SELECT pg_temp.as_user(:alice);
SELECT is((SELECT string_agg(e ->> 'kind', ',' ORDER BY (e ->> 'id')::bigint) FROM jsonb_array_elements(api.app_events(:'inst')) e),
          'launched,member_added,starting,running,member_added,member_added,stop_requested,stopped', 'the history, in order');

-- ---- release --------------------------------------------------------------------------
SELECT pg_temp.handle('appruntime', 'allocation.released', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :alice));
SELECT is((SELECT state FROM appruntime.instances WHERE allocation_id = :a2), 'released', 'allocation.released releases its instances');
SELECT is((SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'app.instance_released')::int, 1, '... announced');
SELECT is(pg_temp.error_of(format('SELECT api.launch_app(%L, %L)', :a2, 'web')), '{"code": "allocation_not_active", "status": 409}',
          'no launch on an ended allocation');

SELECT * FROM finish();
ROLLBACK;
