-- pgcloud_appruntime install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_appruntime" to load this file. \quit

SELECT pgcloud.service_begin('appruntime');
-- source: sql/appruntime/00_catalogue.sql
-- pgcloud_appruntime: application manifests and instances on allocations.
-- Schema appruntime, owned by pgcloud_svc_appruntime.
--
-- Decisions:
--   * A manifest is a JSON document {name, version, start, stop, ports,
--     resources, env}: start and stop are shell commands run on the node as
--     the allocation owner's POSIX user; ports are the TCP ports the app
--     serves on the node (the first one is probed); env is the environment
--     schema {NAME: {type: string|integer|boolean, required, default}}.
--     Administrators publish to the catalogue (owner NULL); users publish
--     their own. launch_app names one as "name" or "name@version" (own
--     manifests first, then the catalogue; newest version when none given).
--   * The process is started and stopped by the app runtime agent
--     (termrelay/pgcloud-appagent, pgcloud_service with scope apps:run) over
--     SSH with a platform certificate (api.service_mint_access): a
--     systemd-run --user unit where a user manager runs, else a supervised
--     process group. An instance is running only once its port answers.
--   * States: launch -> starting -> running -> stopping -> stopped; failed;
--     released when the allocation ends. The transition trigger guards them.
--   * Members: owner, editor, viewer. Owners add members; owners and editors
--     stop the app and may open terminals to its allocation (terminal keeps a
--     read model of app.member_added); viewers only look.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('app_manifest_invalid',     400, 'The application manifest is not valid.', 'appruntime'),
    ('app_manifest_not_found',   404, 'No such application manifest.', 'appruntime'),
    ('app_env_invalid',          400, 'The environment does not match the manifest''s schema.', 'appruntime'),
    ('app_instance_not_found',   404, 'The application instance does not exist.', 'appruntime'),
    ('app_not_stoppable',        409, 'The application instance is not running.', 'appruntime'),
    ('app_member_role_invalid',  400, 'The role must be owner, editor or viewer.', 'appruntime'),
    ('app_user_not_found',       404, 'No such user.', 'appruntime');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_found',     404, 'The allocation does not exist.', 'appruntime'),
    ('allocation_not_active',    409, 'The allocation is not active.', 'appruntime')
ON CONFLICT (code) DO NOTHING;

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('appruntime.start_timeout_seconds', '60', 'How long an instance may stay starting before its port must answer (seconds, 5 to 3600); then it fails.'),
    ('appruntime.max_manifests_per_user', '50', 'How many manifests (all versions) one user may publish.');

-- source: sql/appruntime/10_tables.sql
-- Read model (users, allocations), manifests, instances, members, history.

CREATE TABLE appruntime.users (
    user_id        uuid PRIMARY KEY,
    posix_username text CHECK (posix_username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE appruntime.users IS 'Read model of users (user.created): who may be a member, and the POSIX login of owners.';
COMMENT ON COLUMN appruntime.users.user_id IS 'The user.';
COMMENT ON COLUMN appruntime.users.posix_username IS 'POSIX login on nodes.';
COMMENT ON COLUMN appruntime.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE appruntime.allocations (
    allocation_id uuid PRIMARY KEY,
    user_id       uuid,
    hostname      text,
    address       text,
    state         text NOT NULL CHECK (state IN ('active', 'ended')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE appruntime.allocations IS 'Read model of allocations (allocation.activated / released / failed).';
COMMENT ON COLUMN appruntime.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN appruntime.allocations.user_id IS 'Its owner.';
COMMENT ON COLUMN appruntime.allocations.hostname IS 'Hostname of the node.';
COMMENT ON COLUMN appruntime.allocations.address IS 'Address the agent connects to (first of ip_addresses, else the hostname).';
COMMENT ON COLUMN appruntime.allocations.state IS 'active or ended.';
COMMENT ON COLUMN appruntime.allocations.updated_at IS 'When the last event about it was applied.';

CREATE TABLE appruntime.manifests (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id      uuid,
    name          text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    version       text NOT NULL CHECK (version ~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$'),
    start_command text NOT NULL CHECK (length(start_command) BETWEEN 1 AND 4096),
    stop_command  text CHECK (length(stop_command) BETWEEN 1 AND 4096),
    ports         integer[] NOT NULL CHECK (cardinality(ports) BETWEEN 1 AND 16 AND 0 < ALL (ports) AND 65536 > ALL (ports)),
    resources     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(resources) = 'object'),
    env_schema    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env_schema) = 'object'),
    document      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner_id, name, version)
);
COMMENT ON TABLE appruntime.manifests IS 'Application manifests: the catalogue (owner_id NULL, published by administrators) and users'' own.';
COMMENT ON COLUMN appruntime.manifests.id IS 'Manifest id.';
COMMENT ON COLUMN appruntime.manifests.owner_id IS 'The user who published it; NULL for the catalogue.';
COMMENT ON COLUMN appruntime.manifests.name IS 'Name (lower-case, digits, dashes).';
COMMENT ON COLUMN appruntime.manifests.version IS 'Version label.';
COMMENT ON COLUMN appruntime.manifests.start_command IS 'Shell command that starts the app on the node (runs in the foreground).';
COMMENT ON COLUMN appruntime.manifests.stop_command IS 'Optional shell command run before the process is stopped.';
COMMENT ON COLUMN appruntime.manifests.ports IS 'TCP ports the app serves on the node; the first answers when it is running.';
COMMENT ON COLUMN appruntime.manifests.resources IS 'Resources it needs (e.g. {"gpus": 1, "memory_mb": 2048}); informational.';
COMMENT ON COLUMN appruntime.manifests.env_schema IS 'Environment schema: {NAME: {type, required, default}}.';
COMMENT ON COLUMN appruntime.manifests.document IS 'The manifest as published.';
COMMENT ON COLUMN appruntime.manifests.created_at IS 'When it was published.';

CREATE TABLE appruntime.instance_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE appruntime.instance_transitions IS 'Allowed changes of appruntime.instances.state (from_state NULL: initial state).';
COMMENT ON COLUMN appruntime.instance_transitions.from_state IS 'State before, NULL for a new instance.';
COMMENT ON COLUMN appruntime.instance_transitions.to_state IS 'State after.';
INSERT INTO appruntime.instance_transitions (from_state, to_state) VALUES
    (NULL, 'launch'),
    ('launch', 'starting'), ('launch', 'stopping'), ('launch', 'failed'), ('launch', 'released'),
    ('starting', 'running'), ('starting', 'stopping'), ('starting', 'failed'), ('starting', 'released'),
    ('running', 'stopping'), ('running', 'failed'), ('running', 'released'),
    ('stopping', 'stopped'), ('stopping', 'failed'), ('stopping', 'released'),
    ('stopped', 'released'), ('failed', 'released');

CREATE TABLE appruntime.instances (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    allocation_id uuid NOT NULL,
    manifest_id   uuid NOT NULL REFERENCES appruntime.manifests (id),
    owner_id      uuid NOT NULL,
    env           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    state         text NOT NULL CHECK (state IN ('launch', 'starting', 'running', 'stopping', 'stopped', 'failed', 'released')),
    detail        text,
    unit          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    state_since   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_alloc_idx ON appruntime.instances (allocation_id);
CREATE INDEX instances_work_idx ON appruntime.instances (state) WHERE state IN ('launch', 'starting', 'stopping');
CREATE TRIGGER instances_state BEFORE INSERT OR UPDATE OF state ON appruntime.instances
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'appruntime.instance_transitions');
COMMENT ON TABLE appruntime.instances IS 'Application instances on allocations and their lifecycle.';
COMMENT ON COLUMN appruntime.instances.id IS 'Instance id.';
COMMENT ON COLUMN appruntime.instances.allocation_id IS 'The allocation (node) it runs on.';
COMMENT ON COLUMN appruntime.instances.manifest_id IS 'The manifest it runs.';
COMMENT ON COLUMN appruntime.instances.owner_id IS 'Who launched it.';
COMMENT ON COLUMN appruntime.instances.env IS 'Environment, validated against the manifest''s schema (defaults filled in).';
COMMENT ON COLUMN appruntime.instances.state IS 'launch, starting, running, stopping, stopped, failed or released.';
COMMENT ON COLUMN appruntime.instances.detail IS 'Last word from the agent (e.g. why it failed).';
COMMENT ON COLUMN appruntime.instances.unit IS 'Name of the systemd unit / supervised process on the node.';
COMMENT ON COLUMN appruntime.instances.created_at IS 'When it was launched.';
COMMENT ON COLUMN appruntime.instances.state_since IS 'When it entered its state.';

CREATE TABLE appruntime.members (
    instance_id uuid NOT NULL REFERENCES appruntime.instances (id),
    user_id     uuid NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX members_user_idx ON appruntime.members (user_id);
COMMENT ON TABLE appruntime.members IS 'Members of an instance: owner, editor (may stop it, open terminals), viewer (may look).';
COMMENT ON COLUMN appruntime.members.instance_id IS 'The instance.';
COMMENT ON COLUMN appruntime.members.user_id IS 'The member.';
COMMENT ON COLUMN appruntime.members.role IS 'owner, editor or viewer.';
COMMENT ON COLUMN appruntime.members.added_at IS 'When the role was given.';

CREATE TABLE appruntime.instance_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES appruntime.instances (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]+$'),
    actor       uuid,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX instance_events_inst_idx ON appruntime.instance_events (instance_id, id);
CREATE TRIGGER instance_events_immutable BEFORE UPDATE OR DELETE ON appruntime.instance_events
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER instance_events_no_truncate BEFORE TRUNCATE ON appruntime.instance_events
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE appruntime.instance_events IS 'Immutable history of each instance: launched, state changes, members, stop requests.';
COMMENT ON COLUMN appruntime.instance_events.id IS 'Order of events.';
COMMENT ON COLUMN appruntime.instance_events.instance_id IS 'The instance.';
COMMENT ON COLUMN appruntime.instance_events.at IS 'When.';
COMMENT ON COLUMN appruntime.instance_events.kind IS 'launched, starting, running, stop_requested, stopped, failed, released, member_added, member_removed.';
COMMENT ON COLUMN appruntime.instance_events.actor IS 'Who (user), NULL for the platform.';
COMMENT ON COLUMN appruntime.instance_events.details IS 'Details.';

SELECT pg_catalog.pg_extension_config_dump('appruntime.users', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.manifests', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.instances', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.members', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.instance_events', '');

-- source: sql/appruntime/30_manifests.sql
-- Manifests: publish (administrators to the catalogue, users their own), list.

CREATE FUNCTION appruntime.publish_manifest_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    d jsonb := args -> 'manifest';
    catalogue boolean := coalesce((args ->> 'catalogue')::boolean, false);
    v_owner uuid := CASE WHEN catalogue THEN NULL ELSE pgcloud.user_id() END;
    k text;
    spec jsonb;
    ports integer[];
    m appruntime.manifests;
    maxn integer := pgcloud.policy('appruntime.max_manifests_per_user', NULL::integer);
BEGIN
    IF d IS NULL OR jsonb_typeof(d) <> 'object' THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'the manifest must be a JSON object');
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_object_keys(d) x WHERE x NOT IN ('name', 'version', 'start', 'stop', 'ports', 'resources', 'env')) THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'unknown manifest field; allowed: name, version, start, stop, ports, resources, env');
    END IF;
    IF jsonb_typeof(d -> 'name') IS DISTINCT FROM 'string' OR d ->> 'name' !~ '^[a-z][a-z0-9-]{0,62}$' THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'name must be 1-63 lower-case letters, digits or dashes, starting with a letter');
    END IF;
    IF jsonb_typeof(d -> 'version') IS DISTINCT FROM 'string' OR d ->> 'version' !~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$' THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'version must be 1-32 characters of letters, digits, ".", "+" or "-"');
    END IF;
    IF jsonb_typeof(d -> 'start') IS DISTINCT FROM 'string' OR length(d ->> 'start') NOT BETWEEN 1 AND 4096
       OR d ->> 'start' ~ '[\x00\r\n]' THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'start must be a one-line shell command of 1-4096 characters');
    END IF;
    IF d ? 'stop' AND (jsonb_typeof(d -> 'stop') <> 'string' OR length(d ->> 'stop') NOT BETWEEN 1 AND 4096
                       OR d ->> 'stop' ~ '[\x00\r\n]') THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'stop must be a one-line shell command of 1-4096 characters');
    END IF;
    IF jsonb_typeof(d -> 'ports') IS DISTINCT FROM 'array' OR jsonb_array_length(d -> 'ports') NOT BETWEEN 1 AND 16
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(d -> 'ports') p
                   WHERE jsonb_typeof(p) <> 'number' OR p::text !~ '^[0-9]{1,5}$' OR p::text::integer NOT BETWEEN 1 AND 65535) THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'ports must be 1-16 TCP port numbers');
    END IF;
    ports := ARRAY(SELECT p::text::integer FROM jsonb_array_elements(d -> 'ports') p);
    IF d ? 'resources' AND jsonb_typeof(d -> 'resources') <> 'object' THEN
        PERFORM pgcloud.raise('app_manifest_invalid', 'resources must be an object');
    END IF;
    IF d ? 'env' THEN
        IF jsonb_typeof(d -> 'env') <> 'object' THEN
            PERFORM pgcloud.raise('app_manifest_invalid', 'env must be an object {NAME: {type, required, default}}');
        END IF;
        FOR k, spec IN SELECT * FROM jsonb_each(d -> 'env') LOOP
            IF k !~ '^[A-Z_][A-Z0-9_]{0,63}$' THEN
                PERFORM pgcloud.raise('app_manifest_invalid', format('environment name %s must be upper-case letters, digits and _', k));
            END IF;
            IF jsonb_typeof(spec) <> 'object' OR coalesce(spec ->> 'type', 'string') NOT IN ('string', 'integer', 'boolean')
               OR (spec ? 'required' AND jsonb_typeof(spec -> 'required') <> 'boolean') THEN
                PERFORM pgcloud.raise('app_manifest_invalid', format('env.%s must be {type: string|integer|boolean, required: boolean, default}', k));
            END IF;
        END LOOP;
    END IF;
    IF v_owner IS NOT NULL AND (SELECT count(*) FROM appruntime.manifests x WHERE x.owner_id = v_owner) >= maxn THEN
        PERFORM pgcloud.raise('app_manifest_invalid', format('you have published %s manifests, the most allowed', maxn));
    END IF;
    BEGIN
        INSERT INTO appruntime.manifests (owner_id, name, version, start_command, stop_command, ports, resources, env_schema, document)
        VALUES (v_owner, d ->> 'name', d ->> 'version', d ->> 'start', d ->> 'stop', ports,
                coalesce(d -> 'resources', '{}'), coalesce(d -> 'env', '{}'), d)
        RETURNING * INTO m;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('conflict', format('%s@%s is already published; publish a new version', d ->> 'name', d ->> 'version'));
    END;
    PERFORM pgcloud.audit('app.manifest_published', 'app_manifest', m.id::text, 'ok',
        jsonb_build_object('name', m.name, 'version', m.version, 'catalogue', catalogue));
    PERFORM pgcloud.emit('app.manifest_published', 'app_manifest', m.id::text,
        jsonb_build_object('manifest_id', m.id, 'name', m.name, 'version', m.version, 'owner_id', m.owner_id));
    RETURN appruntime.manifest_json(m);
END
$$;
COMMENT ON FUNCTION appruntime.publish_manifest_apply(jsonb) IS 'Internal to api.publish_app_manifest(): validates and stores a manifest.';

CREATE FUNCTION appruntime.manifest_json(m appruntime.manifests) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
    SELECT jsonb_build_object('id', m.id, 'name', m.name, 'version', m.version, 'catalogue', m.owner_id IS NULL,
                              'start', m.start_command, 'stop', m.stop_command, 'ports', to_jsonb(m.ports),
                              'resources', m.resources, 'env', m.env_schema, 'created_at', m.created_at)
$$;
COMMENT ON FUNCTION appruntime.manifest_json(appruntime.manifests) IS 'The public form of a manifest.';

CREATE FUNCTION api.publish_app_manifest(manifest jsonb, catalogue boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    IF catalogue THEN
        PERFORM pgcloud.authorize('admin');
    ELSE
        PERFORM pgcloud.authorize('user');
        IF pgcloud.user_id() IS NULL THEN
            PERFORM pgcloud.raise('unauthenticated', 'own manifests belong to a signed-in user; operators publish with catalogue => true');
        END IF;
    END IF;
    RETURN pgcloud.idempotent('appruntime.publish_app_manifest',
                              jsonb_build_object('manifest', manifest, 'catalogue', coalesce(catalogue, false)),
                              'appruntime.publish_manifest_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.publish_app_manifest(jsonb, boolean) IS 'Publishes an application manifest {name, version, start, stop?, ports, resources?, env?}: start/stop are one-line shell commands run on the node as the allocation owner, ports the TCP ports it serves (the first must answer for the app to be running), env the environment schema {NAME: {type: string|integer|boolean, required, default}}. catalogue => true (administrators) publishes to the shared catalogue, otherwise to your own manifests. A name@version is published once (409 conflict). Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.list_app_manifests() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.user_id();
    RETURN coalesce((SELECT jsonb_agg(appruntime.manifest_json(m) ORDER BY m.owner_id NULLS FIRST, m.name, m.created_at DESC)
                       FROM appruntime.manifests m
                      WHERE m.owner_id IS NULL OR m.owner_id = v_user
                         OR (v_user IS NULL AND pgcloud.request_role() = 'pgcloud_admin')), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_app_manifests() IS 'The application catalogue and your own manifests: [{id, name, version, catalogue, start, stop, ports, resources, env, created_at}].';

-- source: sql/appruntime/40_instances.sql
-- Instances: launch, stop, look, members, history.

CREATE FUNCTION appruntime.uuid_arg(v text, what text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_argument', format('%s must be a uuid', what));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION appruntime.uuid_arg(text, text) IS 'A required uuid argument; raises invalid_argument otherwise.';

-- Moves an instance to a new state: history row, and the public events.
CREATE FUNCTION appruntime.set_state(inst appruntime.instances, to_state text, actor uuid, detail text DEFAULT NULL)
RETURNS appruntime.instances
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances;
BEGIN
    UPDATE appruntime.instances x SET state = to_state, state_since = now(), detail = coalesce(set_state.detail, x.detail)
     WHERE x.id = inst.id RETURNING * INTO i;
    INSERT INTO appruntime.instance_events (instance_id, kind, actor, details)
    VALUES (i.id, CASE to_state WHEN 'stopping' THEN 'stop_requested' ELSE to_state END, actor,
            jsonb_build_object('from', inst.state, 'to', to_state) || CASE WHEN detail IS NULL THEN '{}'::jsonb
                                                                          ELSE jsonb_build_object('detail', detail) END);
    IF to_state IN ('running', 'stopped', 'failed', 'released') THEN
        PERFORM pgcloud.emit('app.instance_' || to_state, 'app_instance', i.id::text,
            jsonb_build_object('instance_id', i.id, 'allocation_id', i.allocation_id, 'owner_id', i.owner_id,
                               'state', to_state, 'detail', detail));
    END IF;
    RETURN i;
END
$$;
COMMENT ON FUNCTION appruntime.set_state(appruntime.instances, text, uuid, text) IS 'Changes an instance''s state (guarded by the transition trigger), records it in the history and announces running, stopped, failed and released.';

CREATE FUNCTION appruntime.role_of(instance_id uuid, who uuid) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$ SELECT m.role FROM appruntime.members m WHERE m.instance_id = role_of.instance_id AND m.user_id = who $$;
COMMENT ON FUNCTION appruntime.role_of(uuid, uuid) IS 'The role of a user on an instance, or NULL.';

-- The instance for a caller who needs at least `need` (viewer < editor < owner).
CREATE FUNCTION appruntime.instance_for(instance_id uuid, need text, lock boolean DEFAULT false)
RETURNS appruntime.instances
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances;
    r text;
BEGIN
    IF instance_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'instance_id is required');
    END IF;
    IF lock THEN
        SELECT * INTO i FROM appruntime.instances x WHERE x.id = instance_for.instance_id FOR UPDATE;
    ELSE
        SELECT * INTO i FROM appruntime.instances x WHERE x.id = instance_for.instance_id;
    END IF;
    IF pgcloud.request_role() = 'pgcloud_admin' OR pgcloud.is_operator() THEN
        IF NOT FOUND THEN
            PERFORM pgcloud.raise('app_instance_not_found', format('no instance %s', instance_id));
        END IF;
        RETURN i;
    END IF;
    r := appruntime.role_of(instance_id, pgcloud.user_id());
    -- Not a member: as unknown as a missing instance.
    IF NOT FOUND OR r IS NULL THEN
        PERFORM pgcloud.raise('app_instance_not_found', format('no instance %s', instance_id));
    END IF;
    IF (need = 'editor' AND r = 'viewer') OR (need = 'owner' AND r <> 'owner') THEN
        PERFORM pgcloud.raise('forbidden', format('this needs the %s role on the instance; you are %s', need, r));
    END IF;
    RETURN i;
END
$$;
COMMENT ON FUNCTION appruntime.instance_for(uuid, text, boolean) IS 'The instance, for a caller holding at least role need (viewer, editor, owner); administrators see all. Others: 404 app_instance_not_found; too small a role: 403 forbidden.';

CREATE FUNCTION appruntime.instance_json(i appruntime.instances) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
    SELECT jsonb_build_object('id', i.id, 'allocation_id', i.allocation_id, 'state', i.state, 'detail', i.detail,
                              'owner_id', i.owner_id, 'env', i.env, 'unit', i.unit,
                              'manifest', jsonb_build_object('id', m.id, 'name', m.name, 'version', m.version, 'ports', to_jsonb(m.ports)),
                              'members', (SELECT jsonb_agg(jsonb_build_object('user_id', x.user_id, 'role', x.role) ORDER BY x.added_at)
                                            FROM appruntime.members x WHERE x.instance_id = i.id),
                              'created_at', i.created_at, 'state_since', i.state_since)
      FROM appruntime.manifests m WHERE m.id = i.manifest_id
$$;
COMMENT ON FUNCTION appruntime.instance_json(appruntime.instances) IS 'The public form of an instance.';

CREATE FUNCTION appruntime.add_member(i appruntime.instances, who uuid, role text, actor uuid) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    INSERT INTO appruntime.members AS m (instance_id, user_id, role) VALUES (i.id, who, role)
    ON CONFLICT (instance_id, user_id) DO UPDATE SET role = excluded.role, added_at = now();
    INSERT INTO appruntime.instance_events (instance_id, kind, actor, details)
    VALUES (i.id, 'member_added', actor, jsonb_build_object('user_id', who, 'role', role));
    PERFORM pgcloud.emit('app.member_added', 'app_instance', i.id::text,
        jsonb_build_object('instance_id', i.id, 'allocation_id', i.allocation_id, 'user_id', who, 'role', role));
END
$$;
COMMENT ON FUNCTION appruntime.add_member(appruntime.instances, uuid, text, uuid) IS 'Gives a user a role on an instance; history and app.member_added.';

CREATE FUNCTION appruntime.launch_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
    alloc_id uuid := appruntime.uuid_arg(args ->> 'allocation_id', 'allocation_id');
    ref text := args ->> 'manifest';
    env jsonb := coalesce(args -> 'env', '{}');
    a appruntime.allocations;
    m appruntime.manifests;
    k text;
    spec jsonb;
    v jsonb;
    final_env jsonb := '{}';
    i appruntime.instances;
BEGIN
    IF ref IS NULL OR ref !~ '^[a-z][a-z0-9-]{0,62}(@[0-9A-Za-z][0-9A-Za-z.+-]{0,31})?$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'manifest must be "name" or "name@version"');
    END IF;
    IF jsonb_typeof(env) <> 'object' THEN
        PERFORM pgcloud.raise('app_env_invalid', 'env must be a JSON object');
    END IF;
    SELECT * INTO a FROM appruntime.allocations x WHERE x.allocation_id = alloc_id FOR SHARE;
    IF NOT FOUND OR a.user_id IS DISTINCT FROM v_user THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', alloc_id));
    END IF;
    IF a.state <> 'active' THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is %s', alloc_id, a.state));
    END IF;
    SELECT * INTO m FROM appruntime.manifests x
     WHERE x.name = split_part(ref, '@', 1)
       AND (position('@' IN ref) = 0 OR x.version = split_part(ref, '@', 2))
       AND (x.owner_id IS NULL OR x.owner_id = v_user)
     ORDER BY x.owner_id NULLS LAST, x.created_at DESC LIMIT 1;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('app_manifest_not_found', format('no manifest %s in the catalogue or yours', ref));
    END IF;
    FOR k IN SELECT jsonb_object_keys(env) LOOP
        IF NOT m.env_schema ? k THEN
            PERFORM pgcloud.raise('app_env_invalid', format('%s is not in the manifest''s environment schema', k));
        END IF;
    END LOOP;
    FOR k, spec IN SELECT * FROM jsonb_each(m.env_schema) LOOP
        v := coalesce(env -> k, spec -> 'default');
        IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
            IF coalesce((spec ->> 'required')::boolean, false) THEN
                PERFORM pgcloud.raise('app_env_invalid', format('%s is required', k));
            END IF;
            CONTINUE;
        END IF;
        IF (coalesce(spec ->> 'type', 'string') = 'string' AND (jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > 4096 OR v #>> '{}' ~ '[\x00]'))
           OR (spec ->> 'type' = 'integer' AND (jsonb_typeof(v) <> 'number' OR v::text !~ '^-?[0-9]{1,18}$'))
           OR (spec ->> 'type' = 'boolean' AND jsonb_typeof(v) <> 'boolean') THEN
            PERFORM pgcloud.raise('app_env_invalid', format('%s must be a %s', k, coalesce(spec ->> 'type', 'string')));
        END IF;
        final_env := final_env || jsonb_build_object(k, v #>> '{}');
    END LOOP;
    INSERT INTO appruntime.instances (allocation_id, manifest_id, owner_id, env, state, unit)
    VALUES (alloc_id, m.id, v_user, final_env, 'launch', 'pending')
    RETURNING * INTO i;
    UPDATE appruntime.instances x SET unit = 'pgcloud-app-' || replace(i.id::text, '-', '') WHERE x.id = i.id
    RETURNING * INTO i;
    INSERT INTO appruntime.instance_events (instance_id, kind, actor, details)
    VALUES (i.id, 'launched', v_user, jsonb_build_object('manifest', m.name || '@' || m.version, 'allocation_id', alloc_id));
    PERFORM appruntime.add_member(i, v_user, 'owner', v_user);
    PERFORM pgcloud.audit('app.launch', 'app_instance', i.id::text, 'ok',
        jsonb_build_object('allocation_id', alloc_id, 'manifest', m.name || '@' || m.version));
    PERFORM pgcloud.emit('app.instance_launched', 'app_instance', i.id::text,
        jsonb_build_object('instance_id', i.id, 'allocation_id', alloc_id, 'owner_id', v_user,
                           'manifest_id', m.id, 'name', m.name, 'version', m.version));
    RETURN appruntime.instance_json(i);
END
$$;
COMMENT ON FUNCTION appruntime.launch_apply(jsonb) IS 'Internal to api.launch_app().';

CREATE FUNCTION api.launch_app(allocation_id uuid, manifest text, env jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    IF pgcloud.user_id() IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'apps are launched by a signed-in user');
    END IF;
    RETURN pgcloud.idempotent('appruntime.launch_app',
        jsonb_build_object('allocation_id', allocation_id, 'manifest', manifest, 'env', coalesce(env, '{}')),
        'appruntime.launch_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.launch_app(uuid, text, jsonb) IS 'Launches an application on one of your active allocations: manifest is "name" or "name@version" (yours first, then the catalogue; the newest version when none is given); env is checked against the manifest''s schema. Returns the instance in state launch; the platform starts the process on the node (starting) and it is running once its port answers. You become its owner. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION appruntime.stop_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_arg(args ->> 'instance_id', 'instance_id'), 'editor', true);
BEGIN
    IF i.state IN ('stopping', 'stopped') THEN
        RETURN appruntime.instance_json(i);    -- already on its way: nothing more to do
    END IF;
    IF i.state NOT IN ('launch', 'starting', 'running') THEN
        PERFORM pgcloud.raise('app_not_stoppable', format('instance %s is %s', i.id, i.state));
    END IF;
    i := appruntime.set_state(i, 'stopping', pgcloud.user_id());
    PERFORM pgcloud.audit('app.stop', 'app_instance', i.id::text, 'ok', jsonb_build_object('allocation_id', i.allocation_id));
    RETURN appruntime.instance_json(i);
END
$$;
COMMENT ON FUNCTION appruntime.stop_apply(jsonb) IS 'Internal to api.stop_app().';

CREATE FUNCTION api.stop_app(instance_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('appruntime.stop_app', jsonb_build_object('instance_id', instance_id),
                              'appruntime.stop_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.stop_app(uuid) IS 'Stops an application (owners and editors): the instance goes stopping, the platform stops the process on the node, then stopped. Stopping a stopping or stopped instance changes nothing. Viewers: 403 forbidden; not a member: 404 app_instance_not_found; failed or released: 409 app_not_stoppable. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.get_app(instance_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN appruntime.instance_json(appruntime.instance_for(instance_id, 'viewer'));
END
$$;
COMMENT ON FUNCTION api.get_app(uuid) IS 'One application instance you are a member of: {id, allocation_id, state, detail, owner_id, env, unit, manifest, members, created_at, state_since}.';

CREATE FUNCTION api.list_apps() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.user_id();
    RETURN coalesce((SELECT jsonb_agg(appruntime.instance_json(i) || jsonb_build_object('role', m.role) ORDER BY i.created_at DESC)
                       FROM appruntime.instances i JOIN appruntime.members m ON m.instance_id = i.id AND m.user_id = v_user),
                    '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_apps() IS 'The application instances you are a member of, newest first, each with your role.';

CREATE FUNCTION appruntime.add_member_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_arg(args ->> 'instance_id', 'instance_id'), 'owner', true);
    who uuid := appruntime.uuid_arg(args ->> 'user_id', 'user_id');
    role text := args ->> 'role';
BEGIN
    IF role IS NULL OR role NOT IN ('owner', 'editor', 'viewer') THEN
        PERFORM pgcloud.raise('app_member_role_invalid', format('role %s', coalesce(role, 'NULL')));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM appruntime.users u WHERE u.user_id = who) THEN
        PERFORM pgcloud.raise('app_user_not_found', format('no user %s', who));
    END IF;
    IF who = i.owner_id AND role <> 'owner' THEN
        PERFORM pgcloud.raise('forbidden', 'the instance''s launcher stays its owner');
    END IF;
    PERFORM appruntime.add_member(i, who, role, pgcloud.user_id());
    PERFORM pgcloud.audit('app.member_added', 'app_instance', i.id::text, 'ok', jsonb_build_object('user_id', who, 'role', role));
    RETURN appruntime.instance_json(i);
END
$$;
COMMENT ON FUNCTION appruntime.add_member_apply(jsonb) IS 'Internal to api.add_app_member().';

CREATE FUNCTION api.add_app_member(instance_id uuid, user_id uuid, role text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('appruntime.add_app_member',
        jsonb_build_object('instance_id', instance_id, 'user_id', user_id, 'role', role),
        'appruntime.add_member_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.add_app_member(uuid, uuid, text) IS 'Owners give a user a role on an instance: owner, editor (may stop it and open terminals to its allocation) or viewer (may look). Giving a role again replaces it. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.app_events(instance_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances;
BEGIN
    PERFORM pgcloud.authorize('user');
    i := appruntime.instance_for(instance_id, 'viewer');
    RETURN coalesce((SELECT jsonb_agg(jsonb_build_object('id', e.id, 'at', e.at, 'kind', e.kind, 'actor', e.actor,
                                                         'details', e.details) ORDER BY e.id)
                       FROM appruntime.instance_events e WHERE e.instance_id = i.id), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.app_events(uuid) IS 'The immutable history of an instance you are a member of, oldest first: [{id, at, kind, actor, details}].';

CREATE FUNCTION appruntime.remove_member_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_arg(args ->> 'instance_id', 'instance_id'), 'owner', true);
    who uuid := appruntime.uuid_arg(args ->> 'user_id', 'user_id');
BEGIN
    IF who = i.owner_id THEN
        PERFORM pgcloud.raise('forbidden', 'the instance''s launcher stays its owner');
    END IF;
    DELETE FROM appruntime.members m WHERE m.instance_id = i.id AND m.user_id = who;
    IF FOUND THEN
        INSERT INTO appruntime.instance_events (instance_id, kind, actor, details)
        VALUES (i.id, 'member_removed', pgcloud.user_id(), jsonb_build_object('user_id', who));
        PERFORM pgcloud.emit('app.member_removed', 'app_instance', i.id::text,
            jsonb_build_object('instance_id', i.id, 'allocation_id', i.allocation_id, 'user_id', who));
        PERFORM pgcloud.audit('app.member_removed', 'app_instance', i.id::text, 'ok', jsonb_build_object('user_id', who));
    END IF;
    RETURN appruntime.instance_json(i);
END
$$;
COMMENT ON FUNCTION appruntime.remove_member_apply(jsonb) IS 'Internal to api.remove_app_member().';

CREATE FUNCTION api.remove_app_member(instance_id uuid, user_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('appruntime.remove_app_member',
        jsonb_build_object('instance_id', instance_id, 'user_id', user_id), 'appruntime.remove_member_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.remove_app_member(uuid, uuid) IS 'Owners take a member''s role away (their open terminals to the allocation close). The launcher stays owner. Safe to retry with X-Idempotency-Key.';

-- source: sql/appruntime/50_agent.sql
-- The app runtime agent (termrelay/pgcloud-appagent; pgcloud_service with
-- scope apps:run) asks what to do and reports what happened.

CREATE FUNCTION api.service_app_work() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    timeout integer := pgcloud.policy('appruntime.start_timeout_seconds', NULL::integer);
BEGIN
    PERFORM pgcloud.authorize_service('apps:run');
    IF timeout IS NULL OR timeout NOT BETWEEN 5 AND 3600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'appruntime.start_timeout_seconds must be between 5 and 3600');
    END IF;
    RETURN coalesce((SELECT jsonb_agg(jsonb_build_object(
            'instance_id', i.id,
            'action', CASE i.state WHEN 'launch' THEN 'start' WHEN 'stopping' THEN 'stop'
                                   ELSE CASE WHEN i.state_since < now() - make_interval(secs => timeout) THEN 'timeout' ELSE 'probe' END END,
            'allocation_id', i.allocation_id, 'owner_id', i.owner_id, 'posix_username', u.posix_username,
            'address', coalesce(a.address, a.hostname), 'unit', i.unit, 'start', m.start_command, 'stop', m.stop_command,
            'port', m.ports[1], 'env', i.env) ORDER BY i.state_since)
          FROM appruntime.instances i
          JOIN appruntime.manifests m ON m.id = i.manifest_id
          JOIN appruntime.allocations a ON a.allocation_id = i.allocation_id AND a.state = 'active'
          LEFT JOIN appruntime.users u ON u.user_id = a.user_id
         WHERE i.state IN ('launch', 'starting', 'stopping')), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.service_app_work() IS 'The agent (scope apps:run): instances to act on, [{instance_id, action: start|probe|timeout|stop, allocation_id, owner_id, posix_username, address, unit, start, stop, port, env}]: start the process (launch), check its port (starting), give up after appruntime.start_timeout_seconds (timeout), stop it (stopping).';

CREATE FUNCTION api.service_app_report(instance_id uuid, state text, detail text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances;
BEGIN
    PERFORM pgcloud.authorize_service('apps:run');
    IF state IS NULL OR state NOT IN ('starting', 'running', 'stopped', 'failed') THEN
        PERFORM pgcloud.raise('invalid_argument', 'state must be starting, running, stopped or failed');
    END IF;
    IF detail IS NOT NULL AND length(detail) > 2000 THEN
        detail := left(detail, 2000);
    END IF;
    SELECT * INTO i FROM appruntime.instances x WHERE x.id = service_app_report.instance_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('app_instance_not_found', format('no instance %s', instance_id));
    END IF;
    -- What the agent saw applies only to the state it acted on; anything
    -- else (a stop requested meanwhile, a release) wins.
    IF (i.state = 'launch' AND state IN ('starting', 'failed'))
       OR (i.state = 'starting' AND state IN ('running', 'failed'))
       OR (i.state = 'stopping' AND state IN ('stopped', 'failed')) THEN
        i := appruntime.set_state(i, state, NULL, pgcloud.sanitize(detail));
        RETURN jsonb_build_object('applied', true, 'state', i.state);
    END IF;
    RETURN jsonb_build_object('applied', false, 'state', i.state);
END
$$;
COMMENT ON FUNCTION api.service_app_report(uuid, text, text) IS 'The agent (scope apps:run) reports: starting (process started), running (its port answers), stopped (process gone), failed (with detail). Applied only from the state the agent acted on (launch, starting, stopping); returns {applied, state}.';

-- source: sql/appruntime/80_events.sql
-- Read model, and the end of instances with their allocation.

CREATE FUNCTION appruntime.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                    payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_alloc uuid;
    v_user uuid;
    uname text;
    addr text;
    i appruntime.instances;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := appruntime.uuid_arg(coalesce(payload ->> 'user_id', aggregate_id), 'user_id');
        uname := payload ->> 'posix_username';
        IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
        END IF;
        INSERT INTO appruntime.users AS u (user_id, posix_username) VALUES (v_user, uname)
        ON CONFLICT (user_id) DO UPDATE SET posix_username = coalesce(excluded.posix_username, u.posix_username), updated_at = now();
    WHEN 'allocation.activated' THEN
        v_alloc := appruntime.uuid_arg(coalesce(payload ->> 'allocation_id', aggregate_id), 'allocation_id');
        v_user := appruntime.uuid_arg(payload ->> 'user_id', 'user_id');
        IF jsonb_typeof(payload -> 'ip_addresses') = 'array' THEN
            addr := payload -> 'ip_addresses' ->> 0;
        END IF;
        INSERT INTO appruntime.allocations AS x (allocation_id, user_id, hostname, address, state)
        VALUES (v_alloc, v_user, coalesce(payload ->> 'node_hostname', payload ->> 'hostname'), coalesce(addr, payload ->> 'address'), 'active')
        ON CONFLICT (allocation_id) DO UPDATE
            SET user_id = excluded.user_id, hostname = excluded.hostname, address = excluded.address, updated_at = now()
            WHERE x.state = 'active';
    WHEN 'allocation.releasing', 'allocation.released', 'allocation.failed' THEN
        v_alloc := appruntime.uuid_arg(coalesce(payload ->> 'allocation_id', aggregate_id), 'allocation_id');
        INSERT INTO appruntime.allocations AS x (allocation_id, state) VALUES (v_alloc, 'ended')
        ON CONFLICT (allocation_id) DO UPDATE SET state = 'ended', updated_at = now();
        FOR i IN SELECT * FROM appruntime.instances x WHERE x.allocation_id = v_alloc AND x.state <> 'released' FOR UPDATE LOOP
            PERFORM appruntime.set_state(i, 'released', NULL, 'the allocation ended');
        END LOOP;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION appruntime.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler: user.created fills appruntime.users; allocation.activated / releasing / released / failed keep appruntime.allocations, and an allocation being released or ended releases its instances (app.instance_released).';

-- source: sql/appruntime/90_grants.sql
-- Who may call what (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.publish_app_manifest(jsonb, boolean), api.list_app_manifests(),
    api.launch_app(uuid, text, jsonb), api.stop_app(uuid), api.get_app(uuid), api.list_apps(),
    api.add_app_member(uuid, uuid, text), api.remove_app_member(uuid, uuid), api.app_events(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_app_work(), api.service_app_report(uuid, text, text) TO pgcloud_service;

SELECT pgcloud.service_end('appruntime');
