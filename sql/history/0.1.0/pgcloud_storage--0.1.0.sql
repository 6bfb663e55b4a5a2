-- pgcloud_storage install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_storage" to load this file. \quit

SELECT pgcloud.service_begin('storage');
-- source: sql/storage/00_catalogue.sql
-- pgcloud_storage: object-storage namespaces, object metadata and pre-signed
-- S3 URLs. Schema storage, owned by pgcloud_svc_storage (created by
-- pgcloud.service_begin).
--
-- Decisions:
--   * The bytes live in one S3 bucket (pgcloud.s3_bucket); pgcloud keeps the
--     metadata. An object's key is "<namespace id>/<path>", the path checked
--     and normalised by pgcloud.safe_path() (C), so no name a user picks can
--     reach outside its namespace or collide with another user's.
--   * api.presign() signs in C (AWS Signature Version 4, query signing, OpenSSL
--     HMAC-SHA256; src/storage/sigv4.c) from the superuser-only pgcloud.s3_*
--     settings: the secret never reaches SQL. expires_in is bounded by policy
--     and by AWS's seven days.
--   * A PUT URL records the object as pending, after the namespace's quotas
--     (objects, bytes) are checked. It becomes stored when a HEAD through the
--     HTTP executor (target s3, signed at send time) answers 200: its size,
--     ETag and content type are recorded and object.stored is announced. The
--     HEAD is asked for by api.complete_upload() and by the storage.check_pending()
--     job; a 404 after the URL has expired and storage.missing_grace_seconds
--     have passed makes the object missing. A stored object that takes the
--     namespace over its byte quota is deleted again (reason quota_exceeded).
--   * Deleting an object marks it deleted at once (object.deleted) and writes
--     an S3 DELETE intent; a namespace can be deleted only when empty.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('namespace_invalid',       400, 'The namespace name is not valid.', 'storage'),
    ('namespace_exists',        409, 'You already have a namespace with this name.', 'storage'),
    ('namespace_not_found',     404, 'The namespace does not exist.', 'storage'),
    ('namespace_not_empty',     409, 'The namespace still holds objects.', 'storage'),
    ('namespace_limit_reached', 409, 'You have reached the number of namespaces you may have.', 'storage'),
    ('object_not_found',        404, 'The object does not exist.', 'storage'),
    ('quota_exceeded',          409, 'The namespace''s quota does not allow this upload.', 'storage'),
    ('presign_invalid',         400, 'The pre-signed URL request is not valid.', 'storage'),
    ('storage_not_configured',  503, 'Object storage is not configured.', 'storage');

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('storage.max_namespaces_per_user', '20', 'Namespaces a user may have at once.'),
    ('storage.max_objects_per_namespace', '100000', 'Objects (pending or stored) a namespace may hold; checked before a PUT URL is signed.'),
    ('storage.max_bytes_per_namespace', '10737418240', 'Bytes of stored objects a namespace may hold (10 GiB); a PUT is refused once it is reached, and an upload that overshoots it is deleted again.'),
    ('storage.presign_max_expires_seconds', '3600', 'Longest validity of a pre-signed URL (seconds; never more than AWS''s 604800).'),
    ('storage.confirm_interval_seconds', '30', 'How often a pending object is checked with a HEAD request (seconds).'),
    ('storage.missing_grace_seconds', '300', 'How long after its PUT URL expired a pending object not found by HEAD is reported missing (seconds).'),
    ('storage.list_max', '1000', 'Most objects api.list_objects() returns in one page.');

-- source: sql/storage/10_tables.sql
-- Users (read model), namespaces, objects.

CREATE TABLE storage.users (
    user_id    uuid PRIMARY KEY,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE storage.users IS 'Read model of users (from user.created), for the operators'' views.';
COMMENT ON COLUMN storage.users.user_id IS 'The user.';
COMMENT ON COLUMN storage.users.email IS 'E-mail address.';
COMMENT ON COLUMN storage.users.created_at IS 'When the event was applied.';

CREATE TABLE storage.namespaces (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id    uuid NOT NULL,
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX namespaces_owner_name_idx ON storage.namespaces (owner_id, name) WHERE deleted_at IS NULL;
COMMENT ON TABLE storage.namespaces IS 'Namespaces: a user''s named object containers; their objects'' S3 keys start with the namespace id.';
COMMENT ON COLUMN storage.namespaces.id IS 'Namespace id: the S3 key prefix of its objects.';
COMMENT ON COLUMN storage.namespaces.owner_id IS 'The user who owns it.';
COMMENT ON COLUMN storage.namespaces.name IS 'Name, unique per user among live namespaces (2 to 63 of a-z 0-9 -).';
COMMENT ON COLUMN storage.namespaces.created_at IS 'When it was created.';
COMMENT ON COLUMN storage.namespaces.deleted_at IS 'When it was deleted (only an empty namespace can be).';

CREATE TABLE storage.object_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE storage.object_transitions IS 'Allowed changes of storage.objects.state (from_state NULL: initial state).';
COMMENT ON COLUMN storage.object_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN storage.object_transitions.to_state IS 'State after.';
INSERT INTO storage.object_transitions (from_state, to_state) VALUES
    (NULL, 'pending'),
    ('pending', 'stored'), ('pending', 'missing'), ('pending', 'deleted'),
    ('stored', 'pending'),      -- overwritten: a new PUT URL
    ('stored', 'deleted'),
    ('missing', 'pending'), ('missing', 'deleted');

CREATE TABLE storage.objects (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    namespace_id      uuid NOT NULL REFERENCES storage.namespaces (id),
    path              text NOT NULL CHECK (octet_length(path) BETWEEN 1 AND 1024),
    state             text NOT NULL CHECK (state IN ('pending', 'stored', 'missing', 'deleted')),
    size              bigint CHECK (size >= 0),
    etag              text,
    content_type      text,
    upload_expires_at timestamptz,
    next_check_at     timestamptz,
    check_intent_id   uuid,
    checks            integer NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    stored_at         timestamptz,
    deleted_at        timestamptz,
    delete_reason     text
);
CREATE UNIQUE INDEX objects_live_path_idx ON storage.objects (namespace_id, path COLLATE "C") WHERE state <> 'deleted';
CREATE INDEX objects_pending_idx ON storage.objects (next_check_at) WHERE state = 'pending';
CREATE TRIGGER objects_state BEFORE INSERT OR UPDATE OF state ON storage.objects
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'storage.object_transitions');
COMMENT ON TABLE storage.objects IS 'Object metadata: one live row per (namespace, path); deleted rows stay as history.';
COMMENT ON COLUMN storage.objects.id IS 'Object id.';
COMMENT ON COLUMN storage.objects.namespace_id IS 'Its namespace.';
COMMENT ON COLUMN storage.objects.path IS 'Path inside the namespace, as pgcloud.safe_path() normalised it.';
COMMENT ON COLUMN storage.objects.state IS 'pending (PUT URL given, not confirmed), stored (HEAD confirmed size and ETag), missing (never uploaded) or deleted.';
COMMENT ON COLUMN storage.objects.size IS 'Size in bytes (from HEAD).';
COMMENT ON COLUMN storage.objects.etag IS 'ETag (from HEAD).';
COMMENT ON COLUMN storage.objects.content_type IS 'Content-Type (from HEAD).';
COMMENT ON COLUMN storage.objects.upload_expires_at IS 'When the last PUT URL expires.';
COMMENT ON COLUMN storage.objects.next_check_at IS 'When a pending object is checked (HEAD) next.';
COMMENT ON COLUMN storage.objects.check_intent_id IS 'The HEAD intent in flight, if any.';
COMMENT ON COLUMN storage.objects.checks IS 'HEAD checks made while pending.';
COMMENT ON COLUMN storage.objects.created_at IS 'When the first PUT URL was signed.';
COMMENT ON COLUMN storage.objects.updated_at IS 'Last change.';
COMMENT ON COLUMN storage.objects.stored_at IS 'When it was last confirmed stored.';
COMMENT ON COLUMN storage.objects.deleted_at IS 'When it was deleted.';
COMMENT ON COLUMN storage.objects.delete_reason IS 'Why: deleted (by its owner), presigned_delete, quota_exceeded, namespace_deleted.';

SELECT pg_catalog.pg_extension_config_dump('storage.users', '');
SELECT pg_catalog.pg_extension_config_dump('storage.namespaces', '');
SELECT pg_catalog.pg_extension_config_dump('storage.objects', '');

-- source: sql/storage/20_c.sql
-- C: the SigV4 signer (src/storage/sigv4.c, src/storage/storage.c).

CREATE FUNCTION storage.presign_url(method text, key text, at timestamptz, expires integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_storage_presign_url';
COMMENT ON FUNCTION storage.presign_url(text, text, timestamptz, integer) IS 'A pre-signed S3 URL (AWS SigV4 query signing, C) for method (GET, PUT, HEAD, DELETE) on the object key, signed at at for expires seconds (1 to 604800), from the pgcloud.s3_* settings; storage_not_configured (503) when they are missing or invalid. The secret never leaves C.';

CREATE FUNCTION storage.presign_with(method text, key text, at timestamptz, expires integer, endpoint text,
                                     region text, bucket text, access_key_id text, secret_access_key text,
                                     path_style boolean, OUT url text, OUT canonical_request text)
RETURNS record
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_storage_presign_with';
COMMENT ON FUNCTION storage.presign_with(text, text, timestamptz, integer, text, text, text, text, text, boolean) IS 'The same signer with explicit settings, and the canonical request it signed (tests: AWS''s examples and botocore).';

CREATE FUNCTION storage.sigv4_signature(secret text, amz_date text, region text, service text,
                                        canonical_request text) RETURNS text
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_storage_sigv4_signature';
COMMENT ON FUNCTION storage.sigv4_signature(text, text, text, text, text) IS 'The SigV4 signature (hex) of a canonical request: key derivation from the secret, date, region and service, string to sign, HMAC-SHA256 (tests: AWS''s Signature Version 4 test suite).';

CREATE FUNCTION storage.uri_encode(s text, keep_slash boolean) RETURNS text
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_storage_uri_encode';
COMMENT ON FUNCTION storage.uri_encode(text, boolean) IS 'URI encoding as SigV4 wants it: A-Z a-z 0-9 - _ . ~ kept, every other byte %XX (upper case); / kept when keep_slash.';

-- source: sql/storage/30_namespaces.sql
-- Namespaces: create, list, delete when empty.

CREATE FUNCTION storage.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'this call needs a signed-in user (the JWT sub claim)');
    END IF;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION storage.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

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

CREATE FUNCTION storage.create_namespace_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := storage.require_user();
    v_name text := storage.check_name(args ->> 'name');
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
COMMENT ON FUNCTION storage.create_namespace_apply(jsonb) IS 'Internal to api.create_namespace(): validates {name}, checks the per-user limit, creates it; audited as storage.namespace_created, announced as namespace.created.';

CREATE FUNCTION api.create_namespace(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('storage.create_namespace', jsonb_build_object('name', name),
                              'storage.create_namespace_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.create_namespace(text) IS 'Creates a namespace of yours called name (2 to 63 of a-z 0-9 -, unique among yours; at most storage.max_namespaces_per_user): returns {id, name, created_at, objects, bytes, max_objects, max_bytes}. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.list_namespaces() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := storage.require_user();
    RETURN coalesce((SELECT jsonb_agg(storage.namespace_json(n) ORDER BY n.name)
                       FROM storage.namespaces n WHERE n.owner_id = v_user AND n.deleted_at IS NULL), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_namespaces() IS 'Your namespaces, by name, each with its usage and quotas.';

CREATE FUNCTION storage.delete_namespace_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := storage.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, args ->> 'name', true);
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
COMMENT ON FUNCTION storage.delete_namespace_apply(jsonb) IS 'Internal to api.delete_namespace(): deletes an empty namespace of the caller; audited as storage.namespace_deleted, announced as namespace.deleted.';

CREATE FUNCTION api.delete_namespace(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('storage.delete_namespace', jsonb_build_object('name', name),
                              'storage.delete_namespace_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.delete_namespace(text) IS 'Deletes your namespace name when it holds no pending or stored object (namespace_not_empty, 409, otherwise): returns {id, name, deleted_at}. Safe to retry with X-Idempotency-Key.';

-- source: sql/storage/40_objects.sql
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

CREATE FUNCTION storage.presign_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := storage.require_user();
    v_method text := upper(args ->> 'method');
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
        PERFORM pgcloud.raise('presign_invalid', format('method "%s" is not GET, PUT, HEAD or DELETE', left(coalesce(args ->> 'method', ''), 16)));
    END IF;
    IF jsonb_typeof(args -> 'expires_in') IS DISTINCT FROM 'number' THEN
        PERFORM pgcloud.raise('presign_invalid', 'expires_in (seconds) is required');
    END IF;
    v_expires := (args ->> 'expires_in')::integer;
    IF v_expires < 1 OR v_expires > max_expires THEN
        PERFORM pgcloud.raise('presign_invalid', format('expires_in must be between 1 and %s seconds', max_expires));
    END IF;
    IF args ->> 'path' IS NULL THEN
        PERFORM pgcloud.raise('path_invalid', 'a path is required');
    END IF;
    v_path := pgcloud.safe_path(args ->> 'path');
    ns := storage.namespace_of(v_user, args ->> 'namespace', v_method IN ('PUT', 'DELETE'));
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
COMMENT ON FUNCTION storage.presign_apply(jsonb) IS 'Internal to api.presign(): validates {namespace, path, method, expires_in}, checks the quotas before a PUT and records the object pending; a DELETE URL marks the object deleted. Audited for PUT and DELETE.';

CREATE FUNCTION api.presign(namespace text, path text, method text, expires_in int) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('storage.presign',
        jsonb_build_object('namespace', namespace, 'path', path, 'method', method, 'expires_in', expires_in),
        'storage.presign_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.presign(text, text, text, int) IS 'A pre-signed S3 URL (AWS Signature Version 4) for method GET, HEAD (a stored object), PUT (upload; the namespace''s object and byte quotas are checked first and the object is recorded pending until a HEAD confirms it) or DELETE, valid expires_in seconds (1 to storage.presign_max_expires_seconds): returns {url, method, expires_at, namespace, path, object_id}. The path is checked by pgcloud.safe_path(). Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION storage.complete_upload_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := storage.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, args ->> 'namespace');
    v_path text := pgcloud.safe_path(coalesce(args ->> 'path', ''));
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
COMMENT ON FUNCTION storage.complete_upload_apply(jsonb) IS 'Internal to api.complete_upload(): asks for the HEAD that confirms a pending object now.';

CREATE FUNCTION api.complete_upload(namespace text, path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('storage.complete_upload', jsonb_build_object('namespace', namespace, 'path', path),
                              'storage.complete_upload_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.complete_upload(text, text) IS 'Tells pgcloud an upload through a PUT URL is done: a pending object is checked (HEAD) right away instead of at the next periodic check; returns the object (state pending until the check answers, then stored). Safe to retry with X-Idempotency-Key.';

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
    v_user := storage.require_user();
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

CREATE FUNCTION storage.delete_object_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v_user uuid := storage.require_user();
    ns storage.namespaces := storage.namespace_of(v_user, args ->> 'namespace', true);
    v_path text := pgcloud.safe_path(coalesce(args ->> 'path', ''));
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
COMMENT ON FUNCTION storage.delete_object_apply(jsonb) IS 'Internal to api.delete_object(): marks the object deleted (object.deleted) and writes the S3 DELETE; audited as storage.object_deleted.';

CREATE FUNCTION api.delete_object(namespace text, path text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('storage.delete_object', jsonb_build_object('namespace', namespace, 'path', path),
                              'storage.delete_object_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.delete_object(text, text) IS 'Deletes an object of your namespace: gone from listings at once (object.deleted), its bytes removed from S3 right after. Returns the object with state deleted. Safe to retry with X-Idempotency-Key.';

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

-- source: sql/storage/80_events.sql
-- The read model: user.created.

CREATE FUNCTION storage.on_user_created(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v text := coalesce(payload ->> 'user_id', aggregate_id);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field user_id must be a uuid');
    END IF;
    INSERT INTO storage.users AS u (user_id, email) VALUES (v::uuid, payload ->> 'email')
    ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, u.email);
END
$$;
COMMENT ON FUNCTION storage.on_user_created(text, jsonb) IS 'user.created: records the user in storage.users.';

CREATE FUNCTION storage.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                 payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    IF event_type = 'user.created' THEN
        PERFORM storage.on_user_created(aggregate_id, payload);
    END IF;
END
$$;
COMMENT ON FUNCTION storage.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created goes to storage.on_user_created(). Other types are ignored.';

-- Operators.
CREATE VIEW storage.namespace_usage AS
    SELECT n.id, n.owner_id, u.email, n.name, n.created_at, x.objects, x.bytes,
           (SELECT count(*) FROM storage.objects o WHERE o.namespace_id = n.id AND o.state = 'pending') AS pending,
           (SELECT count(*) FROM storage.objects o WHERE o.namespace_id = n.id AND o.state = 'missing') AS missing
      FROM storage.namespaces n
      LEFT JOIN storage.users u ON u.user_id = n.owner_id
     CROSS JOIN LATERAL storage.usage(n.id) x
     WHERE n.deleted_at IS NULL;
COMMENT ON VIEW storage.namespace_usage IS 'Operators: every live namespace with its owner and what it holds.';
COMMENT ON COLUMN storage.namespace_usage.id IS 'Namespace id.';
COMMENT ON COLUMN storage.namespace_usage.owner_id IS 'Owner.';
COMMENT ON COLUMN storage.namespace_usage.email IS 'Owner''s e-mail (read model).';
COMMENT ON COLUMN storage.namespace_usage.name IS 'Name.';
COMMENT ON COLUMN storage.namespace_usage.created_at IS 'Created.';
COMMENT ON COLUMN storage.namespace_usage.objects IS 'Objects pending or stored.';
COMMENT ON COLUMN storage.namespace_usage.bytes IS 'Bytes stored.';
COMMENT ON COLUMN storage.namespace_usage.pending IS 'Objects waiting for confirmation.';
COMMENT ON COLUMN storage.namespace_usage.missing IS 'Objects never uploaded.';

-- source: sql/storage/85_jobs.sql
-- pg_cron: the pending-object check.

CREATE FUNCTION storage.schedule_jobs() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'Run CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    END IF;
    PERFORM cron.schedule('storage.check_pending', '30 seconds', 'SELECT storage.check_pending()');
    RETURN 1;
END
$$;
COMMENT ON FUNCTION storage.schedule_jobs() IS 'Schedules storage.check_pending() every 30 seconds with pg_cron, in the database where pg_cron is installed. Idempotent: pg_cron replaces a job of the same name. Returns the number of jobs.';

-- source: sql/storage/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_namespace(text), api.list_namespaces(), api.delete_namespace(text),
    api.presign(text, text, text, int), api.complete_upload(text, text),
    api.list_objects(text, text, int, text), api.delete_object(text, text)
    TO pgcloud_user, pgcloud_admin;

SELECT pgcloud.service_end('storage');
