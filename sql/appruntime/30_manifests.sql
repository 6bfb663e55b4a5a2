-- Manifests: publish (administrators to the catalogue, users their own), list.

CREATE FUNCTION appruntime.publish_app_manifest_apply(p_manifest jsonb, p_catalogue boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    d jsonb := p_manifest;
    catalogue boolean := coalesce(p_catalogue, false);
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
COMMENT ON FUNCTION appruntime.publish_app_manifest_apply(jsonb, boolean) IS 'Internal to api.publish_app_manifest() (which authorizes): validates and stores a manifest, in the catalogue or as the caller''s own.';

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
    RETURN coalesce(pgcloud.idempotent('appruntime.publish_app_manifest', jsonb_build_object('manifest', manifest, 'catalogue', coalesce(catalogue, false))),
                    pgcloud.idempotent_done('appruntime.publish_app_manifest', appruntime.publish_app_manifest_apply(manifest, coalesce(catalogue, false))));
END
$$;
COMMENT ON FUNCTION api.publish_app_manifest(jsonb, boolean) IS 'Publishes an application manifest {name, version, start, stop?, ports, resources?, env?}: start/stop are one-line shell commands run on the node as the allocation owner, ports the TCP ports it serves (the first must answer for the app to be running), env the environment schema {NAME: {type: string|integer|boolean, required, default}}. catalogue => true (administrators) publishes to the shared catalogue, otherwise to your own manifests. A name@version is published once (409 conflict). Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.publish_app_manifest(jsonb, boolean)', 'user', 'admin');

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
SELECT pgcloud.expose('api.list_app_manifests()', 'user', 'admin');
