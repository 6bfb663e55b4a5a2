-- Authorization, decided in one place. Every api function asks here.

CREATE FUNCTION pgcloud.is_operator() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    -- A superuser at psql, with no JWT and no SET ROLE, acts as an operator.
    SELECT pgcloud.claims() = '{}'::jsonb
       AND current_setting('role') = 'none'
       AND coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
$$;
COMMENT ON FUNCTION pgcloud.is_operator() IS 'True for a superuser session at psql with no JWT claims and no SET ROLE: such a session acts as pgcloud_admin.';

CREATE FUNCTION pgcloud.authorize(required text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role text := pgcloud.request_role();
BEGIN
    IF required NOT IN ('anon', 'user', 'admin', 'service') THEN
        PERFORM pgcloud.raise('invalid_argument', format('unknown required role "%s"', required));
    END IF;
    IF pgcloud.is_operator() THEN
        RETURN 'pgcloud_admin';
    END IF;
    IF required = 'anon'
       OR (required = 'user' AND role IN ('pgcloud_user', 'pgcloud_admin'))
       OR (required = 'admin' AND role = 'pgcloud_admin')
       OR (required = 'service' AND role = 'pgcloud_service') THEN
        RETURN role;
    END IF;
    IF role = 'pgcloud_anon' OR role IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', format('this call needs role pgcloud_%s', required));
    END IF;
    PERFORM pgcloud.raise('forbidden', format('this call needs role pgcloud_%s, not %s', required, role));
END
$$;
COMMENT ON FUNCTION pgcloud.authorize(text) IS 'Checks that the request may act with the given role (anon, user, admin or service) and returns the effective role; raises unauthenticated (401) or forbidden (403).';
