-- api.token_exchange(): OIDC ID tokens verified in C against the stored
-- provider (issuer, audience, JWKS, expiry, nonce), user and identity upsert.
BEGIN;
SELECT * FROM no_plan();

CREATE FUNCTION pg_temp.pub(k jsonb) RETURNS jsonb LANGUAGE sql AS
$$ SELECT k - 'd' - 'p' - 'q' - 'dp' - 'dq' - 'qi' $$;
CREATE FUNCTION pg_temp.b64(s text) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT translate(encode(convert_to(s, 'UTF8'), 'base64'), E'+/=\n', '-_') $$;

-- A provider with an RSA and an EC key; an attacker's RSA key with the same kid.
SELECT auth.jwk_generate('RS256') AS rsa \gset
SELECT auth.jwk_generate('ES256') AS ec \gset
SELECT auth.jwk_generate('RS256') || jsonb_build_object('kid', :'rsa'::jsonb ->> 'kid') AS evil \gset
SELECT extract(epoch FROM now())::bigint AS t \gset
SELECT is((api.admin_upsert_oidc_provider('https://idp.example', 'pgcloud-client',
              jsonb_build_object('keys', jsonb_build_array(pg_temp.pub(:'rsa'), pg_temp.pub(:'ec'))))) ->> 'keys',
          '2', 'an operator registers a provider with two keys');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'oidc_provider.create'
                   AND details ->> 'issuer' = 'https://idp.example'), 'registering the provider is audited');

CREATE FUNCTION pg_temp.claims(extra jsonb DEFAULT '{}') RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('iss', 'https://idp.example', 'aud', 'pgcloud-client', 'sub', 'alice-at-idp',
                              'email', 'Alice@Example.COM', 'email_verified', true, 'name', 'Alice',
                              'iat', extract(epoch FROM now())::bigint,
                              'exp', extract(epoch FROM now())::bigint + 300) || extra
$$;

SELECT auth.jwt_sign(pg_temp.claims(), :'rsa') AS good_rs \gset
SELECT auth.jwt_sign(pg_temp.claims(), :'ec') AS good_es \gset

SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.token_exchange(:'good_rs') AS r1 \gset
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'r1'::jsonb) k),
          ARRAY['access_token', 'expires_in', 'refresh_token', 'token_type'],
          'an RS256 ID token is exchanged for access_token, refresh_token, expires_in, token_type');
RESET ROLE;
SELECT is(:'r1'::jsonb ->> 'token_type', 'Bearer', 'token_type is Bearer');
SELECT is((:'r1'::jsonb ->> 'expires_in')::int, 900, 'expires_in is the access token lifetime (policy)');
SELECT auth.verify_access_token(:'r1'::jsonb ->> 'access_token') AS c1 \gset
SELECT is(:'c1'::jsonb ->> 'role', 'pgcloud_user', 'the access token has role pgcloud_user');
SELECT is((SELECT u.email FROM auth.users u WHERE u.id = (:'c1'::jsonb ->> 'sub')::uuid), 'alice@example.com',
          'sub is the new user, whose e-mail is stored in lower case');
SELECT ok((:'c1'::jsonb ->> 'sid')::uuid IN (SELECT id FROM auth.sessions), 'sid is the new session');
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'c1'::jsonb) k),
          ARRAY['aud', 'exp', 'iat', 'iss', 'jti', 'nbf', 'role', 'scopes', 'sid', 'sub'],
          'the access token carries iss, aud, sub, role, sid, scopes, iat, nbf, exp, jti');
SELECT is((SELECT payload - 'created_at' FROM pgcloud.outbox WHERE event_type = 'user.created'
            AND aggregate_id = :'c1'::jsonb ->> 'sub'),
          (SELECT jsonb_build_object('user_id', p.user_id, 'email', 'alice@example.com', 'posix_username', 'alice',
                                     'uid', p.uid, 'gid', p.gid)
             FROM auth.posix_identities p WHERE p.user_id = (:'c1'::jsonb ->> 'sub')::uuid),
          'user.created carries user_id, email, posix_username, uid, gid');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'user.signed_in'
                   AND payload ->> 'session_id' = :'c1'::jsonb ->> 'sid' AND payload ->> 'method' = 'oidc'),
          'user.signed_in is emitted');

SET LOCAL ROLE pgcloud_anon;
SELECT api.token_exchange(:'good_es') AS r2 \gset
RESET ROLE;
SELECT is(auth.verify_access_token(:'r2'::jsonb ->> 'access_token') ->> 'sub', :'c1'::jsonb ->> 'sub',
          'an ES256 ID token of the same identity signs the same user in');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'user.created'), 1,
          'no second user.created');
SELECT is((SELECT count(*)::int FROM auth.identities WHERE issuer = 'https://idp.example'), 1, 'one identity');

-- The failures. Each is a catalogued 401 whose text never contains the token.
CREATE FUNCTION pg_temp.exchange(tok text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE e jsonb;
BEGIN
    SET LOCAL ROLE pgcloud_anon;
    e := pg_temp.error_full_of(format('SELECT api.token_exchange(%L)', tok));
    RESET ROLE;
    IF e IS NOT NULL AND length(tok) > 20 AND position(right(tok, 20) IN e ->> 'message') > 0 THEN
        RETURN jsonb_build_object('leaked', true);
    END IF;
    RETURN e - 'message' - 'hint' - 'headers';
END $$;

SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('exp', :t - 120)), :'rsa')) - 'details',
          '{"code": "token_expired", "status": 401}', 'expired: token_expired (401)');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('exp', :t - 30)), :'rsa')), NULL,
          'expired by less than the clock skew (60 s): accepted');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('nbf', :t + 300)), :'rsa')) - 'details',
          '{"code": "token_not_yet_valid", "status": 401}', 'not yet valid: token_not_yet_valid (401)');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('iat', :t + 600)), :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "the token''s iat is in the future"}',
          'issued in the future: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('iss', 'https://evil.example')), :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "the ID token''s issuer is not a registered identity provider"}',
          'wrong issuer: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('aud', 'another-client')), :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "the token''s audience (aud) does not include the expected one"}',
          'wrong audience: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('aud', jsonb_build_array('x', 'pgcloud-client'))), :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "the ID token has several audiences and its azp is not this client"}',
          'several audiences without azp = our client: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('aud', jsonb_build_array('x', 'pgcloud-client'),
                                                                            'azp', 'pgcloud-client')), :'rsa')),
          NULL, 'several audiences with azp = our client: accepted');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(), :'evil')),
          '{"code": "invalid_token", "status": 401, "details": "the signature does not verify"}',
          'wrong key (an attacker''s key with the provider''s kid): invalid_token');
SELECT is(pg_temp.exchange(pg_temp.b64('{"alg":"none","kid":"' || (:'rsa'::jsonb ->> 'kid') || '"}') || '.'
                           || pg_temp.b64(pg_temp.claims()::text) || '.'),
          '{"code": "invalid_token", "status": 401, "details": "a part of the token is empty"}',
          'alg none without a signature: invalid_token');
SELECT is(pg_temp.exchange(pg_temp.b64('{"alg":"none"}') || '.' || pg_temp.b64(pg_temp.claims()::text) || '.c2ln'),
          '{"code": "invalid_token", "status": 401, "details": "alg \"none\" (an unsigned token) is never accepted"}',
          'alg none: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(),
              jsonb_build_object('kty', 'oct', 'k', pg_temp.b64(pg_temp.pub(:'rsa')::text)),
              jsonb_build_object('kid', :'rsa'::jsonb ->> 'kid'))),
          '{"code": "invalid_token", "status": 401, "details": "alg HS256 is not accepted here"}',
          'HS256 signed with the provider''s RSA public key as the secret: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(),
              jsonb_build_object('kty', 'oct', 'k', :'rsa'::jsonb ->> 'n'),
              jsonb_build_object('kid', :'rsa'::jsonb ->> 'kid'))) ->> 'code',
          'invalid_token', 'HS256 signed with the RSA modulus as the secret: invalid_token');
SELECT is(pg_temp.exchange(left(:'good_rs', length(:'good_rs') - 42)),
          '{"code": "invalid_token", "status": 401, "details": "the signature does not verify"}',
          'a truncated token: invalid_token');
SELECT is(pg_temp.exchange(split_part(:'good_rs', '.', 1) || '.' || split_part(:'good_rs', '.', 2)),
          '{"code": "invalid_token", "status": 401, "details": "the token is not three base64url parts separated by dots"}',
          'a token without its signature: invalid_token');
SELECT is(pg_temp.exchange(split_part(:'good_rs', '.', 1) || '.'
                           || pg_temp.b64(pg_temp.claims(jsonb_build_object('pad', repeat('x', 9000)))::text) || '.c2ln'),
          '{"code": "invalid_token", "status": 401, "details": "a part of the token is too large"}',
          'oversized claims: invalid_token');
SELECT is(pg_temp.exchange(repeat('eyJhbGciOiJSUzI1NiJ9', 1000)),
          '{"code": "invalid_token", "status": 401, "details": "the token is larger than 16384 bytes"}',
          'an oversized token: invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims() - 'iat', :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "the token has no iat claim"}',
          'an ID token needs iat');
SELECT is(pg_temp.exchange('garbage'),
          '{"code": "invalid_token", "status": 401, "details": "the token is not three base64url parts separated by dots"}',
          'garbage: invalid_token');

-- Nonces: an ID token with a nonce is exchanged once, and must carry the nonce the client sent.
SELECT auth.jwt_sign(pg_temp.claims(jsonb_build_object('nonce', 'n-0S6_WzA2Mj')), :'rsa') AS with_nonce \gset
SET LOCAL request.headers = '{"x-oidc-nonce": "n-other"}';
SELECT is(pg_temp.exchange(:'with_nonce') ->> 'details', 'the ID token''s nonce is not the one this client sent',
          'a nonce other than the one the client sent: invalid_token');
SET LOCAL request.headers = '{"x-oidc-nonce": "n-0S6_WzA2Mj"}';
SELECT is(pg_temp.exchange(:'with_nonce'), NULL, 'the right nonce: accepted');
SELECT is(pg_temp.exchange(:'with_nonce') ->> 'details', 'the ID token''s nonce was already used: an ID token is exchanged once',
          'the same ID token again (replay): invalid_token');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(), :'rsa')) ->> 'details', 'the client sent a nonce but the ID token has none',
          'a client nonce but none in the token: invalid_token');
RESET request.headers;

-- An identity from another subject with an e-mail address the provider did not verify is not linked.
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('sub', 'someone-else', 'email_verified', false)), :'rsa')) - 'details',
          '{"code": "email_not_verified", "status": 403}', 'an unverified e-mail of an existing account: email_not_verified (403)');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(jsonb_build_object('sub', 'alice-second-login')), :'rsa')), NULL,
          'a verified e-mail links a second identity to the account');
SELECT is((SELECT count(*)::int FROM auth.identities i JOIN auth.users u ON u.id = i.user_id
            WHERE u.email = 'alice@example.com'), 2, 'the user now has two identities');

-- Rotating the provider's keys (as the operator): tokens of the removed key stop verifying.
RESET request.jwt.claims;
SELECT is((api.admin_upsert_oidc_provider('https://idp.example', 'pgcloud-client',
              jsonb_build_object('keys', jsonb_build_array(pg_temp.pub(:'ec'))))) ->> 'created', 'false',
          'the provider''s keys are replaced');
SELECT is(pg_temp.exchange(auth.jwt_sign(pg_temp.claims(), :'rsa')),
          '{"code": "invalid_token", "status": 401, "details": "no key has the token''s kid"}',
          'a token of the retired key: invalid_token');

SELECT * FROM finish();
ROLLBACK;
