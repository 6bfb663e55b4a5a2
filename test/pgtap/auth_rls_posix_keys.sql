-- Row-level security on user-owned rows, the anonymous surface, POSIX
-- identities, and the platform signing keys (sealed, rotated, published).
BEGIN;
SELECT * FROM no_plan();


SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
SELECT auth.verify_access_token(api.dev_login('carol@example.com') ->> 'access_token') AS ca \gset
SELECT auth.verify_access_token(api.dev_login('dave@example.com') ->> 'access_token') AS da \gset
SELECT api.dev_login('carol@example.com') AS carol2 \gset

-- 1. Row-level security binds the owner role too: a user sees only their own rows.
SET LOCAL request.jwt.claims = :'ca';
SET LOCAL ROLE pgcloud_svc_auth;
SELECT is((SELECT array_agg(email) FROM auth.users), ARRAY['carol@example.com'], 'carol sees only her user row');
SELECT is((SELECT count(*)::int FROM auth.identities), 1, '... only her identity');
SELECT is((SELECT array_agg(DISTINCT user_id) FROM auth.sessions), ARRAY[(:'ca'::jsonb ->> 'sub')::uuid], '... only her sessions');
SELECT is((SELECT array_agg(DISTINCT user_id) FROM auth.refresh_tokens), ARRAY[(:'ca'::jsonb ->> 'sub')::uuid], '... only her refresh tokens');
SELECT is((SELECT array_agg(username) FROM auth.posix_identities), ARRAY['carol'], '... only her POSIX identity');
UPDATE auth.users SET display_name = 'hijacked' WHERE email = 'dave@example.com';
SET LOCAL request.jwt.claims = :'da';
SELECT is((SELECT display_name FROM auth.users WHERE email = 'dave@example.com'), NULL, 'carol cannot change dave''s row');
SELECT is((SELECT array_agg(email) FROM auth.users), ARRAY['dave@example.com'], 'dave sees only his row');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "sub": "33333333-3333-4333-8333-333333333333"}';
SELECT is((SELECT count(*)::int FROM auth.users), 0, 'a service account sees no user''s rows');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "33333333-3333-4333-8333-333333333333"}';
SELECT ok((SELECT count(*) FROM auth.users) >= 2, 'an administrator sees every user');
RESET ROLE;
-- ... and through the API: me() of dave is dave.
SET LOCAL request.jwt.claims = :'da';
SET LOCAL ROLE pgcloud_user;
SELECT is(api.me() ->> 'email', 'dave@example.com', 'me() answers for the caller');
-- ... and a user's token cannot spend another user's refresh token.
SELECT is(pg_temp.error_full_of(format('SELECT api.refresh_token(%L)', :'carol2'::jsonb ->> 'refresh_token')) ->> 'details',
          'the refresh token is unknown', 'dave cannot use carol''s refresh token');
RESET ROLE;
RESET request.jwt.claims;

-- 2. The surface each role can reach.
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            JOIN pg_roles r ON r.oid = p.proowner
           WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_auth' AND has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')),
          ARRAY['dev_login', 'jwks', 'refresh_token', 'service_token', 'token_exchange'],
          'anon can call only the sign-in functions and jwks()');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            JOIN pg_roles r ON r.oid = p.proowner
           WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_auth' AND has_function_privilege('pgcloud_user', p.oid, 'EXECUTE')),
          ARRAY['dev_login', 'jwks', 'logout', 'me', 'refresh_token', 'token_exchange'], 'users: sign-in, me and logout');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            JOIN pg_roles r ON r.oid = p.proowner
           WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_auth' AND has_function_privilege('pgcloud_service', p.oid, 'EXECUTE')),
          ARRAY['jwks', 'service_token'], 'service accounts: jwks and service_token');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_auth' AND p.proname LIKE 'admin\_%'
       AND (has_function_privilege('pgcloud_user', p.oid, 'EXECUTE') OR has_function_privilege('pgcloud_service', p.oid, 'EXECUTE'))
$$, 'admin_* functions are for pgcloud_admin only');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'auth' AND (has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')
        OR has_function_privilege('pgcloud_user', p.oid, 'EXECUTE') OR has_function_privilege('pgcloud_admin', p.oid, 'EXECUTE'))
$$, 'no internal auth function (jwt_sign, jwk_generate, ...) is executable by an API role');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'api' AND r.rolname = 'pgcloud_svc_auth'
       AND (NOT p.prosecdef OR obj_description(p.oid, 'pg_proc') IS NULL OR length(obj_description(p.oid, 'pg_proc')) < 40)
$$, 'every auth api function is SECURITY DEFINER and has a COMMENT');
SELECT is((SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'auth' AND c.relkind = 'r' AND c.relrowsecurity AND c.relforcerowsecurity), 5,
          'five user-owned tables are under forced row-level security');

-- 3. POSIX identities: valid, unique, from the policy range, never reused.
SELECT api.dev_login('root@example.com') IS NOT NULL AS x1 \gset
SELECT api.dev_login('carol@other.example') IS NOT NULL AS x2 \gset
SELECT api.dev_login('9Lives+Tag@example.com') IS NOT NULL AS x3 \gset
SELECT is((SELECT username FROM auth.posix_identities p JOIN auth.users u ON u.id = p.user_id WHERE u.email = 'root@example.com'),
          'root1', 'a reserved name is never given (root -> root1)');
SELECT is((SELECT username FROM auth.posix_identities p JOIN auth.users u ON u.id = p.user_id WHERE u.email = 'carol@other.example'),
          'carol1', 'a taken name gets a number (carol -> carol1)');
SELECT is((SELECT username FROM auth.posix_identities p JOIN auth.users u ON u.id = p.user_id WHERE u.email = '9lives+tag@example.com'),
          'u9lives_tag', 'a name always starts with a letter and keeps only [a-z0-9_-]');
SELECT is_empty($$ SELECT username FROM auth.posix_identities WHERE username !~ '^[a-z_][a-z0-9_-]{0,31}$' OR uid <> gid
                     OR uid < pgcloud.policy('auth.posix_uid_min', NULL::int) $$, 'every POSIX identity is valid and in range');
SELECT throws_ok($$ UPDATE auth.posix_identities SET username = 'other' WHERE username = 'carol' $$, NULL, NULL,
                 'a POSIX identity cannot be changed');
SELECT throws_ok($$ DELETE FROM auth.posix_identities WHERE username = 'carol' $$, NULL, NULL, 'nor deleted');
SELECT (SELECT max(uid) FROM auth.posix_identities) AS maxuid \gset
SELECT pgcloud.set_policy('auth.posix_uid_max', to_jsonb(:maxuid));
SELECT is(pg_temp.error_full_of($$ SELECT api.dev_login('eve@example.com') $$) ->> 'code', 'posix_ids_exhausted',
          'when the range is used up: posix_ids_exhausted');
SELECT pgcloud.set_policy('auth.posix_uid_max', '999999');
SELECT api.dev_login('eve@example.com') IS NOT NULL AS x4 \gset
SELECT is((SELECT uid FROM auth.posix_identities p JOIN auth.users u ON u.id = p.user_id WHERE u.email = 'eve@example.com'),
          :maxuid + 1, 'after widening the range the next uid follows the highest one given');

-- 4. Signing keys: sealed, rotated with kid, published until their tokens expire.
SELECT ok(NOT EXISTS (SELECT 1 FROM auth.signing_keys k, jsonb_array_elements(api.jwks() -> 'keys') j
                       WHERE j ? 'd' OR k.public_jwk ? 'd'), 'no private member is published or kept in public_jwk');
SELECT ok(bool_and(get_byte(pgcloud.unseal(private_key, 'auth.signing_key/' || kid), 0) = 48
                   AND position(pgcloud.unseal(private_key, 'auth.signing_key/' || kid) IN private_key) = 0),
          'private keys are PKCS#8 sealed with the master key, not stored in plaintext') FROM auth.signing_keys;
SELECT throws_ok($$ SELECT pgcloud.unseal(private_key, 'auth.signing_key/another') FROM auth.signing_keys LIMIT 1 $$,
                 'XX001', 'sealed value cannot be opened', 'a sealed key opens only for its own kid');
SELECT (auth.active_signing_key()).kid AS old_kid \gset
SELECT auth.jwt_decode(api.dev_login('carol@example.com') ->> 'access_token') #>> '{header,kid}' = :'old_kid' AS signed_old \gset
SELECT api.admin_rotate_signing_key(300) AS pending \gset
SELECT ok(EXISTS (SELECT 1 FROM jsonb_array_elements(api.jwks() -> 'keys') k WHERE k ->> 'kid' = :'pending'::jsonb ->> 'kid'),
          'a key rotated in with a lead time is published at once');
SELECT is(auth.jwt_decode(api.dev_login('carol@example.com') ->> 'access_token') #>> '{header,kid}', :'old_kid',
          '... but does not sign before its time');
SELECT api.admin_rotate_signing_key(0) AS now_key \gset
SELECT ok(:'now_key'::jsonb ->> 'kid' = auth.jwk_thumbprint(:'now_key'::jsonb #> '{jwks,keys,0}') OR
          EXISTS (SELECT 1 FROM auth.signing_keys WHERE kid = :'now_key'::jsonb ->> 'kid' AND kid = auth.jwk_thumbprint(public_jwk)),
          'the kid is the RFC 7638 thumbprint');
SELECT is(auth.jwt_decode(api.dev_login('carol@example.com') ->> 'access_token') #>> '{header,kid}', :'now_key'::jsonb ->> 'kid',
          'a key rotated in with no lead signs at once');
SELECT ok(EXISTS (SELECT 1 FROM jsonb_array_elements(api.jwks() -> 'keys') k WHERE k ->> 'kid' = :'old_kid'),
          'the old key stays published while its tokens may be valid');
UPDATE auth.signing_keys SET activates_at = now() - interval '3 hours' WHERE kid <> :'now_key'::jsonb ->> 'kid';
UPDATE auth.signing_keys SET activates_at = now() - interval '1 hour' WHERE kid = :'now_key'::jsonb ->> 'kid';
SELECT is((SELECT array_agg(k ->> 'kid') FROM jsonb_array_elements(api.jwks() -> 'keys') k), ARRAY[:'now_key'::jsonb ->> 'kid'],
          'once every token of the old keys has expired, only the active key is published');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'signing_key.rotate'), 'rotation is audited');

SELECT * FROM finish();
ROLLBACK;
