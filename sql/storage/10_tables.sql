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
