-- Environments (users) and target servers (operators).

CREATE FUNCTION databases.environment_json(e databases.environments) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT jsonb_build_object('id', e.id, 'name', e.name, 'owner_id', e.owner_id, 'created_at', e.created_at,
                              'services', (SELECT count(*) FROM databases.services s
                                            WHERE s.environment_id = e.id AND s.status <> 'deleted'))
$$;
COMMENT ON FUNCTION databases.environment_json(databases.environments) IS 'An environment as the API shows it.';

CREATE FUNCTION databases.create_environment_apply(p_name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_name text := btrim(p_name);
    e databases.environments;
BEGIN
    IF v_name IS NULL OR v_name !~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$' THEN
        PERFORM pgcloud.raise('environment_name_invalid', format('%s is not a valid environment name', coalesce(left(p_name, 80), 'NULL')));
    END IF;
    BEGIN
        INSERT INTO databases.environments (id, owner_id, name) VALUES (gen_random_uuid(), v_user, v_name)
        RETURNING * INTO e;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('environment_exists', format('you already have an environment named %s', v_name));
    END;
    PERFORM pgcloud.audit('environment.create', 'environment', e.id::text, 'ok', jsonb_build_object('name', e.name));
    PERFORM pgcloud.emit('environment.created', 'environment', e.id::text,
        jsonb_build_object('environment_id', e.id, 'owner_id', e.owner_id, 'name', e.name));
    RETURN databases.environment_json(e);
END
$$;
COMMENT ON FUNCTION databases.create_environment_apply(text) IS 'Internal to api.create_environment() (which authorizes): creates it for the calling user, audits environment.create, emits environment.created.';

CREATE FUNCTION api.create_environment(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('databases.create_environment', jsonb_build_object('name', name)),
                    pgcloud.idempotent_done('databases.create_environment', databases.create_environment_apply(name)));
END
$$;
COMMENT ON FUNCTION api.create_environment(text) IS 'Creates an environment you own (name: 1-63 letters, digits, spaces, dots, dashes, underscores; unique among yours): {id, name, owner_id, created_at, services}. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.create_environment(text)', 'user', 'admin');

CREATE FUNCTION api.list_environments() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    RETURN coalesce((SELECT jsonb_agg(databases.environment_json(e) ORDER BY e.created_at, e.id)
                       FROM databases.environments e WHERE e.owner_id = v_user), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_environments() IS 'Your environments: [{id, name, owner_id, created_at, services}].';
SELECT pgcloud.expose('api.list_environments()', 'user', 'admin');

CREATE FUNCTION api.get_environment(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    RETURN databases.environment_json(databases.environment_for(get_environment.id, true));
END
$$;
COMMENT ON FUNCTION api.get_environment(uuid) IS 'One of your environments (admins: any); another user''s is environment_not_found.';
SELECT pgcloud.expose('api.get_environment(uuid)', 'user', 'admin');

CREATE FUNCTION databases.server_admin_password(s databases.servers) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT convert_from(pgcloud.unseal(s.admin_password_sealed, 'databases.server/' || s.id), 'UTF8') $$;
COMMENT ON FUNCTION databases.server_admin_password(databases.servers) IS 'Internal: the server''s administrator password, unsealed for one conversation with it.';

-- Connects as the administrator and returns {version_num, privileged}.
CREATE FUNCTION databases.probe_server(host text, port integer, admin_user text, admin_password text, dbname text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r text;
BEGIN
    r := databases.remote_exec(host, port, admin_user, admin_password, dbname,
        ARRAY[$q$SELECT pg_catalog.json_build_object('version_num', pg_catalog.current_setting('server_version_num')::int,
                  'privileged', r.rolsuper OR (r.rolcreaterole AND r.rolcreatedb))
                FROM pg_catalog.pg_roles r WHERE r.rolname = current_user$q$],
        pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    RETURN r::jsonb;
END
$$;
COMMENT ON FUNCTION databases.probe_server(text, integer, text, text, text) IS 'Internal: connects to a server as its administrator; {version_num, privileged (superuser, or CREATEROLE and CREATEDB)}. Errors propagate.';

CREATE FUNCTION databases.admin_register_database_server_apply(p_name text, p_host text, p_port integer, p_admin_user text,
                                                               p_admin_password text, p_private_host text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid := gen_random_uuid();
    v_name text := p_name;
    v_host text := p_host;
    v_port integer := p_port;
    v_user text := p_admin_user;
    v_private text := nullif(p_private_host, '');
    probe jsonb;
    err text;
    s databases.servers;
BEGIN
    IF v_name IS NULL OR v_name !~ '^[a-z][a-z0-9-]{0,62}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'name must be 1-63 lower-case letters, digits and dashes, starting with a letter');
    END IF;
    IF v_host IS NULL OR v_host !~ '^[^\s[:cntrl:]]{1,255}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'host must be 1-255 characters without spaces or control characters');
    END IF;
    IF v_private IS NOT NULL AND v_private !~ '^[^\s[:cntrl:]/@:]{1,255}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'private_host must be a host name or address');
    END IF;
    IF v_port IS NULL OR v_port NOT BETWEEN 1 AND 65535 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'port must be between 1 and 65535');
    END IF;
    IF v_user IS NULL OR length(v_user) NOT BETWEEN 1 AND 63 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'admin_user must be 1-63 characters');
    END IF;
    IF p_admin_password IS NULL OR length(p_admin_password) NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'admin_password must be 1-1024 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM databases.servers x WHERE x.name = v_name) THEN
        PERFORM pgcloud.raise('database_server_exists', format('a server named %s is registered', v_name));
    END IF;
    BEGIN
        probe := databases.probe_server(v_host, v_port, v_user, p_admin_password, 'postgres');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        PERFORM pgcloud.raise('database_server_unreachable', pgcloud.sanitize(err));
    END;
    IF NOT (probe ->> 'privileged')::boolean THEN
        PERFORM pgcloud.raise('database_server_invalid', format('role %s is neither a superuser nor has CREATEROLE and CREATEDB', v_user));
    END IF;
    BEGIN
        INSERT INTO databases.servers (id, name, host, port, private_host, admin_user, admin_password_sealed,
                                       major_version, server_version_num, registered_by)
        VALUES (v_id, v_name, v_host, v_port, v_private, v_user,
                pgcloud.seal(convert_to(p_admin_password, 'UTF8'), 'databases.server/' || v_id),
                (probe ->> 'version_num')::int / 10000, (probe ->> 'version_num')::int, pgcloud.user_id())
        RETURNING * INTO s;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('database_server_exists', format('a server named %s is registered', v_name));
    END;
    PERFORM pgcloud.audit('database_server.register', 'database_server', s.id::text, 'ok',
        jsonb_build_object('name', s.name, 'host', s.host, 'port', s.port, 'private_host', s.private_host,
                           'admin_user', s.admin_user, 'major_version', s.major_version));
    PERFORM pgcloud.emit('database_server.registered', 'database_server', s.id::text,
        jsonb_build_object('server_id', s.id, 'name', s.name, 'major_version', s.major_version));
    RETURN jsonb_build_object('id', s.id, 'name', s.name, 'major_version', s.major_version,
                              'server_version_num', s.server_version_num);
END
$$;
COMMENT ON FUNCTION databases.admin_register_database_server_apply(text, text, integer, text, text, text) IS 'Internal to api.admin_register_database_server() (which authorizes): validates, connects as the administrator (reachable, privileged, version), stores the password sealed, audits database_server.register (without the password), emits database_server.registered.';

CREATE FUNCTION api.admin_register_database_server(name text, host text, port integer, admin_user text,
                                                   admin_password text, private_host text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('databases.admin_register_database_server',
            jsonb_build_object('name', name, 'host', host, 'port', port, 'admin_user', admin_user,
                               'admin_password', admin_password, 'private_host', private_host)),
        pgcloud.idempotent_done('databases.admin_register_database_server',
            databases.admin_register_database_server_apply(name, host, port, admin_user, admin_password, private_host)));
END
$$;
COMMENT ON FUNCTION api.admin_register_database_server(text, text, integer, text, text, text) IS 'Operators: registers a target PostgreSQL server (admin_user: a superuser, or a role with CREATEROLE and CREATEDB). The server is checked reachable and its major version recorded; the password is stored sealed. private_host is what customers'' URIs name (default: host). Returns {id, name, major_version, server_version_num}.';
SELECT pgcloud.expose('api.admin_register_database_server(text, text, integer, text, text, text)', 'admin');

CREATE FUNCTION api.admin_list_database_servers() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_build_object('id', s.id, 'name', s.name, 'host', s.host, 'port', s.port,
                                            'private_host', s.private_host, 'admin_user', s.admin_user,
                                            'major_version', s.major_version, 'status', s.status,
                                            'services', (SELECT count(*) FROM databases.services x
                                                          WHERE x.server_id = s.id AND x.status <> 'deleted'),
                                            'running_deployments', (SELECT count(*) FROM databases.deployments d
                                                                      JOIN databases.services x ON x.id = d.service_id
                                                                     WHERE x.server_id = s.id AND d.status = 'running'),
                                            'created_at', s.created_at, 'checked_at', s.checked_at)
                         ORDER BY s.name)
          FROM databases.servers s), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_list_database_servers() IS 'Operators: the target servers with their load: [{id, name, host, port, private_host, admin_user, major_version, status, services, running_deployments, created_at, checked_at}] (never the password).';
SELECT pgcloud.expose('api.admin_list_database_servers()', 'admin');
