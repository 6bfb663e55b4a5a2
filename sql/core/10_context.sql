-- Request context: the same from PostgREST (which sets request.jwt.claims and
-- request.headers per transaction) and from psql (where they are set by hand).

CREATE FUNCTION pgcloud.claims() RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_claims';
COMMENT ON FUNCTION pgcloud.claims() IS 'The JWT claims of the current request (request.jwt.claims), or {} when none; raises invalid_request_context when the setting is not a JSON object.';

CREATE FUNCTION pgcloud.headers() RETURNS jsonb
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_headers';
COMMENT ON FUNCTION pgcloud.headers() IS 'The HTTP headers of the current request (request.headers, lower-case names), or {} when none; raises invalid_request_context when the setting is not a JSON object.';

CREATE FUNCTION pgcloud.header(name text) RETURNS text
LANGUAGE C STABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_header';
COMMENT ON FUNCTION pgcloud.header(text) IS 'One request header by name (case-insensitive), or NULL.';

CREATE FUNCTION pgcloud.request_role() RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_role';
COMMENT ON FUNCTION pgcloud.request_role() IS 'The role of the current request: the JWT role claim, else the role set with SET ROLE, else the session user.';

CREATE FUNCTION pgcloud.user_id() RETURNS uuid
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_user_id';
COMMENT ON FUNCTION pgcloud.user_id() IS 'The authenticated principal (the JWT sub claim as uuid), or NULL for anonymous requests; a sub that is not a uuid raises invalid_request_context.';

CREATE FUNCTION pgcloud.correlation_id() RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_correlation_id';
COMMENT ON FUNCTION pgcloud.correlation_id() IS 'The correlation id of the current transaction: X-Correlation-Id when well-formed (1-128 of [A-Za-z0-9._:-]), else a new uuid kept for the rest of the transaction.';

CREATE FUNCTION pgcloud.context() RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT jsonb_build_object(
        'role', pgcloud.request_role(),
        'user_id', pgcloud.user_id(),
        'tenant', pgcloud.claims() ->> 'tenant',
        'project', pgcloud.claims() ->> 'project',
        'scopes', coalesce(pgcloud.claims() -> 'scopes', '[]'::jsonb),
        'correlation_id', pgcloud.correlation_id())
$$;
COMMENT ON FUNCTION pgcloud.context() IS 'The whole request context as JSON: role, user_id, tenant, project, scopes, correlation_id.';

CREATE FUNCTION pgcloud.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
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
COMMENT ON FUNCTION pgcloud.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';
