-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster dev of shape per-service (port 55440): one database per service, auth, inventory, provisioning, maas, releases, billing, payments, terminal, appruntime, storage, admin, notification, databases.
-- Run as a superuser: psql -X -d postgres -f deploy/per-service/dev/init.sql

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

-- service inventory: database pgcloud_inventory, its PostgREST connects as pgcloud_authenticator_inventory
CREATE DATABASE pgcloud_inventory;
\connect pgcloud_inventory
CREATE EXTENSION pgcloud_inventory CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_inventory FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_inventory FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_inventory') THEN CREATE ROLE pgcloud_authenticator_inventory LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_inventory;
GRANT CONNECT ON DATABASE pgcloud_inventory TO pgcloud_authenticator_inventory;

-- service provisioning: database pgcloud_provisioning, its PostgREST connects as pgcloud_authenticator_provisioning
CREATE DATABASE pgcloud_provisioning;
\connect pgcloud_provisioning
CREATE EXTENSION pgcloud_provisioning CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_provisioning FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_provisioning FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_provisioning') THEN CREATE ROLE pgcloud_authenticator_provisioning LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_provisioning;
GRANT CONNECT ON DATABASE pgcloud_provisioning TO pgcloud_authenticator_provisioning;

-- service maas: database pgcloud_maas, its PostgREST connects as pgcloud_authenticator_maas
CREATE DATABASE pgcloud_maas;
\connect pgcloud_maas
CREATE EXTENSION pgcloud_maas CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_maas FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_maas FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_maas') THEN CREATE ROLE pgcloud_authenticator_maas LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_maas;
GRANT CONNECT ON DATABASE pgcloud_maas TO pgcloud_authenticator_maas;

-- service releases: database pgcloud_releases, its PostgREST connects as pgcloud_authenticator_releases
CREATE DATABASE pgcloud_releases;
\connect pgcloud_releases
CREATE EXTENSION pgcloud_releases CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_releases FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_releases FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_releases') THEN CREATE ROLE pgcloud_authenticator_releases LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_releases;
GRANT CONNECT ON DATABASE pgcloud_releases TO pgcloud_authenticator_releases;

-- service billing: database pgcloud_billing, its PostgREST connects as pgcloud_authenticator_billing
CREATE DATABASE pgcloud_billing;
\connect pgcloud_billing
CREATE EXTENSION pgcloud_billing CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_billing FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_billing FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_billing') THEN CREATE ROLE pgcloud_authenticator_billing LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_billing;
GRANT CONNECT ON DATABASE pgcloud_billing TO pgcloud_authenticator_billing;

-- service payments: database pgcloud_payments, its PostgREST connects as pgcloud_authenticator_payments
CREATE DATABASE pgcloud_payments;
\connect pgcloud_payments
CREATE EXTENSION pgcloud_payments CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_payments FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_payments FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_payments') THEN CREATE ROLE pgcloud_authenticator_payments LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_payments;
GRANT CONNECT ON DATABASE pgcloud_payments TO pgcloud_authenticator_payments;

-- service terminal: database pgcloud_terminal, its PostgREST connects as pgcloud_authenticator_terminal
CREATE DATABASE pgcloud_terminal;
\connect pgcloud_terminal
CREATE EXTENSION pgcloud_terminal CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_terminal FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_terminal FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_terminal') THEN CREATE ROLE pgcloud_authenticator_terminal LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_terminal;
GRANT CONNECT ON DATABASE pgcloud_terminal TO pgcloud_authenticator_terminal;

-- service appruntime: database pgcloud_appruntime, its PostgREST connects as pgcloud_authenticator_appruntime
CREATE DATABASE pgcloud_appruntime;
\connect pgcloud_appruntime
CREATE EXTENSION pgcloud_appruntime CASCADE;
REVOKE CONNECT, TEMPORARY ON DATABASE pgcloud_appruntime FROM PUBLIC;
-- The shared authenticator of the single-database shape may not connect:
-- each service's PostgREST has a login role of its own, for this database only.
REVOKE CONNECT ON DATABASE pgcloud_appruntime FROM pgcloud_authenticator;
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgcloud_authenticator_appruntime') THEN CREATE ROLE pgcloud_authenticator_appruntime LOGIN NOINHERIT; END IF; END $$;
GRANT pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service TO pgcloud_authenticator_appruntime;
GRANT CONNECT ON DATABASE pgcloud_appruntime TO pgcloud_authenticator_appruntime;

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
