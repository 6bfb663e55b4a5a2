-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster identity of shape multi (port 55441): one database per service, auth, storage, admin, notification, databases.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/identity/init.sql

\set ON_ERROR_STOP on

-- service auth: database pgcloud_auth
CREATE DATABASE pgcloud_auth;
\connect pgcloud_auth
CREATE EXTENSION pgcloud_auth CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_auth FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_auth TO pgcloud_authenticator;

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
