-- Exposure: who may call an api function, declared once, next to its
-- definition. Right after `CREATE FUNCTION api.x(...)` and its COMMENT:
--
--   SELECT pgcloud.expose('api.x(text, uuid)', 'user', 'admin');
--
-- The declaration is the GRANT: it revokes EXECUTE from PUBLIC and from
-- every API role it does not name, and grants it to pgcloud_<role> for each
-- role it names. There is no other GRANT list for api functions; the pgTAP
-- test 05_api_exposure checks that every function in schema api has exactly
-- one exposure and that its EXECUTE privileges are what it declares. The
-- function itself still calls pgcloud.authorize() (or authorize_scope /
-- authorize_service) once, in the api function, which refines the role
-- (operators at psql, scopes, tenants); its _apply handler does not check
-- again.

CREATE TABLE pgcloud.api_exposures (
    function_oid  oid PRIMARY KEY,
    signature     text NOT NULL,
    roles         text[] NOT NULL CHECK (cardinality(roles) > 0
                                         AND roles <@ ARRAY['anon', 'user', 'admin', 'service']),
    declared_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgcloud.api_exposures IS 'Who may call each api function, as declared by pgcloud.expose() next to its definition; its EXECUTE grants follow from this row.';
COMMENT ON COLUMN pgcloud.api_exposures.function_oid IS 'The api function (pg_proc oid).';
COMMENT ON COLUMN pgcloud.api_exposures.signature IS 'The function''s signature when it was declared (regprocedure text); a row whose oid no longer has this signature is stale and dropped.';
COMMENT ON COLUMN pgcloud.api_exposures.roles IS 'The API roles (anon, user, admin, service) that may EXECUTE it, each meaning role pgcloud_<name>.';
COMMENT ON COLUMN pgcloud.api_exposures.declared_at IS 'When the exposure was declared (the service''s installation).';

CREATE FUNCTION pgcloud.expose(fn regprocedure, VARIADIC roles text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    r text;
BEGIN
    IF fn IS NULL OR (SELECT n.nspname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                       WHERE p.oid = fn) IS DISTINCT FROM 'api' THEN
        RAISE EXCEPTION 'pgcloud.expose(): % is not a function in schema api', fn;
    END IF;
    IF roles IS NULL OR cardinality(roles) = 0
       OR NOT roles <@ ARRAY['anon', 'user', 'admin', 'service']
       OR cardinality(roles) <> (SELECT count(DISTINCT x) FROM unnest(roles) x) THEN
        RAISE EXCEPTION 'pgcloud.expose(%): roles must be distinct names among anon, user, admin, service, not %', fn, roles;
    END IF;
    -- Rows of functions dropped with their extension (or whose oid was
    -- reused since) are stale.
    DELETE FROM pgcloud.api_exposures e
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                        WHERE p.oid = e.function_oid AND p.oid::regprocedure::text = e.signature);
    IF EXISTS (SELECT 1 FROM pgcloud.api_exposures e WHERE e.function_oid = fn) THEN
        RAISE EXCEPTION 'pgcloud.expose(): % is already exposed; declare its exposure once', fn;
    END IF;
    INSERT INTO pgcloud.api_exposures (function_oid, signature, roles) VALUES (fn, fn::text, roles);
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service', fn);
    FOREACH r IN ARRAY roles LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, 'pgcloud_' || r);
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgcloud.expose(regprocedure, text[]) IS 'Install-time: declares who may call an api function (roles among anon, user, admin, service, each meaning pgcloud_<role>) and makes its EXECUTE privileges exactly that (PUBLIC and undeclared API roles revoked). Called once per api function, right after its definition; recorded in pgcloud.api_exposures.';

CREATE VIEW pgcloud.api_surface AS
SELECT p.oid::regprocedure AS function, e.roles,
       ARRAY(SELECT r FROM unnest(ARRAY['anon', 'user', 'admin', 'service']) r
              WHERE pg_catalog.has_function_privilege('pgcloud_' || r, p.oid, 'EXECUTE')) AS callable_by,
       (SELECT count(*) FROM pgcloud.api_exposures x WHERE x.function_oid = p.oid)::int AS exposures
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'api'
  LEFT JOIN pgcloud.api_exposures e ON e.function_oid = p.oid AND e.signature = p.oid::regprocedure::text;
COMMENT ON COLUMN pgcloud.api_surface.function IS 'The api function.';
COMMENT ON COLUMN pgcloud.api_surface.roles IS 'The API roles its exposure declares (NULL: no exposure).';
COMMENT ON COLUMN pgcloud.api_surface.callable_by IS 'The API roles that can EXECUTE it now.';
COMMENT ON COLUMN pgcloud.api_surface.exposures IS 'How many exposure rows name it (1 when declared once).';
COMMENT ON VIEW pgcloud.api_surface IS 'Every function in schema api with its declared exposure (roles, NULL when undeclared), the API roles that can actually EXECUTE it (callable_by) and how many exposure rows name it; the two agree when the grants follow the declaration.';
