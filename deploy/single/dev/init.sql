-- generated from registry/deployments.conf and registry/services.conf — do not edit
--
-- Cluster dev of shape single (port 55440): one database with every service.
-- Run as a superuser: psql -X -d postgres -f deploy/single/dev/init.sql

\set ON_ERROR_STOP on

CREATE DATABASE pgcloud;
\connect pgcloud
CREATE EXTENSION pgcloud CASCADE;
REVOKE CONNECT ON DATABASE pgcloud FROM PUBLIC;
GRANT CONNECT ON DATABASE pgcloud TO pgcloud_authenticator;
