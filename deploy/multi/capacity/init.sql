-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster capacity of shape multi (port 55443): one database per service, inventory, provisioning, maas, appruntime.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/capacity/init.sql

\set ON_ERROR_STOP on

-- Nobody but a superuser connects to the maintenance databases.
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;

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
