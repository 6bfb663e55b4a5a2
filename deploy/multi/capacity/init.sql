-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster capacity of shape multi (port 55443): one database per service, inventory, provisioning, maas, appruntime.
-- Run as a superuser: psql -X -d postgres -f deploy/multi/capacity/init.sql

\set ON_ERROR_STOP on

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

-- service appruntime: database pgcloud_appruntime
CREATE DATABASE pgcloud_appruntime;
\connect pgcloud_appruntime
CREATE EXTENSION pgcloud_appruntime CASCADE;
REVOKE CONNECT ON DATABASE pgcloud_appruntime FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud_appruntime TO pgcloud_authenticator;
