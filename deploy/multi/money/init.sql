-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster money of shape multi (port 55442): one database per service, releases, billing, payments, terminal.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/money/init.sql

\set ON_ERROR_STOP on

-- service releases: database pgcloud_releases
CREATE DATABASE pgcloud_releases;
\connect pgcloud_releases
CREATE EXTENSION pgcloud_releases CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_releases FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_releases TO pgcloud_authenticator;

-- service billing: database pgcloud_billing
CREATE DATABASE pgcloud_billing;
\connect pgcloud_billing
CREATE EXTENSION pgcloud_billing CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_billing FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_billing TO pgcloud_authenticator;

-- service payments: database pgcloud_payments
CREATE DATABASE pgcloud_payments;
\connect pgcloud_payments
CREATE EXTENSION pgcloud_payments CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_payments FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_payments TO pgcloud_authenticator;

-- service terminal: database pgcloud_terminal
CREATE DATABASE pgcloud_terminal;
\connect pgcloud_terminal
CREATE EXTENSION pgcloud_terminal CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_terminal FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_terminal TO pgcloud_authenticator;
