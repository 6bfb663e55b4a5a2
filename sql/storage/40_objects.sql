-- Objects: pre-signed URLs, confirmation by HEAD, listing, deletion.

-- The S3 key of a path in a namespace, and the path of an s3 intent for it.
CREATE FUNCTION storage.s3_key(ns uuid, path text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$ SELECT ns::text || '/' || path $$;
COMMENT ON FUNCTION storage.s3_key(uuid, text) IS 'The S3 key of an object: "<namespace id>/<path>".';

CREATE FUNCTION storage.object_json(o storage.objects, ns storage.namespaces) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$
    SELECT jsonb_build_object('id', o.id, 'namespace', ns.name, 'path', o.path, 'state', o.state, 'size', o.size,
                              'etag', o.etag, 'content_type', o.content_type, 'created_at', o.created_at,
                              'updated_at', o.updated_at, 'stored_at', o.stored_at)
$$;
COMMENT ON FUNCTION storage.object_json(storage.objects, storage.namespaces) IS 'The API form of an object: id, namespace, path, state, size, etag, content_type, created_at, updated_at, stored_at.';

-- Writes the HEAD that confirms a pending object.
CREATE FUNCTION storage.request_check(o storage.objects) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    intent uuid;
BEGIN
    intent := pgcloud.http_request('s3', 'HEAD', '/' || storage.uri_encode(storage.s3_key(o.namespace_id, o.path), true),
                                   NULL, NULL, '{}'::jsonb, NULL,
                                   'storage.on_s3_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
                                   jsonb_build_object('kind', 'confirm', 'object_id', o.id));
    UPDATE storage.objects x SET check_intent_id = intent, checks = x.checks + 1,
           next_check_at = now() + make_interval(secs => pgcloud.policy('storage.confirm_interval_seconds', NULL::integer))
     WHERE x.id = o.id;
    RETURN intent;
END
$$;
COMMENT ON FUNCTION storage.request_check(storage.objects) IS 'Writes a HEAD intent (target s3, signed at send time) whose result confirms or refutes a pending object; the next check is due storage.confirm_interval_seconds later.';

CREATE FUNCTION storage.delete_bytes(o storage.objects) RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
    SELECT pgcloud.http_request('s3', 'DELETE', '/' || storage.uri_encode(storage.s3_key(o.namespace_id, o.path), true),
                                NULL, NULL, '{}'::jsonb, NULL,
                                'storage.on_s3_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
                                jsonb_build_object('kind', 'delete', 'object_id', o.id))
$$;
COMMENT ON FUNCTION storage.delete_bytes(storage.objects) IS 'Writes the S3 DELETE of an object''s bytes (target s3).';

CREATE FUNCTION storage.mark_deleted(o storage.objects, ns storage.namespaces, reason text) RETURNS storage.objects
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    UPDATE storage.objects x SET state = 'deleted', deleted_at = now(), updated_at = now(), delete_reason = reason,
           next_check_at = NULL
     WHERE x.id = o.id RETURNING * INTO o;
    PERFORM pgcloud.emit('object.deleted', 'object', o.id::text,
        jsonb_build_object('object_id', o.id, 'namespace_id', ns.id, 'namespace', ns.name, 'owner_id', ns.owner_id,
                           'path', o.path, 'size', o.size, 'reason', reason, 'deleted_at', o.deleted_at));
    RETURN o;
END
$$;
COMMENT ON FUNCTION storage.mark_deleted(storage.objects, storage.namespaces, text) IS 'Marks an object deleted (with the reason) and announces object.deleted.';

CREATE FUNCTION storage.presign_apply(p_namespace text, p_path text, p_method text, p_expires_in integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_method text := upper(p_method);
    v_expires integer;
    max_expires integer := least(pgcloud.policy('storage.presign_max_expires_seconds', NULL::integer), 604800);
    v_path text;
    ns storage.namespaces;
    o storage.objects;
    u record;
    at timestamptz := date_trunc('second', clock_timestamp());
    url text;
BEGIN
    IF v_method IS NULL OR v_method NOT IN ('GET', 'PUT', 'HEAD', 'DELETE') THEN
        PERFORM pgcloud.raise('presign_invalid', format('method "%s" is not GET, PUT, HEAD or DELETE', left(coalesce(p_method, ''), 16)));
    END IF;
    IF p_expires_in IS NULL THEN
        PERFORM pgcloud.raise('presign_invalid', 'expires_in (seconds) is required');
    END IF;
    v_expires := p_expires_in;
    IF v_expires < 1 OR v_expires > max_expires THEN
        PERFORM pgcloud.raise('presign_invalid', format('expires_in must be between 1 and %s seconds', max_expires));
    END IF;
    IF p_path IS NULL THEN
        PERFORM pgcloud.raise('path_invalid', 'a path is required');
    END IF;
    v_path := pgcloud.safe_path(p_path);
    ns := storage.namespace_of(v_user, p_namespace, v_method IN ('PUT', 'DELETE'));
    SELECT * INTO o FROM storage.objects x WHERE x.namespace_id = ns.id AND x.path = v_path AND x.state <> 'deleted'
       FOR UPDATE;

    IF v_method IN ('GET', 'HEAD') AND (o.id IS NULL OR o.state <> 'stored') THEN
        PERFORM pgcloud.raise('object_not_found', format('no stored object "%s" in namespace "%s"', v_path, ns.name));
    ELSIF v_method = 'DELETE' AND o.id IS NULL THEN
        PERFORM pgcloud.raise('object_not_found', format('no object "%s" in namespace "%s"', v_path, ns.name));
    END IF;

    -- Sign first: an unconfigured platform changes nothing.
    url := storage.presign_url(v_method, storage.s3_key(ns.id, v_path), at, v_expires);

    IF v_method = 'PUT' THEN
        -- Quotas before the URL is handed out (the namespace row is locked: uploads are counted one at a time).
        SELECT * INTO u FROM storage.usage(ns.id);
        IF o.id IS NULL AND u.objects >= pgcloud.policy('storage.max_objects_per_namespace', NULL::bigint) THEN
            PERFORM pgcloud.raise('quota_exceeded', format('namespace "%s" holds %s objects, its limit', ns.name, u.objects),
                                  'Delete objects you no longer need.');
        END IF;
        IF u.bytes - coalesce(CASE WHEN o.state = 'stored' THEN o.size END, 0)
           >= pgcloud.policy('storage.max_bytes_per_namespace', NULL::bigint) THEN
            PERFORM pgcloud.raise('quota_exceeded', format('namespace "%s" holds %s bytes, its limit', ns.name, u.bytes),
                                  'Delete objects you no longer need.');
        END IF;
        IF o.id IS NULL THEN
            INSERT INTO storage.objects (namespace_id, path, state, upload_expires_at, next_check_at)
            VALUES (ns.id, v_path, 'pending', at + make_interval(secs => v_expires),
                    now() + make_interval(secs => pgcloud.policy('storage.confirm_interval_seconds', NULL::integer)))
            RETURNING * INTO o;
        ELSE
            UPDATE storage.objects x
               SET state = 'pending', upload_expires_at = greatest(x.upload_expires_at, at + make_interval(secs => v_expires)),
                   next_check_at = now() + make_interval(secs => pgcloud.policy('storage.confirm_interval_seconds', NULL::integer)),
                   checks = 0, updated_at = now()
             WHERE x.id = o.id RETURNING * INTO o;
        END IF;
    ELSIF v_method = 'DELETE' THEN
        o := storage.mark_deleted(o, ns, 'presigned_delete');
    END IF;
    IF v_method IN ('PUT', 'DELETE') THEN
        PERFORM pgcloud.audit('storage.presigned_' || lower(v_method), 'object', o.id::text, 'ok',
            jsonb_build_object('namespace', ns.name, 'path', v_path, 'expires_in', v_expires));
    END IF;
    RETURN jsonb_build_object('url', url, 'method', v_method, 'expires_at', at + make_interval(secs => v_expires),
                              'namespace', ns.name, 'path', v_path, 'object_id', o.id);
END
$$;
COMMENT ON FUNCTION storage.presign_apply(text, text, text, integer) IS 'Internal to api.presign() (which authorizes): validates namespace, path, method and expires_in, checks the quotas before a PUT and records the object pending; a DELETE URL marks the object deleted. Audited for PUT and DELETE.';

CREATE FUNCTION api.presign(namespace text, path text, method text, expires_in int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('storage.presign', jsonb_build_object('namespace', namespace, 'path', path, 'method', method, 'expires_in', expires_in)),
                    pgcloud.idempotent_done('storage.presign', storage.presign_apply(namespace, path, method, expires_in)));
END
$$;
COMMENT ON FUNCTION api.presign(text, text, text, int) IS 'A pre-signed S3 URL (AWS Signature Version 4) for method GET, HEAD (a stored object), PUT (upload; the namespace''s object and byte quotas are checked first and the object is recorded pending until a HEAD confirms it) or DELETE, valid expires_in seconds (1 to storage.presign_max_expires_seconds): returns {url, method, expires_at, namespace, path, object_id}. The path is checked by pgcloud.safe_path(). Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.presign(text, text, text, int)', 'user', 'admin');

CREATE FUNCTION storage.complete_upload_apply(p_namespace text, p_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, p_namespace);
    v_path text := pgcloud.safe_path(coalesce(p_path, ''));
    o storage.objects;
BEGIN
    SELECT * INTO o FROM storage.objects x WHERE x.namespace_id = ns.id AND x.path = v_path AND x.state <> 'deleted'
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('object_not_found', format('no object "%s" in namespace "%s"', v_path, ns.name));
    END IF;
    IF o.state = 'pending' THEN
        PERFORM storage.request_check(o);
        SELECT * INTO o FROM storage.objects x WHERE x.id = o.id;
    END IF;
    RETURN storage.object_json(o, ns);
END
$$;
COMMENT ON FUNCTION storage.complete_upload_apply(text, text) IS 'Internal to api.complete_upload() (which authorizes): asks for the HEAD that confirms a pending object now.';

CREATE FUNCTION api.complete_upload(namespace text, path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('storage.complete_upload', jsonb_build_object('namespace', namespace, 'path', path)),
                    pgcloud.idempotent_done('storage.complete_upload', storage.complete_upload_apply(namespace, path)));
END
$$;
COMMENT ON FUNCTION api.complete_upload(text, text) IS 'Tells pgcloud an upload through a PUT URL is done: a pending object is checked (HEAD) right away instead of at the next periodic check; returns the object (state pending until the check answers, then stored). Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.complete_upload(text, text)', 'user', 'admin');

CREATE FUNCTION api.list_objects(namespace text, prefix text DEFAULT '', "limit" int DEFAULT 100, after text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid;
    ns storage.namespaces;
    lim integer := pgcloud.policy('storage.list_max', NULL::integer);
    items jsonb;
    n integer;
    last_path text;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    ns := storage.namespace_of(v_user, namespace);
    IF "limit" IS NULL OR "limit" < 1 OR "limit" > lim THEN
        PERFORM pgcloud.raise('invalid_argument', format('limit must be between 1 and %s', lim));
    END IF;
    IF prefix IS NULL OR octet_length(prefix) > 1024 OR prefix ~ '[[:cntrl:]]' THEN
        PERFORM pgcloud.raise('invalid_argument', 'prefix must be at most 1024 bytes without control characters');
    END IF;
    IF after IS NOT NULL AND (octet_length(after) > 1024 OR after ~ '[[:cntrl:]]') THEN
        PERFORM pgcloud.raise('invalid_argument', 'after must be a path returned as next_after');
    END IF;
    -- Keyset pagination on the path in byte order (what S3 lists in).
    SELECT coalesce(jsonb_agg(storage.object_json(x, ns) ORDER BY x.path COLLATE "C"), '[]'::jsonb), count(*),
           max(x.path COLLATE "C")
      INTO items, n, last_path
      FROM (SELECT o.* FROM storage.objects o
             WHERE o.namespace_id = ns.id AND o.state IN ('pending', 'stored')
               AND starts_with(o.path, prefix)
               AND (after IS NULL OR o.path COLLATE "C" > after COLLATE "C")
             ORDER BY o.path COLLATE "C"
             LIMIT "limit") x;
    RETURN jsonb_build_object('namespace', ns.name, 'objects', items,
                              'next_after', CASE WHEN n = "limit" THEN last_path END);
END
$$;
COMMENT ON FUNCTION api.list_objects(text, text, int, text) IS 'Objects of your namespace (pending and stored) whose path starts with prefix, in byte order of the path, at most "limit" (1 to storage.list_max): {namespace, objects: [{id, path, state, size, etag, content_type, ...}], next_after}. Pass next_after as after for the next page (NULL: no more).';
SELECT pgcloud.expose('api.list_objects(text, text, int, text)', 'user', 'admin');

CREATE FUNCTION storage.delete_object_apply(p_namespace text, p_path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, p_namespace, true);
    v_path text := pgcloud.safe_path(coalesce(p_path, ''));
    o storage.objects;
BEGIN
    SELECT * INTO o FROM storage.objects x WHERE x.namespace_id = ns.id AND x.path = v_path AND x.state <> 'deleted'
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('object_not_found', format('no object "%s" in namespace "%s"', v_path, ns.name));
    END IF;
    o := storage.mark_deleted(o, ns, 'deleted');
    PERFORM storage.delete_bytes(o);
    PERFORM pgcloud.audit('storage.object_deleted', 'object', o.id::text, 'ok',
                          jsonb_build_object('namespace', ns.name, 'path', o.path, 'size', o.size));
    RETURN storage.object_json(o, ns);
END
$$;
COMMENT ON FUNCTION storage.delete_object_apply(text, text) IS 'Internal to api.delete_object() (which authorizes): marks the object deleted (object.deleted) and writes the S3 DELETE; audited as storage.object_deleted.';

CREATE FUNCTION api.delete_object(namespace text, path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('storage.delete_object', jsonb_build_object('namespace', namespace, 'path', path)),
                    pgcloud.idempotent_done('storage.delete_object', storage.delete_object_apply(namespace, path)));
END
$$;
COMMENT ON FUNCTION api.delete_object(text, text) IS 'Deletes an object of your namespace: gone from listings at once (object.deleted), its bytes removed from S3 right after. Returns the object with state deleted. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.delete_object(text, text)', 'user', 'admin');

-- The HTTP executor's answer to a HEAD (confirm) or DELETE of ours.
CREATE FUNCTION storage.on_s3_result(intent uuid, status integer, response_headers jsonb, response_body text,
                                     context jsonb, final boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    o storage.objects;
    ns storage.namespaces;
    v_size bigint;
    u record;
BEGIN
    IF NOT final OR context ->> 'kind' IS DISTINCT FROM 'confirm' THEN
        RETURN;     -- a DELETE's outcome: the executor dead-letters what never succeeds
    END IF;
    SELECT * INTO o FROM storage.objects x WHERE x.id = (context ->> 'object_id')::uuid FOR UPDATE;
    IF NOT FOUND OR o.state <> 'pending' OR o.check_intent_id IS DISTINCT FROM intent THEN
        RETURN;     -- deleted, confirmed or re-checked meanwhile
    END IF;
    SELECT * INTO ns FROM storage.namespaces n WHERE n.id = o.namespace_id;
    IF status = 200 THEN
        IF coalesce(response_headers ->> 'content-length', '') !~ '^[0-9]{1,18}$' THEN
            UPDATE storage.objects x SET check_intent_id = NULL, updated_at = now() WHERE x.id = o.id;
            RETURN;
        END IF;
        v_size := (response_headers ->> 'content-length')::bigint;
        UPDATE storage.objects x
           SET state = 'stored', size = v_size, etag = left(response_headers ->> 'etag', 200),
               content_type = left(response_headers ->> 'content-type', 255), stored_at = now(), updated_at = now(),
               check_intent_id = NULL, next_check_at = NULL
         WHERE x.id = o.id RETURNING * INTO o;
        SELECT * INTO u FROM storage.usage(ns.id);
        IF u.bytes > pgcloud.policy('storage.max_bytes_per_namespace', NULL::bigint) THEN
            -- The upload overshot the byte quota: it goes again.
            o := storage.mark_deleted(o, ns, 'quota_exceeded');
            PERFORM storage.delete_bytes(o);
            PERFORM pgcloud.audit('storage.object_rejected', 'object', o.id::text, 'rejected',
                jsonb_build_object('namespace', ns.name, 'path', o.path, 'size', v_size, 'namespace_bytes', u.bytes));
            RETURN;
        END IF;
        PERFORM pgcloud.emit('object.stored', 'object', o.id::text,
            jsonb_build_object('object_id', o.id, 'namespace_id', ns.id, 'namespace', ns.name, 'owner_id', ns.owner_id,
                               'path', o.path, 'size', o.size, 'etag', o.etag, 'content_type', o.content_type,
                               'stored_at', o.stored_at));
    ELSIF status = 404 AND clock_timestamp() > o.upload_expires_at
                        + make_interval(secs => pgcloud.policy('storage.missing_grace_seconds', NULL::integer)) THEN
        UPDATE storage.objects x SET state = 'missing', check_intent_id = NULL, next_check_at = NULL, updated_at = now()
         WHERE x.id = o.id;
        PERFORM pgcloud.audit('storage.object_missing', 'object', o.id::text, 'failed',
            jsonb_build_object('namespace', ns.name, 'path', o.path, 'upload_expires_at', o.upload_expires_at));
    ELSE
        -- Not there yet (or S3 failed): the periodic check asks again.
        UPDATE storage.objects x SET check_intent_id = NULL, updated_at = now() WHERE x.id = o.id;
    END IF;
END
$$;
COMMENT ON FUNCTION storage.on_s3_result(uuid, integer, jsonb, text, jsonb, boolean) IS 'HTTP executor callback (target s3): a HEAD answering 200 makes a pending object stored with its Content-Length, ETag and Content-Type (object.stored), or deletes it again when it takes the namespace over its byte quota; a 404 once the PUT URL has expired and storage.missing_grace_seconds have passed makes it missing; otherwise it stays pending for the next check.';

CREATE FUNCTION storage.check_pending(max_objects integer DEFAULT 100) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    o storage.objects;
    n integer := 0;
BEGIN
    FOR o IN SELECT * FROM storage.objects x
              WHERE x.state = 'pending' AND x.next_check_at <= now() AND x.check_intent_id IS NULL
              ORDER BY x.next_check_at LIMIT max_objects FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM storage.request_check(o);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION storage.check_pending(integer) IS 'Periodic job (pg_cron, see storage.schedule_jobs()): writes a HEAD intent for each pending object whose check is due and has none in flight; returns how many.';
