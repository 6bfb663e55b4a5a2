-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster money of shape multi (port 55442): one database per service, releases, billing, payments, terminal.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/money/init.sql

\set ON_ERROR_STOP on

-- Nobody but a superuser connects to the maintenance databases.
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;

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
