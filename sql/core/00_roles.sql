-- Roles are cluster-wide: create the ones that are missing, so a second
-- database installs cleanly. They outlive DROP EXTENSION on purpose.
DO $roles$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('pgcloud_authenticator', 'LOGIN NOINHERIT'),
            ('pgcloud_anon',          'NOLOGIN'),
            ('pgcloud_user',          'NOLOGIN'),
            ('pgcloud_admin',         'NOLOGIN'),
            ('pgcloud_service',       'NOLOGIN'),
            ('pgcloud_svc_core',      'NOLOGIN'),
            ('pgcloud_services',      'NOLOGIN'),
            -- The background workers other than the scheduler connect as
            -- these (bgworkers/common.c): LOGIN because PostgreSQL 15 lets a
            -- background worker connect only as a role that may log in; no
            -- password, no superuser, and only the grants of 99_privileges.
            ('pgcloud_worker_relay',    'LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION'),
            ('pgcloud_worker_consumer', 'LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION'),
            ('pgcloud_worker_http',     'LOGIN NOSUPERUSER NOINHERIT NOCREATEDB NOCREATEROLE NOREPLICATION')
        ) AS t(name, options)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I %s', r.name, r.options);
        END IF;
    END LOOP;
    -- Names resolve in pg_catalog only for the workers, whatever connects them.
    FOR r IN SELECT unnest(ARRAY['pgcloud_worker_relay', 'pgcloud_worker_consumer', 'pgcloud_worker_http']) AS name
    LOOP
        EXECUTE pg_catalog.format('ALTER ROLE %I SET search_path = pg_catalog', r.name);
    END LOOP;
    -- The workers must connect to this database even where an operator (or
    -- deploy/*/init.sql) revokes CONNECT from PUBLIC; an explicit grant
    -- survives that revoke.
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO pgcloud_worker_relay, pgcloud_worker_consumer, '
                              'pgcloud_worker_http', pg_catalog.current_database());
    -- PostgREST connects as the authenticator and switches to the JWT's role.
    FOR r IN SELECT unnest(ARRAY['pgcloud_anon', 'pgcloud_user', 'pgcloud_admin', 'pgcloud_service']) AS name
    LOOP
        IF NOT pg_catalog.pg_has_role('pgcloud_authenticator', r.name, 'MEMBER') THEN
            EXECUTE pg_catalog.format('GRANT %I TO pgcloud_authenticator', r.name);
        END IF;
    END LOOP;
END
$roles$;

CREATE SCHEMA pgcloud AUTHORIZATION pgcloud_svc_core;
COMMENT ON SCHEMA pgcloud IS 'pgcloud shared primitives: request context, errors, policy, audit, idempotency, outbox and inbox. Not exposed over HTTP.';

CREATE SCHEMA api AUTHORIZATION pgcloud_svc_core;
COMMENT ON SCHEMA api IS 'The public API of pgcloud: PostgREST serves this schema as it is. Every function is owned by the role of the service that defines it.';

GRANT USAGE ON SCHEMA api TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
-- API roles may call pgcloud.pre_request() and a few pure helpers; nothing
-- else in this schema is granted to them.
GRANT USAGE ON SCHEMA pgcloud TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service, pgcloud_services;
