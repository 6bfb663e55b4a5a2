-- Service extension lifecycle. Every service install script is wrapped by
-- the build in service_begin()/service_end().

CREATE FUNCTION pgcloud.service_begin(service text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role_name text := 'pgcloud_svc_' || service;
    s pgcloud.services;
BEGIN
    SELECT * INTO s FROM pgcloud.services WHERE name = service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service "%" is not in the pgcloud registry', service;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
    END IF;
    IF NOT pg_catalog.pg_has_role(role_name, 'pgcloud_services', 'MEMBER') THEN
        EXECUTE format('GRANT pgcloud_services TO %I', role_name);
    END IF;
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', s.schema_name, role_name);
    EXECUTE format('COMMENT ON SCHEMA %I IS %L', s.schema_name,
                   format('pgcloud %s service (layer %s), owned by %s.', service, s.layer, role_name));
END
$$;
COMMENT ON FUNCTION pgcloud.service_begin(text) IS 'Install-time: creates the service role (if missing) and its schema. Called by each service install script.';

CREATE FUNCTION pgcloud.hand_over(extension name, role_name name) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    ext oid := (SELECT oid FROM pg_catalog.pg_extension WHERE extname = extension);
    obj record;
BEGIN
    IF ext IS NULL THEN
        RAISE EXCEPTION 'extension "%" is not being installed', extension;
    END IF;
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        IF obj.relkind = 'S' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_depend a
             WHERE a.classid = 'pg_catalog.pg_class'::regclass AND a.objid = obj.name::oid AND a.deptype IN ('a', 'i')) THEN
            CONTINUE;  -- owned by its table
        END IF;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', obj.name, role_name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.name, role_name);
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', obj.name);
    END LOOP;
    FOR obj IN
        SELECT t.oid::regtype AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_type t ON t.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND t.typtype IN ('c', 'e', 'd', 'r') AND t.typrelid = 0
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO %I', obj.name, role_name);
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgcloud.hand_over(name, name) IS 'Install-time: gives every member object of an extension to a role and revokes PUBLIC execute on its routines.';

CREATE FUNCTION pgcloud.service_end(service text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    ext oid;
    obj record;
BEGIN
    PERFORM pgcloud.hand_over(('pgcloud_' || service)::name, ('pgcloud_svc_' || service)::name);
    -- The workers' entry points run as the core's owner (99_privileges.sql)
    -- and call the service's event handler and its HTTP result callbacks
    -- (SECURITY DEFINER functions with the callback signature of
    -- pgcloud.http_intents.callback): those, and nothing else of the
    -- service, are the core's to call.
    SELECT e.oid INTO ext FROM pg_catalog.pg_extension e WHERE e.extname = 'pgcloud_' || service;
    -- Looking a handler up (pgcloud.handler_of) needs the schema.
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgcloud_svc_core',
                   (SELECT s.schema_name FROM pgcloud.services s WHERE s.name = service));
    FOR obj IN
        SELECT p.oid::regprocedure AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND p.prosecdef
           AND (p.proname = 'on_event'
                OR pg_catalog.oidvectortypes(p.proargtypes) = 'uuid, integer, jsonb, text, jsonb, boolean')
    LOOP
        EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO pgcloud_svc_core', obj.name);
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgcloud.service_end(text) IS 'Install-time: gives every object of pgcloud_<service> to role pgcloud_svc_<service>, and lets the core (which runs the workers'' entry points) call the service''s on_event handler and its HTTP result callbacks (SECURITY DEFINER, signature (uuid, integer, jsonb, text, jsonb, boolean)). Called by each service install script.';
