-- pgcloud_terminal install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_terminal" to load this file. \quit

SELECT pgcloud.service_begin('terminal');
-- source: sql/terminal/00_terminal.sql
-- pgcloud_terminal: schema terminal, owned by pgcloud_svc_terminal (created by pgcloud.service_begin).
-- The service's tables, functions and API arrive with its issue.

SELECT pgcloud.service_end('terminal');
