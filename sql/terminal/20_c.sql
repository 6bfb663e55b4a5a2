-- C primitives shared with auth's (same symbols in pgcloud.so): a token from
-- the CSPRNG and its SHA-256.

CREATE FUNCTION terminal.random_token(prefix text, nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_random_token';
COMMENT ON FUNCTION terminal.random_token(text, integer) IS 'prefix followed by the base64url of nbytes (16-64) bytes from the operating system''s CSPRNG.';

CREATE FUNCTION terminal.token_hash(token text) RETURNS bytea
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_secret_hash';
COMMENT ON FUNCTION terminal.token_hash(text) IS 'SHA-256 of a terminal token: the only form in which it is stored.';
