-- pgcloud.pre_request(): per-principal token bucket in shared memory.
-- services: core
BEGIN;
SELECT * FROM no_plan();


SELECT pgcloud.set_policy('core.rate_limit_burst', '3');
SELECT pgcloud.set_policy('core.rate_limit_per_second', '0.5');
SELECT ok(pgcloud.rate_limit_reset() >= 0, 'buckets reset');

SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "55555555-5555-4555-8555-555555555555"}';
SELECT lives_ok('SELECT pgcloud.pre_request()', 'request 1 of the burst passes');
SELECT lives_ok('SELECT pgcloud.pre_request(); SELECT pgcloud.pre_request()', 'requests 2 and 3 pass');
SELECT is(pg_temp.error_detail_of('SELECT pgcloud.pre_request()'),
    '{"code": "rate_limited", "detail": {"status": 429, "headers": {"Retry-After": "2"}}}'::jsonb,
    'request 4 is refused with 429 and Retry-After');
SELECT is((SELECT denied FROM pgcloud.rate_limit_status() WHERE principal = 'sub:55555555-5555-4555-8555-555555555555'),
    1::bigint, 'the refusal is counted');

-- Another principal has its own bucket.
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "66666666-6666-4666-8666-666666666666"}';
SELECT lives_ok('SELECT pgcloud.pre_request()', 'another user is not limited by the first');

-- Anonymous callers are keyed by their forwarded address.
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SET LOCAL request.headers = '{"x-forwarded-for": "203.0.113.9, 10.0.0.1"}';
SELECT lives_ok('SELECT pgcloud.pre_request(); SELECT pgcloud.pre_request(); SELECT pgcloud.pre_request()', 'anon burst passes');
SELECT is(pg_temp.error_detail_of('SELECT pgcloud.pre_request()') ->> 'code', 'rate_limited', 'anon is limited too');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.rate_limit_status() WHERE principal = 'anon:10.0.0.1'),
    'anon principal is the address the trusted proxy appended (core.rate_limit_trusted_proxies = 1), not the client''s first entry');

SELECT pgcloud.rate_limit_reset();
SELECT * FROM finish();
ROLLBACK;
