-- Policy values and the one typed accessor.
SELECT pgcloud.policy('core.rate_limit_burst', NULL::int) AS burst_int,
       pgcloud.policy('core.rate_limit_burst', NULL::bigint) AS burst_bigint,
       pgcloud.policy('core.rate_limit_burst', NULL::numeric) AS burst_numeric,
       pgcloud.policy('core.rate_limit_burst', NULL::text) AS burst_text,
       pgcloud.policy('core.rate_limit_burst', NULL::jsonb) AS burst_jsonb,
       pgcloud.policy('auth.dev_login_enabled', NULL::boolean) AS dev_login;
SELECT pg_typeof(pgcloud.policy('core.rate_limit_burst', NULL::bigint));
-- A missing key is a clear error.
SELECT pgcloud.policy('core.no_such_key', NULL::int);
SELECT pgcloud.policy(NULL, NULL::int);
-- The wrong type is a clear error.
SELECT pgcloud.policy('auth.dev_login_enabled', NULL::int);
SELECT pgcloud.policy('core.rate_limit_burst', NULL::boolean);
-- Strings are read with the wanted type's input function.
SELECT pgcloud.set_policy('core.test_interval', '"90 seconds"') ->> 'key' AS set_key;
SELECT pgcloud.policy('core.test_interval', NULL::interval);
SELECT pgcloud.policy('core.test_interval', NULL::int);
SELECT pgcloud.set_policy('core.test_number', '1.5') ->> 'value' AS set_value;
SELECT pgcloud.policy('core.test_number', NULL::int);
SELECT pgcloud.policy('core.test_number', NULL::float8);
-- set_policy validates its input.
SELECT pgcloud.set_policy('NoDot', '1');
SELECT pgcloud.set_policy('nosuchservice.x', '1');
SELECT pgcloud.set_policy('core.x', 'null');
SELECT pgcloud.set_policy('core.x', NULL);
-- set_policy is audited with the old and new values.
SELECT pgcloud.set_policy('core.test_number', '2') ->> 'previous' AS previous;
SELECT action, target_type, target_id, result, details
  FROM pgcloud.audit_logs WHERE action = 'policy.set' ORDER BY id;
-- Only admins may set policy.
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "00000000-0000-4000-8000-000000000001"}';
SELECT pgcloud.set_policy('core.test_number', '3');
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT pgcloud.set_policy('core.test_number', '3');
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "00000000-0000-4000-8000-0000000000ad"}';
SELECT pgcloud.set_policy('core.test_number', '3') ->> 'value' AS admin_set;
ROLLBACK;
SELECT pgcloud.policy('core.test_number', NULL::int) AS unchanged_after_rollback;
