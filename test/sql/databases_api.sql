-- databases: every refusal of the api (input edge cases first), the fixed
-- template catalogue, config variables and sealed secrets, a service created
-- without deploy_now (one transaction: row, credentials, config, audit,
-- event), the idempotent replay without the password, and a denied or
-- unknown request that writes nothing. Servers here are rows made by hand or
-- an unreachable port; test/t/databases_target.pl uses a real target server.
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT coalesce(max(id), 0) AS outbox_before FROM pgcloud.outbox \gset
SELECT coalesce(max(id), 0) AS audit_before FROM pgcloud.audit_logs \gset
-- The code and HTTP status of the error a call raises (for calls whose details name random ids), or ok.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE m text; d text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
    RETURN (m::jsonb ->> 'code') || ' ' || (d::jsonb ->> 'status');
END $$;

-- ---- the template catalogue ------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.list_database_templates();
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT jsonb_pretty(api.list_database_templates());

-- ---- environments ------------------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user"}';
SELECT api.create_environment('prod');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT api.create_environment(NULL);
SELECT api.create_environment('');
SELECT api.create_environment('-dash');
SELECT api.create_environment('semi;colon');
SELECT api.create_environment(repeat('x', 64));
SELECT api.create_environment('prod') ->> 'name' AS created;
SELECT api.create_environment('prod');
-- A fixed id, so that error details below read the same every run.
RESET request.jwt.claims;
UPDATE databases.environments SET id = 'e1e1e1e1-0000-4000-8000-0000000000e1' WHERE name = 'prod';
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
\set env 'e1e1e1e1-0000-4000-8000-0000000000e1'
SELECT jsonb_array_length(api.list_environments()) AS mine;
SELECT api.get_environment(:'env') ->> 'name' AS got;
SELECT api.get_environment('00000000-0000-4000-8000-000000000000');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d2d2d2d2-0000-4000-8000-000000000002"}';
SELECT api.get_environment(:'env');
SELECT api.list_environments();

-- ---- servers (operators) -----------------------------------------------------------------------------
SELECT api.admin_register_database_server('s1', 'localhost', 5432, 'admin', 'pw');
SET request.jwt.claims = '{"role": "pgcloud_admin", "sub": "adadadad-0000-4000-8000-0000000000ad"}';
SELECT api.admin_register_database_server(NULL, 'localhost', 5432, 'admin', 'pw');
SELECT api.admin_register_database_server('Bad_Name', 'localhost', 5432, 'admin', 'pw');
SELECT api.admin_register_database_server('s1', 'local host', 5432, 'admin', 'pw');
SELECT api.admin_register_database_server('s1', 'localhost', 0, 'admin', 'pw');
SELECT api.admin_register_database_server('s1', 'localhost', 70000, 'admin', 'pw');
SELECT api.admin_register_database_server('s1', 'localhost', 5432, '', 'pw');
SELECT api.admin_register_database_server('s1', 'localhost', 5432, 'admin', '');
SELECT api.admin_register_database_server('s1', 'localhost', 5432, 'admin', 'pw', 'priv@host');
-- Nothing listens on port 1: the server is checked before it is stored.
SELECT api.admin_register_database_server('s1', '127.0.0.1', 1, 'admin', 'pw');
SELECT api.admin_list_database_servers();
RESET request.jwt.claims;
-- A server row made by hand (the real registration is in test/t/databases_target.pl).
INSERT INTO databases.servers (id, name, host, port, private_host, admin_user, admin_password_sealed, major_version, server_version_num)
VALUES ('5e5e5e5e-0000-4000-8000-00000000005e', 'db-1', '10.0.0.5', 6432, 'db-1.internal', 'admin',
        pgcloud.seal('not-a-real-password'::bytea, 'databases.server/5e5e5e5e-0000-4000-8000-00000000005e'), 15, 150004);
SELECT s ->> 'name' AS name, s ->> 'services' AS services, s ? 'admin_password' AS shows_password
  FROM jsonb_array_elements(api.admin_list_database_servers()) s;

-- ---- create_database_service: refusals write nothing --------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.create_database_service(:'env', 'app', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d2d2d2d2-0000-4000-8000-000000000002"}';
SELECT api.create_database_service(:'env', 'app', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT api.create_database_service(:'env', 'app', 'mysql', '5e5e5e5e-0000-4000-8000-00000000005e', false);
SELECT api.create_database_service(:'env', 'app', NULL, '5e5e5e5e-0000-4000-8000-00000000005e', false);
SELECT api.create_database_service(:'env', 'app', 'postgres', '00000000-0000-4000-8000-000000000000', false);
SELECT api.create_database_service(:'env', '1app', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
SELECT api.create_database_service(:'env', '', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
SELECT api.create_database_service(:'env', 'a/b', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
RESET request.jwt.claims;
SELECT (SELECT count(*) FROM databases.services) AS services, (SELECT count(*) FROM databases.credentials) AS credentials,
       (SELECT count(*) FROM databases.config) AS config, (SELECT count(*) FROM databases.deployments) AS deployments;

-- ---- create without deploy_now: one transaction, URI once ---------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SET request.headers = '{"x-idempotency-key": "create-app-1"}';
SELECT api.create_database_service(:'env', 'Billing App', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false) AS r \gset
SELECT :'r'::jsonb -> 'service' ->> 'name' AS name, :'r'::jsonb -> 'service' ->> 'slug' AS slug,
       :'r'::jsonb -> 'service' ->> 'visibility' AS visibility, :'r'::jsonb -> 'service' ->> 'engine' AS engine,
       :'r'::jsonb -> 'service' ->> 'version' AS version, :'r'::jsonb -> 'service' ->> 'host' AS host,
       :'r'::jsonb -> 'service' ->> 'port' AS port, :'r'::jsonb ->> 'deployment_id' AS deployment,
       :'r'::jsonb -> 'service' ->> 'database' ~ '^billing_app_[0-9a-f]{8}$' AS db_from_slug,
       :'r'::jsonb -> 'service' ->> 'user' ~ '^u[0-9a-f]{16}$' AS random_user,
       :'r'::jsonb ->> 'connection_uri' ~ '^postgresql://u[0-9a-f]{16}:[A-Za-z0-9_-]{43}@db-1\.internal:6432/billing_app_[0-9a-f]{8}$' AS uri_shape;
SELECT split_part(split_part(:'r'::jsonb ->> 'connection_uri', '@', 1), ':', 3) AS pw \gset
SELECT (:'r'::jsonb -> 'service' ->> 'id') AS svc \gset
-- The replay: same service, no password.
SELECT api.create_database_service(:'env', 'Billing App', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false) AS r2 \gset
SELECT :'r2'::jsonb -> 'service' ->> 'id' = :'svc' AS same_service, :'r2'::jsonb -> 'connection_uri' AS uri_on_replay;
SELECT api.create_database_service(:'env', 'Billing App 2', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
RESET request.headers;
SELECT api.create_database_service(:'env', 'Billing App', 'postgres', '5e5e5e5e-0000-4000-8000-00000000005e', false);
RESET request.jwt.claims;
SELECT key, kind, value IS NOT NULL AS has_value, sealed IS NOT NULL AS sealed FROM databases.config WHERE service_id = :'svc' ORDER BY key;
SELECT action, target_type, details ? 'user' AS names_user FROM pgcloud.audit_logs WHERE id > :audit_before AND target_id = :'svc';
SELECT event_type, payload ? 'connection_uri' OR payload::text LIKE '%' || :'pw' || '%' AS leaks FROM pgcloud.outbox WHERE id > :outbox_before AND aggregate_id = :'svc';
SELECT count(*) AS deployments FROM databases.deployments WHERE service_id = :'svc';
-- The password is in no row of ours in plaintext (idempotency record included).
SELECT count(*) AS plaintext_rows FROM (
    SELECT t::text FROM databases.config t UNION ALL SELECT t::text FROM databases.credentials t
    UNION ALL SELECT t::text FROM pgcloud.idempotency_keys t UNION ALL SELECT t::text FROM pgcloud.audit_logs t
    UNION ALL SELECT t::text FROM pgcloud.outbox t) x(row) WHERE row LIKE '%' || :'pw' || '%';

-- ---- reading it back ------------------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT api.get_service(:'svc') ->> 'status' AS status, api.get_service(:'svc') -> 'latest_deployment' AS latest;
SELECT jsonb_array_length(api.list_services(:'env')) AS services;
SELECT api.get_database_connection(:'svc') ->> 'connection_uri' LIKE '%:' || :'pw' || '@%' AS reveals_password;
SELECT api.get_service('00000000-0000-4000-8000-000000000000');
SELECT api.get_deployment('00000000-0000-4000-8000-000000000000');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d2d2d2d2-0000-4000-8000-000000000002"}';
SELECT pg_temp.try($q$SELECT api.get_service('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.get_database_connection('$q$ || :'svc' || $q$')$q$);
SELECT api.list_services(:'env');
SELECT pg_temp.try($q$SELECT api.delete_service('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.rotate_database_credentials('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.deploy_database_service('$q$ || :'svc' || $q$')$q$);
SET request.jwt.claims = '{"role": "pgcloud_admin", "sub": "adadadad-0000-4000-8000-0000000000ad"}';
SELECT api.get_service(:'svc') ->> 'name' AS admin_sees;
SELECT pg_temp.try($q$SELECT api.get_database_connection('$q$ || :'svc' || $q$')$q$);

-- ---- config ------------------------------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT api.set_config_variable(:'env', 'lower', 'x');
SELECT api.set_config_variable(:'env', '9LIVES', 'x');
SELECT api.set_config_variable(:'env', NULL, 'x');
SELECT api.set_config_variable(:'env', 'LOG_LEVEL', NULL);
SELECT api.set_config_variable(:'env', 'LOG_LEVEL', repeat('x', 32769));
SELECT api.set_config_variable(:'env', 'POSTGRES_USER', 'me', :'svc');
SELECT api.set_config_secret(:'env', 'POSTGRES_PASSWORD', 'mine', :'svc');
SELECT api.unset_config(:'env', 'POSTGRES_DB', :'svc');
SELECT api.set_config_variable(:'env', 'LOG_LEVEL', 'info') - 'id';
SELECT api.set_config_variable(:'env', 'LOG_LEVEL', 'debug', :'svc') - 'id' - 'service_id';
SELECT api.set_config_secret(:'env', 'API_TOKEN', 'tok-123') - 'id';
SELECT c ->> 'key' AS key, c ->> 'kind' AS kind, c ->> 'scope' AS scope,
       CASE WHEN c ->> 'key' IN ('POSTGRES_DB', 'POSTGRES_USER') THEN c ->> 'value' ~ '^[a-z][a-z0-9_]+$' END AS generated,
       CASE WHEN c ->> 'key' NOT IN ('POSTGRES_DB', 'POSTGRES_USER') THEN c ->> 'value' END AS value
  FROM jsonb_array_elements(api.list_config(:'env', :'svc')) c;
SELECT c ->> 'key' AS key, c ->> 'value' AS value FROM jsonb_array_elements(api.list_config(:'env')) c;
SELECT api.reveal_config_secret(:'env', 'API_TOKEN');
SELECT api.reveal_config_secret(:'env', 'LOG_LEVEL');
SELECT api.reveal_config_secret(:'env', 'POSTGRES_PASSWORD', :'svc') ->> 'value' = :'pw' AS password_revealed;
SELECT position('tok-123' IN encode(sealed, 'escape')) AS plaintext_at FROM databases.config WHERE key = 'API_TOKEN';
SELECT api.unset_config(:'env', 'API_TOKEN') ->> 'deleted' AS deleted;
SELECT api.unset_config(:'env', 'API_TOKEN');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d2d2d2d2-0000-4000-8000-000000000002"}';
SELECT api.reveal_config_secret(:'env', 'POSTGRES_PASSWORD', :'svc');
SELECT api.set_config_variable(:'env', 'X', 'y');
SELECT api.list_config(:'env');
RESET request.jwt.claims;
SELECT action FROM pgcloud.audit_logs WHERE id > :audit_before AND action LIKE 'config.%' ORDER BY id;
SELECT databases.config_secret(:'env', NULL, 'LOG_LEVEL') IS NULL AS variables_are_not_secrets;
-- A sealed secret is bound to its slot: copied to another key it does not open.
SELECT pg_temp.try($q$SELECT pgcloud.unseal(sealed, databases.config_context(environment_id, service_id, 'OTHER_KEY'))
                        FROM databases.config WHERE key = 'POSTGRES_PASSWORD'$q$) AS moved_secret;

-- ---- deletion scheduling (the drop itself is in test/t/databases_target.pl) -----------------------------
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "d1d1d1d1-0000-4000-8000-000000000001"}';
SELECT api.delete_service(:'svc') - 'delete_after' - 'service_id';
SELECT pg_temp.try($q$SELECT api.delete_service('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.rotate_database_credentials('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.deploy_database_service('$q$ || :'svc' || $q$')$q$);
SELECT pg_temp.try($q$SELECT api.get_database_connection('$q$ || :'svc' || $q$')$q$);
RESET request.jwt.claims;
SELECT status, delete_after > now() AS after_grace FROM databases.services WHERE id = :'svc';
SELECT databases.slug('My  Fancy--App!'), databases.slug('42 things'), length(databases.slug(repeat('abc', 30)));
SELECT length(databases.random_token(32)) AS token_chars, databases.random_token(32) <> databases.random_token(32) AS differ,
       length(databases.random_hex(8)) AS hex_chars;
SELECT databases.random_token(0);
SELECT databases.random_hex(257);
SELECT left(databases.scram_secret('a-long-enough-password'), 19) AS verifier;
SELECT databases.scram_secret('short');
