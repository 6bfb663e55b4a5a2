-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster identity of shape multi (port 55441): one database per service, auth, storage, admin, notification, databases.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/identity/init.sql

\set ON_ERROR_STOP on

-- Nobody but a superuser connects to the maintenance databases.
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;

-- service auth: database pgcloud_auth, its PostgREST connects as pgcloud_authenticator_auth
CREATE DATABASE pgcloud_auth;
\connect pgcloud_auth
CREATE EXTENSION pgcloud_auth CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_auth FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_auth FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_auth') THEN CREATE ROLE pgcloud_authenticator_auth LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_auth;
GRANT CONNECT ON DATABASE pgcloud_auth TO pgcloud_authenticator_auth;

-- service storage: database pgcloud_storage, its PostgREST connects as pgcloud_authenticator_storage
CREATE DATABASE pgcloud_storage;
\connect pgcloud_storage
CREATE EXTENSION pgcloud_storage CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_storage FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_storage FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_storage') THEN CREATE ROLE pgcloud_authenticator_storage LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_storage;
GRANT CONNECT ON DATABASE pgcloud_storage TO pgcloud_authenticator_storage;

-- service admin: database pgcloud_admin, its PostgREST connects as pgcloud_authenticator_admin
CREATE DATABASE pgcloud_admin;
\connect pgcloud_admin
CREATE EXTENSION pgcloud_admin CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_admin FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_admin FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_admin') THEN CREATE ROLE pgcloud_authenticator_admin LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_admin;
GRANT CONNECT ON DATABASE pgcloud_admin TO pgcloud_authenticator_admin;

-- service notification: database pgcloud_notification, its PostgREST connects as pgcloud_authenticator_notification
CREATE DATABASE pgcloud_notification;
\connect pgcloud_notification
CREATE EXTENSION pgcloud_notification CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_notification FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_notification FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_notification') THEN CREATE ROLE pgcloud_authenticator_notification LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_notification;
GRANT CONNECT ON DATABASE pgcloud_notification TO pgcloud_authenticator_notification;

-- service databases: database pgcloud_databases, its PostgREST connects as pgcloud_authenticator_databases
CREATE DATABASE pgcloud_databases;
\connect pgcloud_databases
CREATE EXTENSION pgcloud_databases CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_databases FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_databases FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_databases') THEN CREATE ROLE pgcloud_authenticator_databases LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_databases;
GRANT CONNECT ON DATABASE pgcloud_databases TO pgcloud_authenticator_databases;
