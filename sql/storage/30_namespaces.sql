-- Namespaces: create, list, delete when empty.

CREATE FUNCTION storage.check_name(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z0-9][a-z0-9-]{1,62}$' THEN
        PERFORM pgcloud.raise('namespace_invalid',
            format('"%s" is not a namespace name', left(coalesce(name, ''), 70)),
            'A name is 2 to 63 characters of a-z, 0-9 and -, starting with a letter or digit.');
    END IF;
    RETURN name;
END
$$;
COMMENT ON FUNCTION storage.check_name(text) IS 'A valid namespace name or namespace_invalid (400).';

-- The caller's live namespace called name, locked when for_update.
CREATE FUNCTION storage.namespace_of(owner uuid, name text, for_update boolean DEFAULT false)
RETURNS storage.namespaces
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    ns storage.namespaces;
BEGIN
    PERFORM storage.check_name(name);
    IF for_update THEN
        SELECT * INTO ns FROM storage.namespaces n
         WHERE n.owner_id = owner AND n.name = namespace_of.name AND n.deleted_at IS NULL FOR UPDATE;
    ELSE
        SELECT * INTO ns FROM storage.namespaces n
         WHERE n.owner_id = owner AND n.name = namespace_of.name AND n.deleted_at IS NULL;
    END IF;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('namespace_not_found', format('you have no namespace "%s"', name),
                              'List yours with api.list_namespaces().');
    END IF;
    RETURN ns;
END
$$;
COMMENT ON FUNCTION storage.namespace_of(uuid, text, boolean) IS 'The live namespace name of owner (locked FOR UPDATE when asked), or namespace_not_found (404).';

CREATE FUNCTION storage.usage(ns uuid, OUT objects bigint, OUT bytes bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$
    SELECT count(*) FILTER (WHERE o.state IN ('pending', 'stored')),
           coalesce(sum(o.size) FILTER (WHERE o.state = 'stored'), 0)::bigint
      FROM storage.objects o WHERE o.namespace_id = ns
$$;
COMMENT ON FUNCTION storage.usage(uuid) IS 'What a namespace holds against its quotas: objects pending or stored, bytes stored.';

CREATE FUNCTION storage.namespace_json(ns storage.namespaces) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$
    SELECT jsonb_build_object('id', ns.id, 'name', ns.name, 'created_at', ns.created_at,
                              'objects', u.objects, 'bytes', u.bytes,
                              'max_objects', pgcloud.policy('storage.max_objects_per_namespace', NULL::bigint),
                              'max_bytes', pgcloud.policy('storage.max_bytes_per_namespace', NULL::bigint))
      FROM storage.usage(ns.id) u
$$;
COMMENT ON FUNCTION storage.namespace_json(storage.namespaces) IS 'The API form of a namespace: id, name, created_at, objects, bytes, max_objects, max_bytes.';

CREATE FUNCTION storage.create_namespace_apply(p_name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_name text := storage.check_name(p_name);
    lim integer := pgcloud.policy('storage.max_namespaces_per_user', NULL::integer);
    ns storage.namespaces;
BEGIN
    -- One user's creations are serialised: the limit and the name check hold.
    PERFORM pg_advisory_xact_lock(hashtextextended('storage.namespaces/' || v_user::text, 0));
    IF EXISTS (SELECT 1 FROM storage.namespaces n WHERE n.owner_id = v_user AND n.name = v_name AND n.deleted_at IS NULL) THEN
        PERFORM pgcloud.raise('namespace_exists', format('you already have a namespace "%s"', v_name));
    END IF;
    IF (SELECT count(*) FROM storage.namespaces n WHERE n.owner_id = v_user AND n.deleted_at IS NULL) >= lim THEN
        PERFORM pgcloud.raise('namespace_limit_reached', format('at most %s namespaces per user', lim),
                              'Delete an empty namespace with api.delete_namespace(name).');
    END IF;
    INSERT INTO storage.namespaces (owner_id, name) VALUES (v_user, v_name) RETURNING * INTO ns;
    PERFORM pgcloud.audit('storage.namespace_created', 'namespace', ns.id::text, 'ok',
                          jsonb_build_object('name', ns.name));
    PERFORM pgcloud.emit('namespace.created', 'namespace', ns.id::text,
        jsonb_build_object('namespace_id', ns.id, 'owner_id', ns.owner_id, 'name', ns.name, 'created_at', ns.created_at));
    RETURN storage.namespace_json(ns);
END
$$;
COMMENT ON FUNCTION storage.create_namespace_apply(text) IS 'Internal to api.create_namespace() (which authorizes): validates the name, checks the per-user limit, creates it; audited as storage.namespace_created, announced as namespace.created.';

CREATE FUNCTION api.create_namespace(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('storage.create_namespace', jsonb_build_object('name', name)),
                    pgcloud.idempotent_done('storage.create_namespace', storage.create_namespace_apply(name)));
END
$$;
COMMENT ON FUNCTION api.create_namespace(text) IS 'Creates a namespace of yours called name (2 to 63 of a-z 0-9 -, unique among yours; at most storage.max_namespaces_per_user): returns {id, name, created_at, objects, bytes, max_objects, max_bytes}. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.create_namespace(text)', 'user', 'admin');

CREATE FUNCTION api.list_namespaces() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    RETURN coalesce((SELECT jsonb_agg(storage.namespace_json(n) ORDER BY n.name)
                       FROM storage.namespaces n WHERE n.owner_id = v_user AND n.deleted_at IS NULL), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_namespaces() IS 'Your namespaces, by name, each with its usage and quotas.';
SELECT pgcloud.expose('api.list_namespaces()', 'user', 'admin');

CREATE FUNCTION storage.delete_namespace_apply(p_name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, p_name, true);
    u record;
BEGIN
    SELECT * INTO u FROM storage.usage(ns.id);
    IF u.objects > 0 THEN
        PERFORM pgcloud.raise('namespace_not_empty', format('namespace "%s" holds %s objects', ns.name, u.objects),
                              'Delete its objects with api.delete_object(namespace, path) first.');
    END IF;
    UPDATE storage.namespaces n SET deleted_at = now() WHERE n.id = ns.id RETURNING * INTO ns;
    -- Objects never uploaded go with it.
    UPDATE storage.objects o SET state = 'deleted', deleted_at = now(), updated_at = now(),
           delete_reason = 'namespace_deleted'
     WHERE o.namespace_id = ns.id AND o.state = 'missing';
    PERFORM pgcloud.audit('storage.namespace_deleted', 'namespace', ns.id::text, 'ok',
                          jsonb_build_object('name', ns.name));
    PERFORM pgcloud.emit('namespace.deleted', 'namespace', ns.id::text,
        jsonb_build_object('namespace_id', ns.id, 'owner_id', ns.owner_id, 'name', ns.name, 'deleted_at', ns.deleted_at));
    RETURN jsonb_build_object('id', ns.id, 'name', ns.name, 'deleted_at', ns.deleted_at);
END
$$;
COMMENT ON FUNCTION storage.delete_namespace_apply(text) IS 'Internal to api.delete_namespace() (which authorizes): deletes an empty namespace of the caller; audited as storage.namespace_deleted, announced as namespace.deleted.';

CREATE FUNCTION api.delete_namespace(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('storage.delete_namespace', jsonb_build_object('name', name)),
                    pgcloud.idempotent_done('storage.delete_namespace', storage.delete_namespace_apply(name)));
END
$$;
COMMENT ON FUNCTION api.delete_namespace(text) IS 'Deletes your namespace name when it holds no pending or stored object (namespace_not_empty, 409, otherwise): returns {id, name, deleted_at}. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.delete_namespace(text)', 'user', 'admin');
