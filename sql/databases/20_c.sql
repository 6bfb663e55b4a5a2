-- C: the target-server connection, SCRAM verifiers, the CSPRNG (src/databases/).

CREATE FUNCTION databases.remote_exec(host text, port integer, admin_user text, admin_password text,
                                      dbname text, statements text[], timeout_ms integer) RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_databases_remote_exec';
COMMENT ON FUNCTION databases.remote_exec(text, integer, text, text, text, text[], integer) IS 'Runs statements in order on one libpq connection to a target server (interruptible, timeout_ms for the whole conversation, remote notices discarded) and returns the first value of the last one; a remote error is raised with its SQLSTATE and the server''s message, never the password.';

CREATE FUNCTION databases.scram_secret(password text) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_scram_secret';
COMMENT ON FUNCTION databases.scram_secret(text) IS 'The SCRAM-SHA-256 verifier of a password (fresh salt): what the target server is given instead of the password.';

CREATE FUNCTION databases.random_token(nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_random_token';
COMMENT ON FUNCTION databases.random_token(integer) IS 'nbytes (1-256) from pg_strong_random() as unpadded base64url: generated passwords.';

CREATE FUNCTION databases.random_hex(nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_random_hex';
COMMENT ON FUNCTION databases.random_hex(integer) IS 'nbytes (1-256) from pg_strong_random() as lower-case hex: generated role and database name suffixes.';
