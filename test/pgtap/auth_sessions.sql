-- Development login, api.me(), refresh-token rotation and reuse detection,
-- logout, and pgcloud.pre_request() refusing revoked sessions.
BEGIN;
SELECT * FROM no_plan();

SELECT pgcloud.rate_limit_reset();

-- 1. Development login is off by default and says so.
SELECT is(pgcloud.policy('auth.dev_login_enabled', NULL::boolean), false, 'auth.dev_login_enabled is false by default');
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT is(pg_temp.error_full_of($$ SELECT api.dev_login('bob@example.com') $$) - 'headers' - 'message',
    '{"code": "dev_login_disabled", "status": 403, "details": "development login is turned off (policy auth.dev_login_enabled is false); sign in with an identity provider", "hint": "For a development system only, an administrator can run: SELECT pgcloud.set_policy(''auth.dev_login_enabled'', ''true'');"}',
    'dev_login answers dev_login_disabled (403) with a clear detail and hint');
RESET ROLE;
RESET request.jwt.claims;
SELECT is((pgcloud.set_policy('auth.dev_login_enabled', 'true')) ->> 'value', 'true', 'an operator turns it on');
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT is(pg_temp.error_full_of($$ SELECT api.dev_login('not an address') $$) ->> 'code', 'invalid_argument', 'a malformed address is refused');
SELECT api.dev_login('Bob@Example.com') AS s1 \gset
RESET ROLE;
SELECT ok(:'s1'::jsonb ->> 'refresh_token' ~ '^pgrt_[A-Za-z0-9_-]{43}$', 'dev_login returns a refresh token');
SELECT auth.verify_access_token(:'s1'::jsonb ->> 'access_token') AS c1 \gset

-- 2. api.me()
SET LOCAL request.jwt.claims = :'c1';
SET LOCAL ROLE pgcloud_user;
SELECT api.me() AS me \gset
RESET ROLE;
SELECT is(:'me'::jsonb ->> 'email', 'bob@example.com', 'me() shows the e-mail address');
SELECT is(:'me'::jsonb #>> '{posix,username}', 'bob', 'me() shows the POSIX user name');
SELECT ok((:'me'::jsonb #>> '{posix,uid}')::int >= 100000 AND (:'me'::jsonb #>> '{posix,uid}') = (:'me'::jsonb #>> '{posix,gid}'),
          'me() shows uid = gid from the policy range');
SELECT is(:'me'::jsonb ->> 'session_id', :'c1'::jsonb ->> 'sid', 'me() shows the session');
SELECT is(:'me'::jsonb #>> '{identities,0,issuer}', 'pgcloud:dev', 'me() lists the identity');
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.me()', 'EXECUTE'), 'anon cannot call me()');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SET LOCAL ROLE pgcloud_user;
SELECT is(pg_temp.error_full_of($$ SELECT api.me() $$) ->> 'code', 'unauthenticated', 'me() without a user in the claims is unauthenticated (401)');
RESET ROLE;

-- 3. Refresh: rotated on every use; stored only as hashes.
SET LOCAL ROLE pgcloud_anon;
SELECT api.refresh_token(:'s1'::jsonb ->> 'refresh_token') AS s2 \gset
SELECT api.refresh_token(:'s2'::jsonb ->> 'refresh_token') AS s3 \gset
RESET ROLE;
SELECT isnt(:'s2'::jsonb ->> 'refresh_token', :'s1'::jsonb ->> 'refresh_token', 'refreshing gives a new refresh token');
SELECT is(auth.verify_access_token(:'s3'::jsonb ->> 'access_token') ->> 'sid', :'c1'::jsonb ->> 'sid',
          'the new access token belongs to the same session');
SELECT is((SELECT array_agg(generation ORDER BY generation) FROM auth.refresh_tokens
            WHERE session_id = (:'c1'::jsonb ->> 'sid')::uuid), ARRAY[1, 2, 3], 'three generations of the family');
SELECT is((SELECT count(*)::int FROM auth.refresh_tokens WHERE session_id = (:'c1'::jsonb ->> 'sid')::uuid AND used_at IS NULL),
          1, 'only the newest is unused');
SELECT ok(NOT EXISTS (SELECT 1 FROM auth.refresh_tokens r
                       WHERE position(convert_to(:'s3'::jsonb ->> 'refresh_token', 'UTF8') IN r.token_hash) > 0
                          OR r::text LIKE '%' || (:'s3'::jsonb ->> 'refresh_token') || '%')
          AND EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.token_hash = sha256(convert_to(:'s3'::jsonb ->> 'refresh_token', 'UTF8'))),
          'the refresh token is stored only as its SHA-256');

-- 4. Reuse of a rotated token (after the reuse interval) revokes the whole
-- family, is audited, and answers 401.
UPDATE pgcloud.policy_values SET value = '0' WHERE key = 'auth.refresh_reuse_interval_seconds';
SET LOCAL ROLE pgcloud_anon;
SELECT api.refresh_token(:'s1'::jsonb ->> 'refresh_token') AS reuse \gset
RESET ROLE;
SELECT is(:'reuse'::jsonb ->> 'code', 'refresh_token_reused', 'a second use of a spent refresh token answers refresh_token_reused');
SELECT is(current_setting('response.status', true), '401', '... with HTTP status 401 (response.status)');
SELECT is((SELECT revoked_reason FROM auth.sessions WHERE id = (:'c1'::jsonb ->> 'sid')::uuid), 'refresh_token_reuse',
          'the session is revoked');
SELECT is((SELECT count(*)::int FROM auth.refresh_tokens WHERE session_id = (:'c1'::jsonb ->> 'sid')::uuid AND revoked_at IS NULL),
          0, 'every refresh token of the family is revoked');
SET LOCAL ROLE pgcloud_anon;
SELECT is(pg_temp.error_full_of(format('SELECT api.refresh_token(%L)', :'s3'::jsonb ->> 'refresh_token')) - 'hint' - 'headers' - 'message',
          '{"code": "invalid_refresh_token", "status": 401, "details": "the session of this refresh token has been revoked"}',
          'the newest token of the family no longer works');
RESET ROLE;
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'session.refresh_token_reused' AND result = 'denied'
                   AND target_id = :'c1'::jsonb ->> 'sid'), 'the reuse is audited');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'session.revoked'
                   AND payload ->> 'session_id' = :'c1'::jsonb ->> 'sid' AND payload ->> 'reason' = 'refresh_token_reuse'),
          'session.revoked is emitted');

-- 5. pre_request refuses access tokens of the revoked session (an indexed lookup).
SET LOCAL request.jwt.claims = :'c1';
SELECT is(pg_temp.error_full_of('SELECT pgcloud.pre_request()') - 'hint' - 'headers' - 'message',
          '{"code": "session_revoked", "status": 401, "details": "this access token belongs to a session that has been revoked"}',
          'pre_request answers session_revoked (401) for a revoked session');
RESET request.jwt.claims;
SELECT ok((SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'pgcloud.revoked_sessions'::regclass AND indisprimary)
          = 'pgcloud.revoked_sessions_pkey', 'the lookup is by primary key');

-- 6. Logout revokes the current session only.
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.dev_login('bob@example.com') AS s4 \gset
SELECT api.dev_login('bob@example.com') AS s5 \gset
RESET ROLE;
SELECT auth.verify_access_token(:'s4'::jsonb ->> 'access_token') AS c4 \gset
SELECT auth.verify_access_token(:'s5'::jsonb ->> 'access_token') AS c5 \gset
SET LOCAL request.jwt.claims = :'c4';
SELECT lives_ok('SELECT pgcloud.pre_request()', 'pre_request lets an active session through');
SET LOCAL ROLE pgcloud_user;
SELECT is((api.logout()) ->> 'revoked', 'true', 'logout revokes the session');
RESET ROLE;
SELECT is(pg_temp.error_full_of('SELECT pgcloud.pre_request()') ->> 'code', 'session_revoked', 'its access tokens are refused from now on');
SET LOCAL request.jwt.claims = :'c5';
SELECT lives_ok('SELECT pgcloud.pre_request()', 'the other session of the same user is untouched');
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT is(pg_temp.error_full_of(format('SELECT api.refresh_token(%L)', :'s4'::jsonb ->> 'refresh_token')) ->> 'code',
          'invalid_refresh_token', 'the refresh token of a logged-out session is refused');
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.logout()', 'EXECUTE'), 'anon cannot call logout()');
SELECT is(pg_temp.error_full_of($$ SELECT api.refresh_token('pgrt_nope') $$) - 'hint' - 'headers' - 'message',
          '{"code": "invalid_refresh_token", "status": 401, "details": "this is not a refresh token issued by this service"}',
          'a malformed refresh token is refused');
SELECT is(pg_temp.error_full_of(format('SELECT api.refresh_token(%L)', 'pgrt_' || repeat('A', 43))) - 'hint' - 'headers' - 'message',
          '{"code": "invalid_refresh_token", "status": 401, "details": "the refresh token is unknown"}',
          'an unknown refresh token is refused');
RESET ROLE;
UPDATE auth.refresh_tokens SET expires_at = now() - interval '1 second'
 WHERE token_hash = sha256(convert_to(:'s5'::jsonb ->> 'refresh_token', 'UTF8'));
SET LOCAL ROLE pgcloud_anon;
SELECT is(pg_temp.error_full_of(format('SELECT api.refresh_token(%L)', :'s5'::jsonb ->> 'refresh_token')) ->> 'details',
          'the refresh token has expired', 'an expired refresh token is refused');
RESET ROLE;

-- 7. Administrators are made by an administrator (or the operator), audited; the role takes effect at refresh.
RESET request.jwt.claims;
SELECT is((api.admin_set_user_admin((:'c1'::jsonb ->> 'sub')::uuid, true)) ->> 'is_admin', 'true', 'the operator makes bob an administrator');
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.dev_login('bob@example.com') AS s6 \gset
RESET ROLE;
SELECT is(auth.verify_access_token(:'s6'::jsonb ->> 'access_token') ->> 'role', 'pgcloud_admin', 'his next token has role pgcloud_admin');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'user.set_admin' AND target_id = :'c1'::jsonb ->> 'sub'),
          'making an administrator is audited');

SELECT pgcloud.rate_limit_reset();
SELECT * FROM finish();
ROLLBACK;
