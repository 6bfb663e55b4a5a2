-- pgcloud demo: what the platform has so far, on the private cluster.
\pset footer off
\echo
\echo '== pgcloud is installed =='
SELECT pgcloud.build_info() AS versions;
SELECT extname AS extension, extversion AS version FROM pg_extension WHERE extname LIKE 'pgcloud%' ORDER BY extname;

\echo
\echo '== one schema and one owning role per service (from registry/services.conf) =='
SELECT s.name AS service, s.layer, s.route_prefix AS route, s.database_name AS own_database,
       pg_catalog.pg_get_userbyid(n.nspowner) AS owner
  FROM pgcloud.services s JOIN pg_namespace n ON n.nspname = s.schema_name ORDER BY s.name;

\echo
\echo '== a request, as PostgREST would make it =='
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SET LOCAL request.headers = '{"x-correlation-id": "demo-request-1", "x-idempotency-key": "demo-key-1"}';
SELECT pgcloud.context() AS request_context;
\echo 'set a policy value (admin, audited, idempotent):'
SELECT pgcloud.set_policy('billing.low_balance_threshold', '750') AS first_call;
SELECT pgcloud.set_policy('billing.low_balance_threshold', '750') AS retried_with_same_key;
\echo 'emit an event in the same transaction:'
SELECT pgcloud.emit('platform.demo_performed', 'demo', 'demo-1', '{"step": 1}') AS event_id;
COMMIT;
SELECT at, role, action, target, result, details, correlation_id
  FROM pgcloud.audit_logs ORDER BY id DESC LIMIT 1;
SELECT event_type, aggregate_id, payload, headers FROM pgcloud.outbox ORDER BY id DESC LIMIT 1;

\echo
\echo '== errors come from one catalogue, in PostgREST form =='
SELECT code, http_status, message FROM pgcloud.error_codes ORDER BY http_status, code LIMIT 8;
\set ON_ERROR_STOP off
SELECT pgcloud.raise('forbidden', 'this is what a client sees');
\set ON_ERROR_STOP on

\echo
\echo '== the audit log is append-only, even for its owner =='
\set ON_ERROR_STOP off
DELETE FROM pgcloud.audit_logs;
\set ON_ERROR_STOP on

\echo
\echo '== secrets never reach the log =='
SELECT pgcloud.sanitize('login alice@example.com with postgresql://app:s3cret@db/prod, card 4242 4242 4242 4242') AS scrubbed;

\echo
\echo '== policy (every business constant is a row) =='
SELECT key, value FROM pgcloud.policy_values ORDER BY key;
