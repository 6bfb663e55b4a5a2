-- The idempotency mechanism, sequentially (concurrency: test/specs/core_idempotency.spec).
-- services: core
BEGIN;
SELECT * FROM no_plan();

CREATE TABLE pgcloud.tap_effects (n serial, args jsonb);
-- The handler takes its argument typed; the fingerprint is only hashed.
CREATE FUNCTION pgcloud.tap_call_apply(a int) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO pgcloud.tap_effects (args) VALUES (jsonb_build_object('a', a)) RETURNING jsonb_build_object('n', n, 'args', args)
$$;
CREATE FUNCTION pgcloud.tap_call(a int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(pgcloud.idempotent('tap.call', jsonb_build_object('a', a)),
                    pgcloud.idempotent_done('tap.call', pgcloud.tap_call_apply(a)))
$$;

SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "33333333-3333-4333-8333-333333333333"}';
-- Without a key every call runs.
SELECT pgcloud.tap_call(1);
SELECT pgcloud.tap_call(1);
SELECT is((SELECT count(*)::int FROM pgcloud.tap_effects), 2, 'without a key, every call has its effect');

SET LOCAL request.headers = '{"x-idempotency-key": "key-A"}';
SELECT is(pgcloud.tap_call(7) -> 'args', '{"a": 7}'::jsonb, 'first call with a key runs');
SELECT is(pgcloud.tap_call(7) ->> 'n', '3', 'replay returns the first response');
SELECT is((SELECT count(*)::int FROM pgcloud.tap_effects), 3, 'replay has no second effect');
SELECT is(current_setting('response.headers', true), '[{"Idempotent-Replayed": "true"}]', 'replay is marked for PostgREST');
SELECT throws_ok($$ SELECT pgcloud.tap_call(8) $$, 'PGRST', NULL, 'same key, other arguments: an error');
-- Stored as before the typed handlers: the SHA-256 of the canonical JSON
-- arguments, under the operation's name, with the handler's response.
SELECT is((SELECT request_hash FROM pgcloud.idempotency_keys WHERE key = 'key-A' AND operation = 'tap.call'),
          sha256(convert_to('{"a": 7}', 'UTF8')), 'the key stores the fingerprint''s hash as before');
SELECT is((SELECT response -> 'args' FROM pgcloud.idempotency_keys WHERE key = 'key-A' AND operation = 'tap.call'),
          '{"a": 7}'::jsonb, 'the key stores the handler''s response');
-- idempotent_done() only ends a call idempotent() began (with a key).
SELECT is(pg_temp.error_of($$ SELECT pgcloud.idempotent_done('tap.other', '{}'::jsonb) $$),
          '{"code": "invalid_argument", "status": 400}', 'idempotent_done without idempotent is refused');
-- A replay returns the stored response without running the handler.
SELECT is(pgcloud.idempotent('tap.call', jsonb_build_object('a', 7)) ->> 'n', '3',
          'idempotent() answers a replay with the stored response');

-- The reused error is idempotency_key_reused with status 422.
SELECT is(pg_temp.error_of('SELECT pgcloud.tap_call(8)'), '{"code": "idempotency_key_reused", "status": 422}', 'reused → 422');

-- Keys are scoped to the principal: another user may use the same key.
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "44444444-4444-4444-8444-444444444444"}';
SELECT is(pgcloud.tap_call(8) -> 'args', '{"a": 8}'::jsonb, 'another principal with the same key runs');

-- Malformed keys are rejected.
SET LOCAL request.headers = '{"x-idempotency-key": "has space"}';
SELECT is(pg_temp.error_of('SELECT pgcloud.tap_call(1)'), '{"code": "idempotency_key_invalid", "status": 400}', 'malformed key → 400');

-- Expired keys may be used afresh.
SET LOCAL request.headers = '{"x-idempotency-key": "key-B"}';
SELECT pgcloud.tap_call(5);
UPDATE pgcloud.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'key-B';
SELECT is(pgcloud.tap_call(6) -> 'args', '{"a": 6}'::jsonb, 'an expired key is forgotten');
SELECT ok(pgcloud.prune_idempotency_keys() >= 0, 'pruning runs');

SELECT * FROM finish();
ROLLBACK;
