-- Credential rotation, deletion, and the deployer job (databases.deploy, run by the scheduler).

CREATE FUNCTION databases.rotate_database_credentials_apply(p_service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for(p_service_id, false, true);
    srv databases.servers;
    old databases.credentials;
    v_user text := 'u' || databases.random_hex(8);
    v_password text := databases.random_token(32);
    v_cred uuid := gen_random_uuid();
    v_until timestamptz := now() + make_interval(secs => pgcloud.policy('databases.rotation_grace_seconds', NULL::int));
    provisioned boolean;
    err text;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    SELECT * INTO old FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active' FOR UPDATE;
    provisioned := EXISTS (SELECT 1 FROM databases.deployments d WHERE d.service_id = s.id AND d.status = 'running');
    UPDATE databases.credentials x SET status = 'retiring', remove_after = v_until WHERE x.id = old.id;
    INSERT INTO databases.credentials (id, service_id, username, password_sealed, status)
    VALUES (v_cred, s.id, v_user, pgcloud.seal(convert_to(v_password, 'UTF8'), 'databases.credential/' || v_cred), 'active');
    PERFORM databases.set_config_in_tx(s.environment_id, s.id, 'POSTGRES_USER', v_user, false);
    PERFORM databases.set_config_in_tx(s.environment_id, s.id, 'POSTGRES_PASSWORD', v_password, true);
    -- The new login works when the call returns: made now on the server (the old one stays until v_until).
    IF provisioned THEN
        BEGIN
            PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
                srv.maintenance_db,
                ARRAY[databases.roles_sql(s, v_user, databases.scram_secret(v_password),
                                          pgcloud.policy('databases.connection_limit', NULL::int))],
                pgcloud.policy('databases.remote_timeout_ms', NULL::int));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            PERFORM pgcloud.raise('database_server_unreachable', left(pgcloud.sanitize(err), 500),
                                  'Nothing was changed; try again.');
        END;
    END IF;
    PERFORM pgcloud.audit('service.rotate_credentials', 'database_service', s.id::text, 'ok',
        jsonb_build_object('user', v_user, 'previous_user', old.username, 'previous_valid_until', v_until));
    PERFORM pgcloud.emit('database.credentials_rotated', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'user', v_user, 'previous_user', old.username,
                           'previous_valid_until', v_until));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    PERFORM databases.stash_once(databases.connection_uri(s, v_user, v_password));
    RETURN jsonb_build_object('service_id', s.id, 'user', v_user, 'previous_user', old.username,
                              'previous_valid_until', v_until, 'applied', provisioned);
END
$$;
COMMENT ON FUNCTION databases.rotate_database_credentials_apply(uuid) IS 'Internal to api.rotate_database_credentials() (which authorizes): a new login role and password (CSPRNG, sealed; config POSTGRES_USER and POSTGRES_PASSWORD updated) made on the server before the call returns; the previous one retires at now + databases.rotation_grace_seconds. Audited as service.rotate_credentials, announced as database.credentials_rotated. If the server cannot be reached nothing changes.';

CREATE FUNCTION api.rotate_database_credentials(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM pgcloud.authorize('user');
    PERFORM databases.stash_once(NULL);
    r := coalesce(pgcloud.idempotent('databases.rotate_database_credentials', jsonb_build_object('service_id', service_id)),
               pgcloud.idempotent_done('databases.rotate_database_credentials', databases.rotate_database_credentials_apply(service_id)));
    RETURN r || jsonb_build_object('connection_uri', databases.take_once());
END
$$;
COMMENT ON FUNCTION api.rotate_database_credentials(uuid) IS 'New credentials for your service: {service_id, user, previous_user, previous_valid_until, applied, connection_uri}. The new login works when the call returns; the previous one keeps working until previous_valid_until (policy databases.rotation_grace_seconds) and is then dropped. The URI is shown this once (a replay with the same X-Idempotency-Key gives connection_uri null).';
SELECT pgcloud.expose('api.rotate_database_credentials(uuid)', 'user', 'admin');

CREATE FUNCTION databases.delete_service_apply(p_service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for(p_service_id, true, true);
    v_after timestamptz := now() + make_interval(secs => pgcloud.policy('databases.delete_grace_seconds', NULL::int));
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    UPDATE databases.services x SET status = 'deleting', delete_after = v_after WHERE x.id = s.id;
    PERFORM databases.set_deployment_state(d.id, 'stopped', 'the service is being deleted')
       FROM databases.deployments d WHERE d.service_id = s.id AND d.status IN ('pending', 'provisioning', 'running');
    PERFORM pgcloud.audit('service.delete', 'database_service', s.id::text, 'ok',
        jsonb_build_object('name', s.name, 'database', s.database_name, 'delete_after', v_after));
    PERFORM pgcloud.emit('service.deletion_scheduled', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'environment_id', s.environment_id, 'delete_after', v_after));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    RETURN jsonb_build_object('service_id', s.id, 'status', 'deleting', 'delete_after', v_after);
END
$$;
COMMENT ON FUNCTION databases.delete_service_apply(uuid) IS 'Internal to api.delete_service() (which authorizes): marks the service deleting (its deployments stopped) and schedules the drop after databases.delete_grace_seconds; audited as service.delete, announced as service.deletion_scheduled.';

CREATE FUNCTION api.delete_service(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('databases.delete_service', jsonb_build_object('service_id', service_id)),
                    pgcloud.idempotent_done('databases.delete_service', databases.delete_service_apply(service_id)));
END
$$;
COMMENT ON FUNCTION api.delete_service(uuid) IS 'Deletes your database service (admins: any): {service_id, status: deleting, delete_after}. After the grace period (policy databases.delete_grace_seconds) the deployer job drops the database and its roles on the server and the service becomes deleted (service.deleted). Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.delete_service(uuid)', 'user', 'admin');

-- Drops a service's database and roles on its server (idempotent).
CREATE FUNCTION databases.drop_remote(s databases.services) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $body$
DECLARE
    srv databases.servers;
    roles text := '';
    r record;
BEGIN
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    FOR r IN SELECT c.username FROM databases.credentials c WHERE c.service_id = s.id LOOP
        roles := roles || format('    DROP ROLE IF EXISTS %I;%s', r.username, chr(10));
    END LOOP;
    PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
        srv.maintenance_db,
        ARRAY[format('DROP DATABASE IF EXISTS %I WITH (FORCE)', s.database_name),
              format($f$DO $pgcloud$
BEGIN
%s    DROP ROLE IF EXISTS %I;
END
$pgcloud$$f$, roles, s.owner_role)],
        pgcloud.policy('databases.remote_timeout_ms', NULL::int));
END
$body$;
COMMENT ON FUNCTION databases.drop_remote(databases.services) IS 'Internal: DROP DATABASE ... WITH (FORCE) and the drop of its login and owner roles on the server; idempotent.';

-- Drops one retired login role (its sessions ended, anything it owns handed to the owner role).
CREATE FUNCTION databases.retire_remote(s databases.services, username text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $body$
DECLARE
    srv databases.servers;
    stmt text;
BEGIN
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    stmt := format($f$DO $pgcloud$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %1$L) THEN
        PERFORM pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a WHERE a.usename = %1$L;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %2$L) THEN
            REASSIGN OWNED BY %1$I TO %2$I;
        END IF;
        DROP OWNED BY %1$I;
        DROP ROLE %1$I;
    END IF;
END
$pgcloud$$f$, username, s.owner_role);
    BEGIN
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
            s.database_name, ARRAY[stmt], pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    EXCEPTION WHEN invalid_catalog_name THEN
        -- The database was never made: the role can only be in the maintenance database's view.
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
            srv.maintenance_db, ARRAY[stmt], pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    END;
END
$body$;
COMMENT ON FUNCTION databases.retire_remote(databases.services, text) IS 'Internal: ends a retired login role''s sessions, reassigns what it owns to the owner role and drops it; idempotent.';

CREATE FUNCTION databases.retry_delay(attempt integer) RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT make_interval(secs => least(300, pgcloud.policy('databases.deploy_retry_base_seconds', NULL::int) * power(2, greatest(attempt, 1) - 1))) $$;
COMMENT ON FUNCTION databases.retry_delay(integer) IS 'Backoff before retry number attempt of the deployer job''s remote work.';

CREATE FUNCTION databases.remove_due() RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services;
    c databases.credentials;
    err text;
BEGIN
    -- 1. A service whose deletion grace is over.
    SELECT * INTO s FROM databases.services x
     WHERE x.status = 'deleting' AND x.delete_after <= now()
     ORDER BY x.delete_after LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        BEGIN
            PERFORM databases.drop_remote(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            err := left(pgcloud.sanitize(err), 500);
        END;
        IF err IS NOT NULL THEN
            UPDATE databases.services x SET last_error = err, delete_after = now() + databases.retry_delay(2) WHERE x.id = s.id;
            PERFORM pgcloud.audit('service.delete_failed', 'database_service', s.id::text, 'failed', jsonb_build_object('reason', err));
            RETURN format('service %s: deletion failed, retried later', s.id);
        END IF;
        UPDATE databases.services x SET status = 'deleted', deleted_at = now(), last_error = NULL WHERE x.id = s.id;
        PERFORM databases.set_deployment_state(d.id, 'deleted', 'the service was deleted')
           FROM databases.deployments d WHERE d.service_id = s.id AND d.status <> 'deleted';
        UPDATE databases.credentials x SET status = 'removed', password_sealed = NULL, removed_at = now()
         WHERE x.service_id = s.id AND x.status <> 'removed';
        DELETE FROM databases.config x WHERE x.service_id = s.id;
        PERFORM pgcloud.audit('service.deleted', 'database_service', s.id::text, 'ok',
            jsonb_build_object('database', s.database_name, 'server_id', s.server_id));
        PERFORM pgcloud.emit('service.deleted', 'database_service', s.id::text,
            jsonb_build_object('service_id', s.id, 'environment_id', s.environment_id));
        RETURN format('service %s: deleted', s.id);
    END IF;
    -- 2. A retired credential whose grace is over.
    SELECT * INTO c FROM databases.credentials x
     WHERE x.status = 'retiring' AND x.remove_after <= now()
     ORDER BY x.remove_after LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        SELECT * INTO s FROM databases.services x WHERE x.id = c.service_id;
        IF s.status = 'active' THEN
            BEGIN
                PERFORM databases.retire_remote(s, c.username);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                err := left(pgcloud.sanitize(err), 500);
            END;
        ELSE
            -- Deleting: the drop takes every role of the service; deleted: gone already.
            IF s.status = 'deleting' THEN
                UPDATE databases.credentials x SET remove_after = s.delete_after WHERE x.id = c.id;
                RETURN format('service %s: retired login left to the deletion', s.id);
            END IF;
        END IF;
        IF err IS NOT NULL THEN
            UPDATE databases.credentials x SET last_error = err, remove_after = now() + databases.retry_delay(2) WHERE x.id = c.id;
            RETURN format('service %s: removal of a retired login failed, retried later', s.id);
        END IF;
        UPDATE databases.credentials x SET status = 'removed', password_sealed = NULL, removed_at = now(), last_error = NULL
         WHERE x.id = c.id;
        PERFORM pgcloud.audit('service.credentials_removed', 'database_service', s.id::text, 'ok',
            jsonb_build_object('user', c.username));
        RETURN format('service %s: retired login removed', s.id);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION databases.remove_due() IS 'Internal to the deployer job: one due deletion (database and roles dropped on the server, service deleted, service.deleted) or one due removal of a retired login role; a description of what was done, NULL when nothing is due.';

-- The deployer job. The scheduler runs it every databases.deployer_interval_ms
-- and at once when a create, deploy, rotation or deletion commits (they call
-- pgcloud.wake_scheduler()), each run in its own transaction. A provisioning
-- attempt takes two runs, so that "provisioning" is committed (and visible)
-- before the server is talked to: one run begins it (begin_attempt,
-- claimed_at) and wakes the scheduler, the next does the remote work
-- (finish_attempt). A claim is continued only within its lease
-- (next_attempt_at); after that (the run died: kill -9, a timeout) the attempt
-- is begun again and counted, so the maximum attempts still bound it. A run
-- that did something wakes the scheduler again, so what is due drains at once.
-- The service's tables are locked without waiting first: a DROP EXTENSION (or
-- anything holding them exclusively) makes the job step aside instead of
-- deadlocking with it.
CREATE FUNCTION databases.deploy() RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid;
    r text;
BEGIN
    BEGIN
        LOCK TABLE databases.environments, databases.servers, databases.services, databases.credentials,
                   databases.config, databases.deployments, databases.deployment_history,
                   databases.deployment_transitions IN ACCESS SHARE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'busy: the service''s tables are locked; next run';
    END;
    -- 1. An attempt the previous run began (provisioning committed): the remote work.
    SELECT d.id INTO v_id FROM databases.deployments d
     WHERE d.status = 'provisioning' AND d.claimed_at IS NOT NULL AND d.next_attempt_at > now()
     ORDER BY d.claimed_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_id IS NOT NULL THEN
        UPDATE databases.deployments x SET claimed_at = NULL WHERE x.id = v_id;
        r := format('deployment %s: %s', v_id, databases.finish_attempt(v_id));
    ELSE
        -- 2. A deployment due for an attempt: begun here, continued by the next run.
        SELECT d.id INTO v_id FROM databases.deployments d
         WHERE d.status IN ('pending', 'provisioning') AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_id IS NOT NULL THEN
            IF databases.begin_attempt(v_id) THEN
                UPDATE databases.deployments x SET claimed_at = clock_timestamp() WHERE x.id = v_id;
                r := format('deployment %s: provisioning begun', v_id);
            ELSE
                UPDATE databases.deployments x SET claimed_at = NULL WHERE x.id = v_id;
                r := format('deployment %s: not provisioned (service deleting)', v_id);
            END IF;
        ELSE
            -- 3. A due deletion or removal of a retired login.
            r := databases.remove_due();
        END IF;
    END IF;
    IF r IS NULL THEN
        RETURN 'idle';
    END IF;
    PERFORM pgcloud.wake_scheduler();   -- run again at once: the claimed attempt, or what else is due
    RETURN r;
END
$$;
COMMENT ON FUNCTION databases.deploy() IS 'The deployer job (databases.deploy), run by the scheduler every databases.deployer_interval_ms and when woken: one unit per run, each in its own transaction: the remote work of the attempt the previous run began (databases.finish_attempt), else the start of a due provisioning attempt (provisioning committed before the server is talked to; the scheduler is woken for the remote work), else a due deletion or removal of a retired login (databases.remove_due). Returns what it did, or idle (busy when the service''s tables are locked, e.g. by DROP EXTENSION).';
