-- Deployments: the state machine and the provisioning that really happens on the target server.

CREATE FUNCTION databases.set_deployment_state(deployment_id uuid, to_state text, why text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF d.status = to_state THEN
        RETURN;
    END IF;
    UPDATE databases.deployments x
       SET status = to_state, reason = coalesce(why, x.reason), updated_at = now(),
           running_at = CASE WHEN to_state = 'running' THEN now() ELSE x.running_at END,
           next_attempt_at = CASE WHEN to_state IN ('pending', 'provisioning') THEN x.next_attempt_at END
     WHERE x.id = deployment_id;
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state, reason)
    VALUES (deployment_id, d.status, to_state, why);
    PERFORM pgcloud.emit('deployment.state_changed', 'database_service', d.service_id::text,
        jsonb_build_object('deployment_id', d.id, 'service_id', d.service_id, 'from', d.status, 'to', to_state,
                           'reason', why));
END
$$;
COMMENT ON FUNCTION databases.set_deployment_state(uuid, text, text) IS 'Internal: moves a deployment to a state (the transition trigger guards it), with a history row and deployment.state_changed.';

-- The remote transaction that makes the owner role, hands it the database and
-- (re)creates the service's active login role: all or nothing, after the database exists.
CREATE FUNCTION databases.roles_sql(s databases.services, username text, verifier text, conn_limit integer) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $body$
    SELECT format($f$DO $pgcloud$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %1$L) THEN
        CREATE ROLE %1$I NOLOGIN;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE pg_catalog.format('GRANT %%I TO %%I', %1$L, current_user);
    END IF;
    ALTER DATABASE %2$I OWNER TO %1$I;
    ALTER DATABASE %2$I CONNECTION LIMIT %5$s;
    REVOKE ALL ON DATABASE %2$I FROM PUBLIC;
    GRANT CONNECT, TEMPORARY ON DATABASE %2$I TO %1$I;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %3$L) THEN
        CREATE ROLE %3$I LOGIN PASSWORD %4$L CONNECTION LIMIT %5$s IN ROLE %1$I;
    ELSE
        ALTER ROLE %3$I LOGIN PASSWORD %4$L CONNECTION LIMIT %5$s;
        GRANT %1$I TO %3$I;
    END IF;
    ALTER ROLE %3$I SET role = %1$L;
    COMMENT ON DATABASE %2$I IS %6$L;
END
$pgcloud$$f$, s.owner_role, s.database_name, username, verifier, conn_limit,
               format('pgcloud databases service %s', s.id))
$body$;
COMMENT ON FUNCTION databases.roles_sql(databases.services, text, text, integer) IS 'Internal: the DO block (one remote transaction) that creates the owner role, gives it the database (CONNECT revoked from PUBLIC), and creates or re-keys a login role in it with a SCRAM verifier; idempotent.';

-- A provisioning attempt in two steps, so that "provisioning" is visible while
-- the server is being talked to: begin_attempt (the deployer job commits it in
-- one run and does the remote work in the next; next_attempt_at is the lease and the backoff)
-- and finish_attempt. Inline (create, deploy) both run in the caller's transaction.
CREATE FUNCTION databases.begin_attempt(deployment_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
    s databases.services;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF NOT FOUND OR d.status NOT IN ('pending', 'provisioning') THEN
        RETURN false;
    END IF;
    SELECT * INTO s FROM databases.services x WHERE x.id = d.service_id;
    IF s.status <> 'active' THEN
        PERFORM databases.set_deployment_state(d.id, 'stopped', 'the service is being deleted');
        RETURN false;
    END IF;
    PERFORM databases.set_deployment_state(d.id, 'provisioning');
    UPDATE databases.deployments x
       SET attempts = x.attempts + 1, updated_at = now(),
           next_attempt_at = now() + greatest(databases.retry_delay(x.attempts + 1),
                                              make_interval(secs => 2 * pgcloud.policy('databases.remote_timeout_ms', NULL::int) / 1000.0))
     WHERE x.id = d.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION databases.begin_attempt(uuid) IS 'Internal: starts a provisioning attempt (provisioning, attempts + 1, next_attempt_at = the retry time, which is also the lease should the attempt never finish). False when there is nothing to do.';

CREATE FUNCTION databases.finish_attempt(deployment_id uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
    s databases.services;
    srv databases.servers;
    c databases.credentials;
    admin_pw text;
    pw text;
    timeout_ms int := pgcloud.policy('databases.remote_timeout_ms', NULL::int);
    conn_limit int := pgcloud.policy('databases.connection_limit', NULL::int);
    max_attempts int := pgcloud.policy('databases.deploy_max_attempts', NULL::int);
    err text;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF NOT FOUND OR d.status <> 'provisioning' THEN
        RETURN d.status;
    END IF;
    SELECT * INTO s FROM databases.services x WHERE x.id = d.service_id;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    SELECT * INTO c FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active';
    BEGIN
        admin_pw := databases.server_admin_password(srv);
        pw := convert_from(pgcloud.unseal(c.password_sealed, 'databases.credential/' || c.id), 'UTF8');
        -- 1. The database (CREATE DATABASE cannot run in a transaction block).
        IF databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
               ARRAY[format('SELECT count(*) FROM pg_catalog.pg_database WHERE datname = %L', s.database_name)],
               timeout_ms) = '0' THEN
            PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
                ARRAY[format('CREATE DATABASE %I CONNECTION LIMIT %s', s.database_name, conn_limit)], timeout_ms);
        END IF;
        -- 2. Owner role, ownership, CONNECT, login role: one remote transaction.
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
            ARRAY[databases.roles_sql(s, c.username, databases.scram_secret(pw), conn_limit)], timeout_ms);
        -- 3. The generated credentials really log in.
        IF pgcloud.policy('databases.verify_login', NULL::boolean) THEN
            PERFORM databases.remote_exec(srv.host, srv.port, c.username, pw, s.database_name,
                ARRAY['SELECT 1'], timeout_ms);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        err := left(pgcloud.sanitize(err), 500);
    END;
    IF err IS NULL THEN
        PERFORM databases.set_deployment_state(d.id, 'running');
        UPDATE databases.deployments x SET reason = NULL WHERE x.id = d.id;
        UPDATE databases.servers x SET checked_at = now() WHERE x.id = srv.id;
        -- A newer running deployment supersedes the older ones.
        PERFORM databases.set_deployment_state(o.id, 'stopped', format('superseded by deployment %s', d.number))
           FROM databases.deployments o
          WHERE o.service_id = s.id AND o.id <> d.id AND o.status IN ('running', 'pending', 'provisioning') AND o.number < d.number;
        PERFORM pgcloud.audit('deployment.running', 'deployment', d.id::text, 'ok',
            jsonb_build_object('service_id', s.id, 'attempts', d.attempts));
        RETURN 'running';
    END IF;
    IF d.attempts >= max_attempts THEN
        PERFORM databases.set_deployment_state(d.id, 'failed', err);
        PERFORM pgcloud.audit('deployment.failed', 'deployment', d.id::text, 'failed',
            jsonb_build_object('service_id', s.id, 'attempts', d.attempts, 'reason', err));
        RETURN 'failed';
    END IF;
    UPDATE databases.deployments x
       SET reason = err, updated_at = now(), next_attempt_at = now() + databases.retry_delay(d.attempts)
     WHERE x.id = d.id;
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state, reason)
    VALUES (d.id, 'provisioning', 'provisioning', err);
    RETURN 'provisioning';
END
$$;
COMMENT ON FUNCTION databases.finish_attempt(uuid) IS 'Internal: the remote work of a provisioning attempt, as the server''s administrator: the database (CONNECTION LIMIT from policy) if missing, then in one remote transaction the owner role, ownership, CONNECT revoked from PUBLIC, and the login role with the SCRAM verifier of the generated password; then a login with the generated credentials. Idempotent. Success: running (older deployments stopped). Failure: the reason recorded and a retry scheduled with backoff, or failed after databases.deploy_max_attempts.';

CREATE FUNCTION databases.provision(deployment_id uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    IF NOT databases.begin_attempt(deployment_id) THEN
        RETURN (SELECT d.status FROM databases.deployments d WHERE d.id = deployment_id);
    END IF;
    RETURN databases.finish_attempt(deployment_id);
END
$$;
COMMENT ON FUNCTION databases.provision(uuid) IS 'One whole provisioning attempt in the caller''s transaction (create and deploy do it inline); returns the deployment''s status afterwards.';

CREATE FUNCTION databases.deploy_database_service_apply(p_service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for(p_service_id, false, true);
    v_deployment uuid;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    v_deployment := databases.new_deployment(s.id);
    PERFORM pgcloud.audit('service.deploy', 'database_service', s.id::text, 'ok', jsonb_build_object('deployment_id', v_deployment));
    IF pgcloud.policy('databases.inline_provisioning', NULL::boolean) THEN
        PERFORM databases.provision(v_deployment);
    END IF;
    RETURN jsonb_build_object('service_id', s.id, 'deployment_id', v_deployment,
                              'deployment_status', (SELECT d.status FROM databases.deployments d WHERE d.id = v_deployment));
END
$$;
COMMENT ON FUNCTION databases.deploy_database_service_apply(uuid) IS 'Internal to api.deploy_database_service() (which authorizes): a new deployment of an active service, audited as service.deploy, provisioned inline when policy says so.';

CREATE FUNCTION api.deploy_database_service(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('databases.deploy_database_service', jsonb_build_object('service_id', service_id)),
                    pgcloud.idempotent_done('databases.deploy_database_service', databases.deploy_database_service_apply(service_id)));
END
$$;
COMMENT ON FUNCTION api.deploy_database_service(uuid) IS 'Deploys your service (again): a new deployment that provisions whatever is missing on the server (the data stays); {service_id, deployment_id, deployment_status}. A service created without deploy_now gets its database this way. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.deploy_database_service(uuid)', 'user', 'admin');

CREATE FUNCTION api.get_deployment(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
BEGIN
    PERFORM pgcloud.authorize('user');
    SELECT * INTO d FROM databases.deployments x WHERE x.id = get_deployment.id;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('deployment_not_found', format('no deployment %s', get_deployment.id));
    END IF;
    BEGIN
        PERFORM databases.service_for(d.service_id, true);
    EXCEPTION WHEN SQLSTATE 'PGRST' THEN
        PERFORM pgcloud.raise('deployment_not_found', format('no deployment %s', get_deployment.id));
    END;
    RETURN jsonb_build_object('id', d.id, 'service_id', d.service_id, 'number', d.number, 'status', d.status,
                              'reason', d.reason, 'attempts', d.attempts, 'next_attempt_at', d.next_attempt_at,
                              'created_at', d.created_at, 'updated_at', d.updated_at, 'running_at', d.running_at,
                              'history', (SELECT jsonb_agg(jsonb_build_object('from', h.from_state, 'to', h.to_state,
                                                                              'reason', h.reason, 'at', h.at) ORDER BY h.id)
                                            FROM databases.deployment_history h WHERE h.deployment_id = d.id));
END
$$;
COMMENT ON FUNCTION api.get_deployment(uuid) IS 'A deployment of your service (admins: any): {id, service_id, number, status (pending, provisioning, running, failed, stopped, deleted), reason (why the last attempt failed), attempts, next_attempt_at, created_at, updated_at, running_at, history [{from, to, reason, at}]}.';
SELECT pgcloud.expose('api.get_deployment(uuid)', 'user', 'admin');
