-- pgcloud_appruntime install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_appruntime" to load this file. \quit

SELECT pgcloud.service_begin('appruntime');
-- source: sql/appruntime/00_appruntime.sql
-- pgcloud_appruntime: schema appruntime, owned by pgcloud_svc_appruntime (created by pgcloud.service_begin).
-- The service's tables, functions and API arrive with its issue.

SELECT pgcloud.service_end('appruntime');
