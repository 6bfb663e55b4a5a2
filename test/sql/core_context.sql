-- Request context: claims, role, user id, headers, correlation id.
SELECT pgcloud.claims(), pgcloud.headers(), pgcloud.user_id();
SELECT pgcloud.request_role() = session_user::text AS role_is_session_user;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "11111111-1111-4111-8111-111111111111", "tenant": "acme", "scopes": ["compute:read"]}';
SET LOCAL request.headers = '{"x-correlation-id": "req-42", "x-idempotency-key": "k1", "user-agent": "curl"}';
SELECT pgcloud.request_role(), pgcloud.user_id(), pgcloud.header('X-Correlation-Id'), pgcloud.header('User-Agent');
SELECT pgcloud.correlation_id();
SELECT pgcloud.context();
COMMIT;
-- Generated when absent, and stable within the transaction.
BEGIN;
SELECT pgcloud.correlation_id() ~ '^[0-9a-f-]{36}$' AS generated,
       pgcloud.correlation_id() = pgcloud.correlation_id() AS stable;
COMMIT;
-- A malformed X-Correlation-Id is replaced, not trusted.
BEGIN;
SET LOCAL request.headers = '{"x-correlation-id": "bad id with spaces"}';
SELECT pgcloud.correlation_id() ~ '^[0-9a-f-]{36}$' AS replaced;
COMMIT;
-- SET ROLE is honoured when there are no claims (PostgREST anonymous requests).
BEGIN;
SET LOCAL ROLE pgcloud_user;
SELECT pgcloud.request_role();
ROLLBACK;
-- Bad context is a clear error.
BEGIN;
SET LOCAL request.jwt.claims = 'not json';
SELECT pgcloud.claims();
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '[1]';
SELECT pgcloud.request_role();
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"sub": "not-a-uuid"}';
SELECT pgcloud.user_id();
ROLLBACK;
-- JSON that jsonb refuses (a NUL escape) is the same clear error.
BEGIN;
SET LOCAL request.headers = '{"x-a": "\u0000"}';
SELECT pgcloud.headers();
ROLLBACK;
-- The parsed claims follow the setting within a transaction; an empty
-- object is no claims (an operator at psql).
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "11111111-1111-4111-8111-111111111111"}';
SELECT pgcloud.claims() ->> 'sub' AS sub, pgcloud.is_operator();
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "11111111-1111-4111-8111-111111111113"}';
SELECT pgcloud.claims() ->> 'sub' AS sub, pgcloud.user_id();
SET LOCAL request.jwt.claims = '{}';
SELECT pgcloud.claims(), pgcloud.is_operator();
SET LOCAL ROLE pgcloud_user;
SELECT pgcloud.is_operator();
ROLLBACK;
-- Authorization in one place.
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "11111111-1111-4111-8111-111111111111"}';
SELECT pgcloud.authorize('user');
SELECT pgcloud.authorize('admin');
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT pgcloud.authorize('anon');
SELECT pgcloud.authorize('user');
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "11111111-1111-4111-8111-111111111112"}';
SELECT pgcloud.authorize('user'), pgcloud.authorize('admin');
SELECT pgcloud.authorize('service');
ROLLBACK;
SELECT pgcloud.authorize('root');
-- A superuser at psql without claims acts as an operator.
SELECT pgcloud.is_operator(), pgcloud.authorize('admin');
-- pgcloud.* settings are reserved: a misspelt one is an error.
SET pgcloud.no_such_setting = 'x';
