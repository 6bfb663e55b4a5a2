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
