-- services: terminal appruntime
-- terminal and appruntime: input edge cases of the public functions and
-- every error message they answer with (behaviour is in test/pgtap/terminal_tokens.sql,
-- appruntime_apps.sql, test/t/terminal_browser.pl, appruntime_agent.pl).
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'user.created', 'user', '7e57e000-0000-4000-8000-000000000001',
    '{"user_id": "7e57e000-0000-4000-8000-000000000001", "posix_username": "regress"}', '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'allocation.activated', 'allocation', '7e57e000-0000-4000-8000-00000000a001',
    '{"allocation_id": "7e57e000-0000-4000-8000-00000000a001", "user_id": "7e57e000-0000-4000-8000-000000000001"}', '{}');
SELECT pgcloud.deliver('appruntime', gen_random_uuid(), 'allocation.activated', 'allocation', '7e57e000-0000-4000-8000-00000000a001',
    '{"allocation_id": "7e57e000-0000-4000-8000-00000000a001", "user_id": "7e57e000-0000-4000-8000-000000000001"}', '{}');

-- Events that do not fit.
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'user.created', 'user', 'x', '[]', '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'user.created', 'user', 'not-a-uuid', '{}', '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'user.created', 'user', '7e57e000-0000-4000-8000-000000000002',
    '{"posix_username": "Root!"}', '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'app.member_added', 'app_instance', '7e57e000-0000-4000-8000-0000000001a1',
    '{"allocation_id": "7e57e000-0000-4000-8000-00000000a001", "user_id": "7e57e000-0000-4000-8000-000000000002", "role": "god"}', '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'something.else', 'x', 'y', '{}', '{}');

-- Minting.
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.mint_terminal_token('7e57e000-0000-4000-8000-00000000a001');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "7e57e000-0000-4000-8000-000000000001"}';
SELECT api.mint_terminal_token('7e57e000-0000-4000-8000-00000000a001');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "7e57e000-0000-4000-8000-000000000001", "sid": "not-a-uuid"}';
SELECT api.mint_terminal_token('7e57e000-0000-4000-8000-00000000a001');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "7e57e000-0000-4000-8000-000000000001", "sid": "7e57e000-0000-4000-8000-0000000005a1"}';
SELECT api.mint_terminal_token(NULL);
SELECT api.mint_terminal_token('7e57e000-0000-4000-8000-00000000dead');
SELECT jsonb_object_keys(api.mint_terminal_token('7e57e000-0000-4000-8000-00000000a001')) ORDER BY 1;

-- Redeeming.
SELECT api.service_redeem_terminal_token('x');
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "7e57e000-0000-4000-8000-00000000beef"}';
SELECT api.service_redeem_terminal_token('x');
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "7e57e000-0000-4000-8000-00000000beef", "scopes": "terminal:redeem"}';
SELECT api.service_redeem_terminal_token(NULL);
SELECT api.service_redeem_terminal_token('');
SELECT api.service_redeem_terminal_token(repeat('A', 10000));
SELECT api.service_redeem_terminal_token('pgt_' || repeat('A', 43) || E'\n');
SELECT api.service_redeem_terminal_token('pgt_' || repeat('A', 43));
SELECT api.service_terminal_heartbeat(NULL);
SELECT api.service_terminal_heartbeat('[1]');
SELECT api.service_terminal_heartbeat('[{"id": "7e57e000-0000-4000-8000-000000000001", "bytes_in": -1}]');
SELECT api.service_terminal_heartbeat('[]');
SELECT api.service_end_terminal_session('7e57e000-0000-4000-8000-000000000001', 'Closed!', 0, 0);
SELECT api.service_end_terminal_session('7e57e000-0000-4000-8000-000000000001', 'closed', NULL, 0);
SELECT api.service_end_terminal_session('7e57e000-0000-4000-8000-000000000001', 'closed', 0, 0);

-- Manifests.
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "7e57e000-0000-4000-8000-000000000001"}';
SELECT api.publish_app_manifest(NULL);
SELECT api.publish_app_manifest('"web"');
SELECT api.publish_app_manifest('{"name": "web"}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1"}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "stop": 5, "ports": [1]}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1.5]}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1], "resources": []}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1], "env": {"A": {"required": "yes"}}}');
SELECT api.publish_app_manifest('{"name": "web", "version": "1", "start": "x", "ports": [1]}', true);

-- Instances.
SELECT api.launch_app('7e57e000-0000-4000-8000-00000000a001', NULL);
SELECT api.launch_app('7e57e000-0000-4000-8000-00000000a001', 'web', '[]');
SELECT api.launch_app('7e57e000-0000-4000-8000-00000000a001', 'web@');
SELECT api.launch_app('7e57e000-0000-4000-8000-00000000a001', 'web');
SELECT api.stop_app(NULL);
SELECT api.stop_app('7e57e000-0000-4000-8000-000000000001');
SELECT api.get_app('7e57e000-0000-4000-8000-000000000001');
SELECT api.app_events('7e57e000-0000-4000-8000-000000000001');
SELECT api.add_app_member('7e57e000-0000-4000-8000-000000000001', NULL, 'viewer');
SELECT api.list_apps();
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "7e57e000-0000-4000-8000-00000000beef"}';
SELECT api.service_app_work();
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "7e57e000-0000-4000-8000-00000000beef", "scopes": "apps:run"}';
SELECT api.service_app_work();
SELECT api.service_app_report('7e57e000-0000-4000-8000-000000000001', 'running');
SELECT api.service_app_report('7e57e000-0000-4000-8000-000000000001', 'exploded');
RESET request.jwt.claims;
