-- Database services from the postgres template: one transaction for the row, credentials, config and first deployment.

CREATE FUNCTION databases.service_json(s databases.services) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT jsonb_build_object(
        'id', s.id, 'environment_id', s.environment_id, 'name', s.name, 'slug', s.slug,
        'template_id', s.template_id, 'server_id', s.server_id, 'engine', s.engine, 'version', s.version,
        'host', (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
        'port', s.port, 'visibility', s.visibility, 'database', s.database_name,
        'user', (SELECT c.username FROM databases.credentials c WHERE c.service_id = s.id AND c.status = 'active'),
        'status', s.status, 'created_at', s.created_at, 'delete_after', s.delete_after, 'deleted_at', s.deleted_at,
        'latest_deployment', (SELECT jsonb_build_object('id', d.id, 'number', d.number, 'status', d.status)
                                FROM databases.deployments d WHERE d.service_id = s.id ORDER BY d.number DESC LIMIT 1))
$$;
COMMENT ON FUNCTION databases.service_json(databases.services) IS 'A service as the API shows it (never a password).';

CREATE FUNCTION databases.connection_uri(s databases.services, username text, password text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT format('postgresql://%s:%s@%s:%s/%s', username, password,
                  (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
                  s.port, s.database_name)
$$;
COMMENT ON FUNCTION databases.connection_uri(databases.services, text, text) IS 'postgresql://user:password@private-host:port/database (generated names and base64url passwords need no escaping).';

-- The URI a create or rotate shows once travels beside the idempotency
-- record, never in it: the handler leaves it here and the api function takes it.
CREATE FUNCTION databases.stash_once(value text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog
AS $$ SELECT set_config('pgcloud_databases.shown_once', coalesce(value, ''), false); $$;
COMMENT ON FUNCTION databases.stash_once(text) IS 'Internal: keeps a value to be shown once (a connection URI) for the api function of the same call; never stored in a table. Rolled back with the transaction.';

CREATE FUNCTION databases.take_once() RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog
AS $$
DECLARE
    v text := nullif(current_setting('pgcloud_databases.shown_once', true), '');
BEGIN
    PERFORM set_config('pgcloud_databases.shown_once', '', false);
    RETURN v;
END
$$;
COMMENT ON FUNCTION databases.take_once() IS 'Internal: takes (and clears) the value databases.stash_once() kept in this call; NULL on an idempotent replay.';

CREATE FUNCTION databases.slug(name text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN x ~ '^[a-z]' THEN x ELSE 'db_' || x END
      FROM (SELECT left(btrim(regexp_replace(lower(name), '[^a-z0-9]+', '_', 'g'), '_'), 36) AS x) t
$$;
COMMENT ON FUNCTION databases.slug(text) IS 'A service name made into an identifier stem: lower case, runs of other characters as _, at most 36 characters (39 with the db_ prefix a leading digit gets).';

CREATE FUNCTION databases.new_deployment(service_id uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid := gen_random_uuid();
BEGIN
    INSERT INTO databases.deployments (id, service_id, number, status, next_attempt_at, requested_by)
    VALUES (v_id, service_id,
            coalesce((SELECT max(d.number) FROM databases.deployments d WHERE d.service_id = new_deployment.service_id), 0) + 1,
            'pending', now(), pgcloud.user_id());
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state) VALUES (v_id, NULL, 'pending');
    PERFORM pgcloud.emit('deployment.state_changed', 'database_service', service_id::text,
        jsonb_build_object('deployment_id', v_id, 'service_id', service_id, 'from', NULL, 'to', 'pending'));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION databases.new_deployment(uuid) IS 'Internal: a pending deployment of a service (next number), its history row and deployment.state_changed; wakes the deployer at commit.';

CREATE FUNCTION databases.create_database_service_apply(p_environment_id uuid, p_name text, p_template_id text,
                                                        p_server_id uuid, p_deploy_now boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(p_environment_id, false);
    v_name text := btrim(p_name);
    tpl jsonb := databases.template(p_template_id);
    srv databases.servers;
    s databases.services;
    v_slug text;
    v_db text;
    v_user text := 'u' || databases.random_hex(8);
    v_password text := databases.random_token(32);
    v_cred uuid := gen_random_uuid();
    v_deployment uuid;
    v_status text;
BEGIN
    IF tpl IS NULL THEN
        PERFORM pgcloud.raise('database_template_not_found', format('no template %s', coalesce(left(p_template_id, 80), 'NULL')),
                              'api.list_database_templates() lists them.');
    END IF;
    IF v_name IS NULL OR v_name !~ '^[A-Za-z][A-Za-z0-9 ._-]{0,62}$' THEN
        PERFORM pgcloud.raise('database_service_name_invalid', format('%s is not a valid service name', coalesce(left(p_name, 80), 'NULL')));
    END IF;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = p_server_id AND x.status = 'active';
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('database_server_not_found', format('no active server %s', coalesce(p_server_id::text, 'NULL')));
    END IF;
    IF (SELECT count(*) FROM databases.services x WHERE x.environment_id = e.id AND x.status <> 'deleted')
       >= pgcloud.policy('databases.max_services_per_environment', NULL::int) THEN
        PERFORM pgcloud.raise('database_service_limit', format('environment %s is full', e.id));
    END IF;
    v_slug := databases.slug(v_name);
    v_db := v_slug || '_' || databases.random_hex(4);
    BEGIN
        INSERT INTO databases.services (id, environment_id, owner_id, name, slug, template_id, server_id, engine, version,
                                        port, visibility, database_name, owner_role)
        VALUES (gen_random_uuid(), e.id, e.owner_id, v_name, v_slug, tpl ->> 'id', srv.id, tpl ->> 'engine',
                srv.major_version, srv.port, 'private', v_db, v_db || '_owner')
        RETURNING * INTO s;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('database_service_exists', format('environment %s has a service named %s', e.id, v_name));
    END;
    INSERT INTO databases.credentials (id, service_id, username, password_sealed, status)
    VALUES (v_cred, s.id, v_user, pgcloud.seal(convert_to(v_password, 'UTF8'), 'databases.credential/' || v_cred), 'active');
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_USER', v_user, false);
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_DB', v_db, false);
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_PASSWORD', v_password, true);
    IF p_deploy_now THEN
        v_deployment := databases.new_deployment(s.id);
    END IF;
    PERFORM pgcloud.audit('service.create_database', 'database_service', s.id::text, 'ok',
        jsonb_build_object('environment_id', e.id, 'name', s.name, 'template_id', s.template_id, 'server_id', srv.id,
                           'database', v_db, 'user', v_user, 'deployment_id', v_deployment));
    PERFORM pgcloud.emit('service.created', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'environment_id', e.id, 'owner_id', e.owner_id, 'name', s.name,
                           'template_id', s.template_id, 'server_id', srv.id, 'engine', s.engine, 'version', s.version,
                           'visibility', s.visibility, 'deployment_id', v_deployment));
    IF v_deployment IS NOT NULL AND pgcloud.policy('databases.inline_provisioning', NULL::boolean) THEN
        v_status := databases.provision(v_deployment);
    END IF;
    PERFORM databases.stash_once(databases.connection_uri(s, v_user, v_password));
    RETURN jsonb_build_object('service', databases.service_json(s), 'deployment_id', v_deployment,
                              'deployment_status', (SELECT d.status FROM databases.deployments d WHERE d.id = v_deployment));
END
$$;
COMMENT ON FUNCTION databases.create_database_service_apply(uuid, text, text, uuid, boolean) IS 'Internal to api.create_database_service() (which authorizes): in one transaction the service row, credentials from the CSPRNG (password sealed), config POSTGRES_USER, POSTGRES_DB (variables) and POSTGRES_PASSWORD (secret), the first deployment when deploy_now, the audit row service.create_database and service.created; then provisions inline (policy databases.inline_provisioning). The URI is handed beside the result, never stored.';

CREATE FUNCTION api.create_database_service(environment_id uuid, name text, template_id text, server_id uuid,
                                            deploy_now boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM pgcloud.authorize('user');
    PERFORM databases.stash_once(NULL);
    r := coalesce(
        pgcloud.idempotent('databases.create_database_service',
            jsonb_build_object('environment_id', environment_id, 'name', name, 'template_id', template_id,
                               'server_id', server_id, 'deploy_now', coalesce(deploy_now, false))),
        pgcloud.idempotent_done('databases.create_database_service',
            databases.create_database_service_apply(environment_id, name, template_id, server_id,
                                                    coalesce(deploy_now, false))));
    RETURN r || jsonb_build_object('connection_uri', databases.take_once());
END
$$;
COMMENT ON FUNCTION api.create_database_service(uuid, text, text, uuid, boolean) IS 'Creates a managed PostgreSQL database from a template (postgres) in your environment on a registered server: {service, deployment_id, deployment_status, connection_uri}. Credentials are generated; the URI postgresql://user:password@host:port/db is returned this once (a retry with the same X-Idempotency-Key returns the same service and deployment with connection_uri null; api.get_database_connection() shows it again). With deploy_now the database exists on the server when the call returns (deployment_status running), or the deployer keeps trying (api.get_deployment()). Unknown template, another user''s environment, an unknown server or a denied caller: an error and nothing written.';
SELECT pgcloud.expose('api.create_database_service(uuid, text, text, uuid, boolean)', 'user', 'admin');

CREATE FUNCTION api.get_service(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    RETURN databases.service_json(databases.service_for(get_service.id, true));
END
$$;
COMMENT ON FUNCTION api.get_service(uuid) IS 'One of your database services (admins: any): {id, environment_id, name, slug, template_id, server_id, engine, version, host, port, visibility, database, user, status, created_at, delete_after, deleted_at, latest_deployment}. Never a password.';
SELECT pgcloud.expose('api.get_service(uuid)', 'user', 'admin');

CREATE FUNCTION api.list_services(environment_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(list_services.environment_id, true);
BEGIN
    RETURN coalesce((SELECT jsonb_agg(databases.service_json(s) ORDER BY s.created_at, s.id)
                       FROM databases.services s WHERE s.environment_id = e.id AND s.status <> 'deleted'), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_services(uuid) IS 'The services of one of your environments (admins: any) that are not deleted, oldest first.';
SELECT pgcloud.expose('api.list_services(uuid)', 'user', 'admin');

CREATE FUNCTION api.get_database_connection(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for(get_database_connection.service_id, false);
    c databases.credentials;
    pw text;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    SELECT * INTO c FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active';
    pw := convert_from(pgcloud.unseal(c.password_sealed, 'databases.credential/' || c.id), 'UTF8');
    PERFORM pgcloud.audit('service.reveal_connection', 'database_service', s.id::text, 'ok',
        jsonb_build_object('user', c.username));
    RETURN jsonb_build_object('host', (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
                              'port', s.port, 'user', c.username, 'database', s.database_name,
                              'connection_uri', databases.connection_uri(s, c.username, pw));
END
$$;
COMMENT ON FUNCTION api.get_database_connection(uuid) IS 'How to connect to your database service: {host (the server''s private host), port, user, database, connection_uri (with the password)}. Owner only (not administrators); every call is audited as service.reveal_connection.';
SELECT pgcloud.expose('api.get_database_connection(uuid)', 'user', 'admin');
