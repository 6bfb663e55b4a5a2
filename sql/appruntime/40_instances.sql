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

CREATE FUNCTION appruntime.uuid_required(v uuid, what text) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    IF v IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', format('%s must be a uuid', what));
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION appruntime.uuid_required(uuid, text) IS 'A required typed uuid argument (named what); raises invalid_argument when it is NULL.';

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

CREATE FUNCTION appruntime.launch_app_apply(p_allocation_id uuid, p_manifest text, p_env jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
    alloc_id uuid := appruntime.uuid_required(p_allocation_id, 'allocation_id');
    ref text := p_manifest;
    env jsonb := coalesce(p_env, '{}');
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
COMMENT ON FUNCTION appruntime.launch_app_apply(uuid, text, jsonb) IS 'Internal to api.launch_app() (which authorizes): checks the allocation, the manifest and env, and creates the instance in state launch.';

CREATE FUNCTION api.launch_app(allocation_id uuid, manifest text, env jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    IF pgcloud.user_id() IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'apps are launched by a signed-in user');
    END IF;
    RETURN coalesce(pgcloud.idempotent('appruntime.launch_app', jsonb_build_object('allocation_id', allocation_id, 'manifest', manifest, 'env', coalesce(env, '{}'))),
                    pgcloud.idempotent_done('appruntime.launch_app', appruntime.launch_app_apply(allocation_id, manifest, coalesce(env, '{}'))));
END
$$;
COMMENT ON FUNCTION api.launch_app(uuid, text, jsonb) IS 'Launches an application on one of your active allocations: manifest is "name" or "name@version" (yours first, then the catalogue; the newest version when none is given); env is checked against the manifest''s schema. Returns the instance in state launch; the platform starts the process on the node (starting) and it is running once its port answers. You become its owner. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.launch_app(uuid, text, jsonb)', 'user', 'admin');

CREATE FUNCTION appruntime.stop_app_apply(p_instance_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_required(p_instance_id, 'instance_id'), 'editor', true);
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
COMMENT ON FUNCTION appruntime.stop_app_apply(uuid) IS 'Internal to api.stop_app() (which authorizes): moves an instance the caller may edit to stopping.';

CREATE FUNCTION api.stop_app(instance_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('appruntime.stop_app', jsonb_build_object('instance_id', instance_id)),
                    pgcloud.idempotent_done('appruntime.stop_app', appruntime.stop_app_apply(instance_id)));
END
$$;
COMMENT ON FUNCTION api.stop_app(uuid) IS 'Stops an application (owners and editors): the instance goes stopping, the platform stops the process on the node, then stopped. Stopping a stopping or stopped instance changes nothing. Viewers: 403 forbidden; not a member: 404 app_instance_not_found; failed or released: 409 app_not_stoppable. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.stop_app(uuid)', 'user', 'admin');

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
SELECT pgcloud.expose('api.get_app(uuid)', 'user', 'admin');

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
SELECT pgcloud.expose('api.list_apps()', 'user', 'admin');

CREATE FUNCTION appruntime.add_app_member_apply(p_instance_id uuid, p_user_id uuid, p_role text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_required(p_instance_id, 'instance_id'), 'owner', true);
    who uuid := appruntime.uuid_required(p_user_id, 'user_id');
    role text := p_role;
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
COMMENT ON FUNCTION appruntime.add_app_member_apply(uuid, uuid, text) IS 'Internal to api.add_app_member() (which authorizes): the instance''s owner gives a user a role on it.';

CREATE FUNCTION api.add_app_member(instance_id uuid, user_id uuid, role text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('appruntime.add_app_member', jsonb_build_object('instance_id', instance_id, 'user_id', user_id, 'role', role)),
                    pgcloud.idempotent_done('appruntime.add_app_member', appruntime.add_app_member_apply(instance_id, user_id, role)));
END
$$;
COMMENT ON FUNCTION api.add_app_member(uuid, uuid, text) IS 'Owners give a user a role on an instance: owner, editor (may stop it and open terminals to its allocation) or viewer (may look). Giving a role again replaces it. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.add_app_member(uuid, uuid, text)', 'user', 'admin');

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
SELECT pgcloud.expose('api.app_events(uuid)', 'user', 'admin');

CREATE FUNCTION appruntime.remove_app_member_apply(p_instance_id uuid, p_user_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances := appruntime.instance_for(appruntime.uuid_required(p_instance_id, 'instance_id'), 'owner', true);
    who uuid := appruntime.uuid_required(p_user_id, 'user_id');
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
COMMENT ON FUNCTION appruntime.remove_app_member_apply(uuid, uuid) IS 'Internal to api.remove_app_member() (which authorizes): the instance''s owner takes a member''s role away.';

CREATE FUNCTION api.remove_app_member(instance_id uuid, user_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('appruntime.remove_app_member', jsonb_build_object('instance_id', instance_id, 'user_id', user_id)),
                    pgcloud.idempotent_done('appruntime.remove_app_member', appruntime.remove_app_member_apply(instance_id, user_id)));
END
$$;
COMMENT ON FUNCTION api.remove_app_member(uuid, uuid) IS 'Owners take a member''s role away (their open terminals to the allocation close). The launcher stays owner. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.remove_app_member(uuid, uuid)', 'user', 'admin');
