-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster dev of shape per-service (port 55440): one database per service, auth, inventory, provisioning, maas, releases, billing, payments, terminal, appruntime, storage, admin, notification, databases.
-- Run as a superuser: psql -X -d postgres -f deploy/per-service/dev/init.sql

\set ON_ERROR_STOP on

-- service auth: database pgcloud_auth
CREATE DATABASE pgcloud_auth;
\connect pgcloud_auth
CREATE EXTENSION pgcloud_auth CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_auth FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_auth TO pgcloud_authenticator;

-- service inventory: database pgcloud_inventory
CREATE DATABASE pgcloud_inventory;
\connect pgcloud_inventory
CREATE EXTENSION pgcloud_inventory CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_inventory FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_inventory TO pgcloud_authenticator;

-- service provisioning: database pgcloud_provisioning
CREATE DATABASE pgcloud_provisioning;
\connect pgcloud_provisioning
CREATE EXTENSION pgcloud_provisioning CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_provisioning FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_provisioning TO pgcloud_authenticator;

-- service maas: database pgcloud_maas
CREATE DATABASE pgcloud_maas;
\connect pgcloud_maas
CREATE EXTENSION pgcloud_maas CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_maas FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_maas TO pgcloud_authenticator;

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

-- service appruntime: database pgcloud_appruntime
CREATE DATABASE pgcloud_appruntime;
\connect pgcloud_appruntime
CREATE EXTENSION pgcloud_appruntime CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_appruntime FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_appruntime TO pgcloud_authenticator;

-- service storage: database pgcloud_storage
CREATE DATABASE pgcloud_storage;
\connect pgcloud_storage
CREATE EXTENSION pgcloud_storage CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_storage FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_storage TO pgcloud_authenticator;

-- service admin: database pgcloud_admin
CREATE DATABASE pgcloud_admin;
\connect pgcloud_admin
CREATE EXTENSION pgcloud_admin CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_admin FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_admin TO pgcloud_authenticator;

-- service notification: database pgcloud_notification
CREATE DATABASE pgcloud_notification;
\connect pgcloud_notification
CREATE EXTENSION pgcloud_notification CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_notification FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_notification TO pgcloud_authenticator;

-- service databases: database pgcloud_databases
CREATE DATABASE pgcloud_databases;
\connect pgcloud_databases
CREATE EXTENSION pgcloud_databases CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_databases FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_databases TO pgcloud_authenticator;
