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
