-- JWT, JWK and secrets in C (src/auth/). None of these is granted to an API
-- role: api functions call them as the service role.

CREATE FUNCTION auth.jwt_verify(token text, keys jsonb, options jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwt_verify';
COMMENT ON FUNCTION auth.jwt_verify(text, jsonb, jsonb) IS 'Verifies a compact JWS/JWT (HS256, RS256, ES256, EdDSA) against keys (a JWKS, an array of JWKs or one JWK) and returns its claims. alg must be allowed and match the key type (never "none"); options: iss, aud, algs, leeway (seconds), now (NumericDate, for tests), require (claims, default ["exp"]). Errors: invalid_token, token_expired, token_not_yet_valid (401), invalid_jwks.';

CREATE FUNCTION auth.jwt_decode(token text) RETURNS jsonb
LANGUAGE C STABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwt_decode';
COMMENT ON FUNCTION auth.jwt_decode(text) IS 'The {header, claims} of a structurally valid token, NOT verified: only to choose the issuer whose keys verify it. Malformed tokens raise invalid_token.';

CREATE FUNCTION auth.jwt_sign(claims jsonb, jwk jsonb, header jsonb DEFAULT NULL) RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwt_sign';
COMMENT ON FUNCTION auth.jwt_sign(jsonb, jsonb, jsonb) IS 'Signs claims with a private JWK (oct: HS256, RSA: RS256, EC P-256: ES256, OKP Ed25519: EdDSA); the header gets alg, typ and the JWK''s kid, plus extra members from header (alg cannot change). For tests and tooling; platform tokens use auth.jwt_sign_sealed.';

CREATE FUNCTION auth.jwt_sign_sealed(claims jsonb, kid text, private_key bytea) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwt_sign_sealed';
COMMENT ON FUNCTION auth.jwt_sign_sealed(jsonb, text, bytea) IS 'Signs claims with a platform signing key: unseals private_key (context auth.signing_key/<kid>) in C for one signature and wipes it.';

CREATE FUNCTION auth.signing_key_generate(alg text, OUT kid text, OUT public_jwk jsonb, OUT private_key bytea)
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_signing_key_generate';
COMMENT ON FUNCTION auth.signing_key_generate(text) IS 'Generates a platform signing key with OpenSSL: kid (RFC 7638 thumbprint), public JWK, and the private key sealed with the master key. The private key never exists in plaintext outside C.';

CREATE FUNCTION auth.jwk_thumbprint(jwk jsonb) RETURNS text
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwk_thumbprint';
COMMENT ON FUNCTION auth.jwk_thumbprint(jsonb) IS 'RFC 7638 JWK thumbprint (base64url SHA-256 of the required members).';

CREATE FUNCTION auth.jwks_validate(jwks jsonb) RETURNS jsonb
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwks_validate';
COMMENT ON FUNCTION auth.jwks_validate(jsonb) IS 'Checks an identity provider''s JWKS and returns its public signing keys (RSA >= 2048 bits, EC P-256, Ed25519) in normal form; drops encryption keys and algorithms we do not verify; refuses private or symmetric keys, broken keys, duplicate kids and sets without a usable key (invalid_jwks).';

CREATE FUNCTION auth.jwk_generate(alg text) RETURNS jsonb
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_jwk_generate';
COMMENT ON FUNCTION auth.jwk_generate(text) IS 'A new private JWK for HS256, RS256, ES256 or EdDSA (kid = thumbprint). For tests and tooling only: superuser-only, never granted.';

CREATE FUNCTION auth.random_token(prefix text, nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_random_token';
COMMENT ON FUNCTION auth.random_token(text, integer) IS 'prefix followed by the base64url of nbytes (16-64) bytes from the operating system''s CSPRNG.';

CREATE FUNCTION auth.secret_hash(secret text) RETURNS bytea
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_secret_hash';
COMMENT ON FUNCTION auth.secret_hash(text) IS 'SHA-256 of a high-entropy secret (refresh token, client secret): the only form in which they are stored.';

CREATE FUNCTION auth.secret_matches(secret text, hash bytea) RETURNS boolean
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_secret_matches';
COMMENT ON FUNCTION auth.secret_matches(text, bytea) IS 'Whether SHA-256(secret) equals hash, compared in constant time.';

-- Platform signing keys ------------------------------------------------------

CREATE FUNCTION auth.create_signing_key(activate_after_seconds integer) RETURNS auth.signing_keys
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    alg text := pgcloud.policy('auth.signing_alg', NULL::text);
    k auth.signing_keys;
BEGIN
    IF alg IS NULL OR alg NOT IN ('ES256', 'RS256', 'EdDSA') THEN
        PERFORM pgcloud.raise('policy_invalid', 'auth.signing_alg must be ES256, RS256 or EdDSA');
    END IF;
    IF activate_after_seconds IS NULL OR activate_after_seconds NOT BETWEEN 0 AND 2592000 THEN
        PERFORM pgcloud.raise('invalid_argument', 'a new signing key activates after 0 to 2592000 seconds');
    END IF;
    SELECT g.kid, alg, g.public_jwk, g.private_key, now(), now() + make_interval(secs => activate_after_seconds)
      INTO k FROM auth.signing_key_generate(alg) g;
    INSERT INTO auth.signing_keys (kid, alg, public_jwk, private_key, created_at, activates_at)
    VALUES (k.kid, k.alg, k.public_jwk, k.private_key, k.created_at, k.activates_at);
    RETURN k;
END
$$;
COMMENT ON FUNCTION auth.create_signing_key(integer) IS 'Generates and stores a platform signing key (algorithm auth.signing_alg) that signs from activate_after_seconds on; it is published in api.jwks() at once.';

CREATE FUNCTION auth.active_signing_key() RETURNS auth.signing_keys
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    k auth.signing_keys;
BEGIN
    SELECT * INTO k FROM auth.signing_keys s WHERE s.activates_at <= now()
     ORDER BY s.activates_at DESC, s.created_at DESC LIMIT 1;
    IF FOUND THEN
        RETURN k;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('auth.signing_keys', 0));
    SELECT * INTO k FROM auth.signing_keys s WHERE s.activates_at <= now()
     ORDER BY s.activates_at DESC, s.created_at DESC LIMIT 1;
    IF FOUND THEN
        RETURN k;
    END IF;
    k := auth.create_signing_key(0);
    PERFORM auth.announce_keys(k);
    RETURN k;
END
$$;
COMMENT ON FUNCTION auth.active_signing_key() IS 'The key that signs now: the newest key whose activation time has come (one is created if there is none).';

CREATE FUNCTION auth.max_token_lifetime() RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT greatest(pgcloud.policy('auth.access_token_ttl_seconds', NULL::int),
                    pgcloud.policy('auth.service_token_ttl_seconds', NULL::int))
         + pgcloud.policy('auth.clock_skew_seconds', NULL::int)
$$;
COMMENT ON FUNCTION auth.max_token_lifetime() IS 'The longest an access token can be accepted after it was issued (seconds): the larger token lifetime plus the clock skew.';

CREATE FUNCTION auth.published_jwks() RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT jsonb_build_object('keys',
               coalesce(jsonb_agg(k.public_jwk ORDER BY k.activates_at DESC, k.kid), '[]'::jsonb))
      FROM auth.signing_keys k
     WHERE NOT EXISTS (
           SELECT 1 FROM auth.signing_keys n
            WHERE n.activates_at > k.activates_at
              AND n.activates_at <= now() - make_interval(secs => auth.max_token_lifetime()))
$$;
COMMENT ON FUNCTION auth.published_jwks() IS 'The public keys verifiers need: every key not yet active, the active one, and older ones until every token they signed has expired.';

CREATE FUNCTION auth.announce_keys(k auth.signing_keys) RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT pgcloud.emit('signing_key.published', 'signing_key', k.kid, jsonb_build_object(
        'kid', k.kid, 'alg', k.alg, 'activates_at', k.activates_at,
        'published_at', clock_timestamp(), 'jwks', auth.published_jwks()))
$$;
COMMENT ON FUNCTION auth.announce_keys(auth.signing_keys) IS 'Announces a new signing key to every database (database per service): emits signing_key.published with the key, when it signs, and the whole published key set (public keys only, as api.jwks()). Returns the event id.';

CREATE FUNCTION auth.issue_access_token(sub uuid, role text, sid uuid, scopes text[], ttl integer) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    k auth.signing_keys := auth.active_signing_key();
    t bigint := floor(extract(epoch FROM now()))::bigint;
BEGIN
    IF role NOT IN ('pgcloud_user', 'pgcloud_admin', 'pgcloud_service') THEN
        PERFORM pgcloud.raise('invalid_argument', 'an access token role is pgcloud_user, pgcloud_admin or pgcloud_service');
    END IF;
    RETURN auth.jwt_sign_sealed(jsonb_build_object(
        'iss', pgcloud.policy('auth.issuer', NULL::text),
        'aud', pgcloud.policy('auth.audience', NULL::text),
        'sub', sub,
        'role', role,
        'sid', sid,
        'scopes', to_jsonb(coalesce(scopes, '{}'::text[])),
        'iat', t,
        'nbf', t,
        'exp', t + ttl,
        'jti', gen_random_uuid()), k.kid, k.private_key);
END
$$;
COMMENT ON FUNCTION auth.issue_access_token(uuid, text, uuid, text[], integer) IS 'Signs a platform access token with the active key: iss, aud (policy), sub, role, sid, scopes, iat, nbf, exp (iat + ttl), jti.';

CREATE FUNCTION auth.verify_access_token(token text) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT auth.jwt_verify(token, auth.published_jwks(),
        jsonb_build_object('iss', pgcloud.policy('auth.issuer', NULL::text),
                           'aud', pgcloud.policy('auth.audience', NULL::text),
                           'algs', jsonb_build_array('ES256', 'RS256', 'EdDSA'),
                           'leeway', pgcloud.policy('auth.clock_skew_seconds', NULL::int),
                           'require', jsonb_build_array('exp', 'iat', 'sub')))
$$;
COMMENT ON FUNCTION auth.verify_access_token(text) IS 'Verifies a platform access token the way PostgREST does (published keys, issuer, audience, expiry) and returns its claims.';

-- The first key exists from installation on, so api.jwks() is never empty.
SELECT auth.create_signing_key(0);
