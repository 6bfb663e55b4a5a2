-- databases: the seed's own list against a real server (this cluster itself,
-- registered as a target over its socket): a private postgres template
-- service with generated credentials, deployed (the database and role exist
-- and the credentials log in), audited, with its URI; one without deploy_now;
-- an unknown template and a denied write leave nothing; grants and the
-- deployment state machine. Remote objects are dropped at the end.
BEGIN;
SELECT * FROM no_plan();

\set u1 '''70000000-0000-4000-8000-000000000001'''
CREATE FUNCTION pg_temp.counts() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('services', (SELECT count(*) FROM databases.services),
                              'credentials', (SELECT count(*) FROM databases.credentials),
                              'config', (SELECT count(*) FROM databases.config),
                              'deployments', (SELECT count(*) FROM databases.deployments),
                              'audit', (SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'service.create_database'),
                              'events', (SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'service.created'))
$$;

-- ---- shape and grants ------------------------------------------------------------------------------
SELECT has_function('api', 'create_database_service', ARRAY['uuid', 'text', 'text', 'uuid', 'boolean']);
SELECT function_privs_are('api', 'create_database_service', ARRAY['uuid', 'text', 'text', 'uuid', 'boolean'],
                          'pgcloud_anon', ARRAY[]::text[], 'anonymous callers cannot create services');
SELECT function_privs_are('api', 'admin_register_database_server', ARRAY['text', 'text', 'integer', 'text', 'text', 'text'],
                          'pgcloud_user', ARRAY[]::text[], 'users cannot register servers');
SELECT is((SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'databases' AND c.relkind = 'r' AND pg_get_userbyid(c.relowner) <> 'pgcloud_svc_databases'), 0,
          'every table of the schema belongs to pgcloud_svc_databases');
SELECT ok(NOT has_table_privilege('pgcloud_user', 'databases.config', 'SELECT'), 'users cannot read the config table');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = 'databases' AND c.relname LIKE '%template%' AND c.relkind = 'r'),
          'no template table anyone could write: the catalogue is code');

-- ---- the target server: this cluster -----------------------------------------------------------------
SELECT pg_temp.as_operator();
SELECT api.admin_register_database_server('self', current_setting('unix_socket_directories'),
                                          current_setting('port')::int, current_user, 'unused-with-trust') ->> 'id' AS srv \gset
SELECT is((SELECT major_version FROM databases.servers WHERE id = :'srv'), current_setting('server_version_num')::int / 10000,
          'registration records the major version');
SELECT is((SELECT s ->> 'services' FROM jsonb_array_elements(api.admin_list_database_servers()) s WHERE s ->> 'id' = :'srv'), '0',
          'listed with its load');

SELECT pg_temp.as_user(:u1);
SELECT api.create_environment('pgtap') ->> 'id' AS env \gset
SELECT pg_temp.counts() AS before \gset

-- ---- unknown template and denied caller write nothing -----------------------------------------------
SELECT is(pg_temp.error_of(format('SELECT api.create_database_service(%L, %L, %L, %L, true)', :'env', 'x', 'redis', :'srv')),
          '{"code": "database_template_not_found", "status": 404}', 'an unknown template is refused');
SELECT is(pg_temp.counts(), :'before'::jsonb, '... and writes nothing');
SELECT set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
SELECT is(pg_temp.error_of(format('SELECT api.create_database_service(%L, %L, %L, %L, true)', :'env', 'x', 'postgres', :'srv')),
          '{"code": "unauthenticated", "status": 401}', 'an anonymous caller is refused');
SELECT pg_temp.as_user('70000000-0000-4000-8000-000000000002');
SELECT is(pg_temp.error_of(format('SELECT api.create_database_service(%L, %L, %L, %L, true)', :'env', 'x', 'postgres', :'srv')),
          '{"code": "environment_not_found", "status": 404}', 'another user is refused');
SELECT is(pg_temp.counts(), :'before'::jsonb, '... and nothing is written');

-- ---- provisions a private postgres service with generated credentials, deploy, audit and URI --------
SELECT pg_temp.as_user(:u1);
SELECT api.create_database_service(:'env', 'Seed Three', 'postgres', :'srv', true) AS r \gset
SELECT :'r'::jsonb -> 'service' ->> 'id' AS svc, :'r'::jsonb ->> 'deployment_id' AS dep,
       :'r'::jsonb -> 'service' ->> 'database' AS db, :'r'::jsonb -> 'service' ->> 'user' AS usr \gset
SELECT is(:'r'::jsonb ->> 'deployment_status', 'running', 'deploy_now: the deployment is running when the call returns');
SELECT is(:'r'::jsonb -> 'service' ->> 'visibility', 'private', 'visibility forced private');
SELECT is(:'r'::jsonb -> 'service' ->> 'engine', 'postgres', 'engine fixed by the template');
SELECT is((:'r'::jsonb -> 'service' ->> 'port')::int, current_setting('port')::int, 'port of the server');
SELECT matches(:'r'::jsonb ->> 'connection_uri', '^postgresql://u[0-9a-f]{16}:[A-Za-z0-9_-]{43}@.+:[0-9]+/seed_three_[0-9a-f]{8}$',
               'the URI names generated user, password and database');
SELECT ok(EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db'), 'the database exists on the server');
SELECT is((SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = :'db'), :'db' || '_owner', '... owned by the service''s role');
SELECT ok((SELECT rolcanlogin FROM pg_roles WHERE rolname = :'usr'), 'the login role exists');
SELECT ok(pg_has_role(:'usr', :'db' || '_owner', 'MEMBER'), '... as a member of the owner role');
SELECT ok(NOT has_database_privilege('public', :'db', 'CONNECT'), 'PUBLIC may not connect to it');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs WHERE action = 'service.create_database' AND target_id = :'svc'), 1,
          'audited as service.create_database');
SELECT is((SELECT string_agg(payload ->> 'to', ',' ORDER BY id) FROM pgcloud.outbox
            WHERE event_type = 'deployment.state_changed' AND payload ->> 'deployment_id' = :'dep'),
          'pending,provisioning,running', 'deployment.state_changed: pending, provisioning, running');
SELECT is((SELECT jsonb_agg(h ->> 'to') FROM jsonb_array_elements(api.get_deployment(:'dep') -> 'history') h),
          '["pending", "provisioning", "running"]'::jsonb, 'api.get_deployment shows the progress');
SELECT is((SELECT kind FROM databases.config WHERE service_id = :'svc' AND key = 'POSTGRES_PASSWORD'), 'secret',
          'POSTGRES_PASSWORD is a sealed secret');
SELECT ok(strpos((SELECT encode(sealed, 'escape') FROM databases.config WHERE service_id = :'svc' AND key = 'POSTGRES_PASSWORD'),
                 split_part(split_part(:'r'::jsonb ->> 'connection_uri', '@', 1), ':', 3)) = 0, '... not stored in plaintext');

-- ---- provisions without deploy_now ------------------------------------------------------------------
SELECT api.create_database_service(:'env', 'Later', 'postgres', :'srv', false) AS r2 \gset
SELECT is(:'r2'::jsonb ->> 'deployment_id', NULL, 'without deploy_now: no deployment');
SELECT ok(:'r2'::jsonb ->> 'connection_uri' IS NOT NULL, '... but the credentials and URI');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'r2'::jsonb -> 'service' ->> 'database'), '... and no database yet');
SELECT api.deploy_database_service((:'r2'::jsonb -> 'service' ->> 'id')::uuid) AS d2 \gset
SELECT is(:'d2'::jsonb ->> 'deployment_status', 'running', 'a later deploy provisions it');
SELECT ok(EXISTS (SELECT 1 FROM pg_database WHERE datname = :'r2'::jsonb -> 'service' ->> 'database'), '... the database exists');

-- ---- the state machine ----------------------------------------------------------------------------------
SELECT pg_temp.as_operator();
SELECT throws_ok(format('UPDATE databases.deployments SET status = %L WHERE id = %L', 'pending', :'dep'),
                 NULL, NULL, 'running -> pending is not a transition');
SELECT throws_ok(format('UPDATE databases.deployments SET status = %L WHERE id = %L', 'provisioning', :'dep'),
                 NULL, NULL, 'running -> provisioning is not a transition');

-- ---- clean the server: the drop the deployer does after a deletion -------------------------------------
SELECT lives_ok(format('SELECT databases.drop_remote(s) FROM databases.services s WHERE s.environment_id = %L', :'env'),
                'databases.drop_remote() drops the databases and roles');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db'), 'the database is gone');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN (:'usr', :'db' || '_owner')), 'its roles are gone');

SELECT * FROM finish();
ROLLBACK;
