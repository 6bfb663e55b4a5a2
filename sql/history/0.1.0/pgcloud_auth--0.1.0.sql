-- pgcloud_auth install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_auth" to load this file. \quit

SELECT pgcloud.service_begin('auth');
-- source: sql/auth/00_auth.sql
-- pgcloud_auth: schema auth, owned by pgcloud_svc_auth (created by pgcloud.service_begin).
--
-- Identity for the platform: OIDC token exchange, platform JWTs signed in C
-- with a sealed key, refresh tokens rotated on use, sessions that
-- pgcloud.pre_request() can refuse, service accounts with scopes, and POSIX
-- identities. This file: the error codes and policy values of the service.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('invalid_token',          401, 'The token is not valid.', 'auth'),
    ('token_expired',          401, 'The token has expired.', 'auth'),
    ('token_not_yet_valid',    401, 'The token is not valid yet.', 'auth'),
    ('invalid_refresh_token',  401, 'The refresh token is not valid.', 'auth'),
    ('refresh_token_reused',   401, 'This refresh token was already used: its session has been revoked.', 'auth'),
    ('invalid_client',         401, 'The client id or client secret is not valid.', 'auth'),
    ('invalid_jwks',           400, 'The JSON Web Key Set is not valid.', 'auth'),
    ('dev_login_disabled',     403, 'Development login is disabled.', 'auth'),
    ('email_not_verified',     403, 'The identity provider has not verified this e-mail address.', 'auth'),
    ('account_conflict',       409, 'This identity or e-mail address belongs to another account.', 'auth'),
    ('posix_ids_exhausted',    503, 'No POSIX user id is left in the configured range.', 'auth');

-- auth.dev_login_enabled, auth.access_token_ttl_seconds and
-- auth.refresh_token_ttl_seconds are seeded by core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('auth.issuer',             '"pgcloud"', 'The iss claim of platform access tokens.'),
    ('auth.audience',           '"pgcloud-api"', 'The aud claim of platform access tokens.'),
    ('auth.clock_skew_seconds', '60', 'Leeway for exp, nbf and iat when verifying ID tokens (seconds).'),
    ('auth.service_token_ttl_seconds', '900', 'Lifetime of service-account access tokens (seconds).'),
    ('auth.signing_alg',        '"ES256"', 'Algorithm of new platform signing keys: ES256, RS256 or EdDSA.'),
    ('auth.signing_key_lead_seconds', '300', 'How long a rotated-in signing key is published in api.jwks() before it signs (seconds), so verifiers can fetch it first.'),
    ('auth.oidc_algorithms',    '["RS256", "ES256", "EdDSA"]', 'Algorithms accepted for OIDC ID tokens.'),
    ('auth.posix_uid_min',      '100000', 'First POSIX uid (and gid) given to users.'),
    ('auth.posix_uid_max',      '999999', 'Last POSIX uid (and gid) given to users.'),
    ('auth.posix_reserved_usernames',
     '["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "systemd-network", "systemd-resolve", "systemd-timesync", "messagebus", "syslog", "sshd", "ubuntu", "debian", "admin", "administrator", "postgres", "pgcloud", "operator", "maas", "lxd", "docker", "user", "guest", "support", "test", "centos", "ec2-user", "cloud-user", "rocky", "fedora", "core", "almalinux", "alma", "arch", "opc", "azureuser", "alpine", "freebsd", "clear", "cirros", "suse", "opensuse", "oracle", "rhel", "redhat", "cumulus", "vagrant", "pi", "nvidia", "cloud", "default", "ansible", "kali", "gentoo", "flatcar", "bitnami", "centos-cloud"]',
     'POSIX user names never given to users.'),
    ('auth.unverified_email_signin', '"separate_account"', 'What a sign-in whose provider did not verify the e-mail address gets: separate_account (an account of its own, without the address) or refuse (email_not_verified). Never a link to an existing account.'),
    ('auth.refresh_reuse_interval_seconds', '10', 'Seconds after a refresh token was exchanged during which exchanging it again returns the same successor (two tabs refreshing at once); after it, reuse revokes the session.');

-- source: sql/auth/10_tables.sql
-- auth tables. User-owned rows (users, identities, POSIX identities,
-- sessions, refresh tokens) are under row-level security that also binds
-- the owner role: a request made with a user's (or service account's)
-- token sees only that principal's rows, whatever query runs.

CREATE TABLE auth.users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text CHECK (email IS NULL OR (email = lower(email) AND length(email) <= 254
                                                  AND email ~ '^[^@[:space:]]+@[^@[:space:]]+$')),
    email_verified  boolean NOT NULL DEFAULT false,
    display_name    text CHECK (display_name IS NULL OR length(display_name) <= 200),
    is_admin        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz
);
CREATE UNIQUE INDEX users_email_idx ON auth.users (email);
COMMENT ON TABLE auth.users IS 'Platform users. A user signs in through identities (OIDC providers, or the development login).';
COMMENT ON COLUMN auth.users.id IS 'User id: the sub claim of the user''s access tokens.';
COMMENT ON COLUMN auth.users.email IS 'Lower-case e-mail address, unique; NULL when no provider gave one.';
COMMENT ON COLUMN auth.users.email_verified IS 'Whether an identity provider vouched for the address.';
COMMENT ON COLUMN auth.users.display_name IS 'Name from the identity provider (claim name), if any.';
COMMENT ON COLUMN auth.users.is_admin IS 'Access tokens of this user carry role pgcloud_admin (set with api.admin_set_user_admin, audited).';
COMMENT ON COLUMN auth.users.created_at IS 'When the user first signed in.';
COMMENT ON COLUMN auth.users.last_sign_in_at IS 'When the user last signed in or refreshed a session.';

CREATE TABLE auth.posix_identities (
    user_id     uuid PRIMARY KEY REFERENCES auth.users (id),
    uid         integer NOT NULL UNIQUE CHECK (uid > 999),
    gid         integer NOT NULL UNIQUE CHECK (gid > 999),
    username    text NOT NULL UNIQUE CHECK (username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    assigned_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE auth.posix_identities IS 'Each user''s POSIX account for SSH: uid, gid and user name, assigned once from the policy range and never changed, deleted or reused (append-only).';
COMMENT ON COLUMN auth.posix_identities.user_id IS 'The user.';
COMMENT ON COLUMN auth.posix_identities.uid IS 'POSIX user id, unique, from auth.posix_uid_min..auth.posix_uid_max.';
COMMENT ON COLUMN auth.posix_identities.gid IS 'POSIX group id of the user''s private group (equal to uid).';
COMMENT ON COLUMN auth.posix_identities.username IS 'POSIX user name: [a-z_][a-z0-9_-]{0,31}, unique, never a reserved name.';
COMMENT ON COLUMN auth.posix_identities.assigned_at IS 'When it was assigned.';
CREATE TRIGGER posix_identities_immutable BEFORE UPDATE OR DELETE ON auth.posix_identities
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER posix_identities_no_truncate BEFORE TRUNCATE ON auth.posix_identities
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();

CREATE TABLE auth.posix_allocator (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    next_uid  bigint NOT NULL
);
COMMENT ON TABLE auth.posix_allocator IS 'The next POSIX uid to give (one row). Only ever grows, so an id is never given twice.';
COMMENT ON COLUMN auth.posix_allocator.singleton IS 'Always true: the table has one row.';
COMMENT ON COLUMN auth.posix_allocator.next_uid IS 'The next uid (and gid) to assign, if not below auth.posix_uid_min.';

CREATE TABLE auth.oidc_providers (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    issuer     text NOT NULL UNIQUE CHECK (length(issuer) <= 512 AND issuer ~ '^https?://[^[:space:]]+$'),
    audience   text NOT NULL CHECK (length(audience) BETWEEN 1 AND 512),
    jwks       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE auth.oidc_providers IS 'OpenID Connect providers whose ID tokens api.token_exchange() accepts.';
COMMENT ON COLUMN auth.oidc_providers.id IS 'Provider id.';
COMMENT ON COLUMN auth.oidc_providers.issuer IS 'The provider''s issuer identifier: the iss claim of its ID tokens, exactly.';
COMMENT ON COLUMN auth.oidc_providers.audience IS 'Our client id at the provider: ID tokens must carry it in aud.';
COMMENT ON COLUMN auth.oidc_providers.jwks IS 'The provider''s public signing keys (JWKS, checked and reduced by auth.jwks_validate).';
COMMENT ON COLUMN auth.oidc_providers.created_at IS 'When the provider was registered.';
COMMENT ON COLUMN auth.oidc_providers.updated_at IS 'When its audience or keys last changed.';

CREATE TABLE auth.identities (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES auth.users (id),
    issuer          text NOT NULL,
    subject         text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    email           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (issuer, subject)
);
CREATE INDEX identities_user_idx ON auth.identities (user_id);
COMMENT ON TABLE auth.identities IS 'The external identities a user signs in with: (issuer, subject) pairs.';
COMMENT ON COLUMN auth.identities.id IS 'Identity id.';
COMMENT ON COLUMN auth.identities.user_id IS 'The user this identity signs in.';
COMMENT ON COLUMN auth.identities.issuer IS 'The provider''s issuer (pgcloud:dev for the development login).';
COMMENT ON COLUMN auth.identities.subject IS 'The provider''s sub claim for this person.';
COMMENT ON COLUMN auth.identities.email IS 'The e-mail address the provider gave last.';
COMMENT ON COLUMN auth.identities.created_at IS 'When the identity was first used.';
COMMENT ON COLUMN auth.identities.last_sign_in_at IS 'When it was last used.';

CREATE TABLE auth.service_accounts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_.-]{2,62}$'),
    client_id   text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes      text[] NOT NULL,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
COMMENT ON TABLE auth.service_accounts IS 'Machine clients: a client id and a secret (stored only as its SHA-256) give access tokens with role pgcloud_service and the account''s scopes.';
COMMENT ON COLUMN auth.service_accounts.id IS 'Service account id: the sub claim of its access tokens.';
COMMENT ON COLUMN auth.service_accounts.name IS 'Unique name.';
COMMENT ON COLUMN auth.service_accounts.client_id IS 'Public client id.';
COMMENT ON COLUMN auth.service_accounts.secret_hash IS 'SHA-256 of the client secret; the secret itself is shown once and never stored.';
COMMENT ON COLUMN auth.service_accounts.scopes IS 'Scopes its tokens carry (see pgcloud.authorize_scope).';
COMMENT ON COLUMN auth.service_accounts.created_by IS 'The administrator who created it (NULL for an operator).';
COMMENT ON COLUMN auth.service_accounts.created_at IS 'When it was created.';
COMMENT ON COLUMN auth.service_accounts.disabled_at IS 'When set, no token is issued to it.';

CREATE TABLE auth.sessions (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid REFERENCES auth.users (id),
    service_account_id uuid REFERENCES auth.service_accounts (id),
    method             text NOT NULL CHECK (method IN ('oidc', 'dev', 'service')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    revoked_at         timestamptz,
    revoked_reason     text CHECK (revoked_reason IN ('logout', 'refresh_token_reuse', 'admin')),
    CHECK (num_nonnulls(user_id, service_account_id) = 1)
);
CREATE INDEX sessions_user_idx ON auth.sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_expires_idx ON auth.sessions (expires_at);
COMMENT ON TABLE auth.sessions IS 'Sign-in sessions: the sid claim of access tokens. A revoked session''s tokens are refused by pgcloud.pre_request().';
COMMENT ON COLUMN auth.sessions.id IS 'Session id (sid claim).';
COMMENT ON COLUMN auth.sessions.user_id IS 'The signed-in user (NULL for a service account session).';
COMMENT ON COLUMN auth.sessions.service_account_id IS 'The service account (NULL for a user session).';
COMMENT ON COLUMN auth.sessions.method IS 'How it started: oidc, dev or service.';
COMMENT ON COLUMN auth.sessions.created_at IS 'When it started.';
COMMENT ON COLUMN auth.sessions.expires_at IS 'When it ends unless refreshed (the refresh token lifetime, sliding).';
COMMENT ON COLUMN auth.sessions.revoked_at IS 'When it was revoked, if it was.';
COMMENT ON COLUMN auth.sessions.revoked_reason IS 'logout, refresh_token_reuse or admin.';

CREATE TABLE auth.refresh_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES auth.sessions (id),
    user_id    uuid NOT NULL REFERENCES auth.users (id),
    token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    generation integer NOT NULL CHECK (generation > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    successor_sealed bytea
);
CREATE INDEX refresh_tokens_session_idx ON auth.refresh_tokens (session_id);
COMMENT ON TABLE auth.refresh_tokens IS 'Opaque refresh tokens, stored only as SHA-256 hashes. Each is used once: using it gives the next one of its session (its family); using one twice revokes the session.';
COMMENT ON COLUMN auth.refresh_tokens.id IS 'Row id.';
COMMENT ON COLUMN auth.refresh_tokens.session_id IS 'The session (token family).';
COMMENT ON COLUMN auth.refresh_tokens.user_id IS 'The session''s user (for row-level security).';
COMMENT ON COLUMN auth.refresh_tokens.token_hash IS 'SHA-256 of the token; the token itself is never stored.';
COMMENT ON COLUMN auth.refresh_tokens.generation IS '1 for the token of the sign-in, +1 for each rotation.';
COMMENT ON COLUMN auth.refresh_tokens.created_at IS 'When it was issued.';
COMMENT ON COLUMN auth.refresh_tokens.expires_at IS 'After this it is refused.';
COMMENT ON COLUMN auth.refresh_tokens.used_at IS 'When it was exchanged for the next one; a second use is reuse.';
COMMENT ON COLUMN auth.refresh_tokens.revoked_at IS 'When its session was revoked.';
COMMENT ON COLUMN auth.refresh_tokens.successor_sealed IS 'The token that replaced this one, sealed (pgcloud.seal): within auth.refresh_reuse_interval_seconds of used_at a second exchange returns it again; cleared once the interval has passed.';

CREATE TABLE auth.oidc_nonces (
    issuer     text NOT NULL,
    nonce_hash bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, nonce_hash)
);
CREATE INDEX oidc_nonces_expires_idx ON auth.oidc_nonces (expires_at);
COMMENT ON TABLE auth.oidc_nonces IS 'Nonces of exchanged ID tokens (SHA-256), kept until the token expires: an ID token with a nonce is exchanged once.';
COMMENT ON COLUMN auth.oidc_nonces.issuer IS 'The provider.';
COMMENT ON COLUMN auth.oidc_nonces.nonce_hash IS 'SHA-256 of the nonce claim.';
COMMENT ON COLUMN auth.oidc_nonces.expires_at IS 'When the ID token (plus leeway) expires; the row may be pruned after that.';

CREATE TABLE auth.signing_keys (
    kid          text PRIMARY KEY,
    alg          text NOT NULL CHECK (alg IN ('ES256', 'RS256', 'EdDSA')),
    public_jwk   jsonb NOT NULL,
    private_key  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activates_at timestamptz NOT NULL
);
COMMENT ON TABLE auth.signing_keys IS 'Platform token signing keys. The newest active key signs; a key is published in api.jwks() from its creation until every token it signed has expired.';
COMMENT ON COLUMN auth.signing_keys.kid IS 'Key id: the RFC 7638 thumbprint of the public key (the kid header of tokens).';
COMMENT ON COLUMN auth.signing_keys.alg IS 'ES256, RS256 or EdDSA.';
COMMENT ON COLUMN auth.signing_keys.public_jwk IS 'The public key as a JWK, as api.jwks() publishes it.';
COMMENT ON COLUMN auth.signing_keys.private_key IS 'The private key (PKCS#8), sealed with the platform master key for context auth.signing_key/<kid>; never stored in plaintext.';
COMMENT ON COLUMN auth.signing_keys.created_at IS 'When the key was generated.';
COMMENT ON COLUMN auth.signing_keys.activates_at IS 'From when it signs (it is published before, so verifiers can fetch it).';

-- Row-level security on user-owned rows, forced on the owner too.
CREATE FUNCTION auth.row_visible(owner uuid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT pgcloud.request_role() NOT IN ('pgcloud_user', 'pgcloud_service') OR owner = pgcloud.user_id()
$$;
COMMENT ON FUNCTION auth.row_visible(uuid) IS 'Row-level security predicate: a request with a user''s or service account''s token sees only rows it owns; anonymous sign-in flows, administrators and operators see all.';

ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_owner ON auth.users USING (auth.row_visible(id)) WITH CHECK (true);
ALTER TABLE auth.identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.identities FORCE ROW LEVEL SECURITY;
CREATE POLICY identities_owner ON auth.identities USING (auth.row_visible(user_id)) WITH CHECK (true);
ALTER TABLE auth.posix_identities ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.posix_identities FORCE ROW LEVEL SECURITY;
CREATE POLICY posix_identities_owner ON auth.posix_identities USING (auth.row_visible(user_id)) WITH CHECK (true);
ALTER TABLE auth.sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY sessions_owner ON auth.sessions
    USING (auth.row_visible(coalesce(user_id, service_account_id))) WITH CHECK (true);
ALTER TABLE auth.refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE auth.refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY refresh_tokens_owner ON auth.refresh_tokens USING (auth.row_visible(user_id)) WITH CHECK (true);

-- pg_dump keeps the data of these extension tables.
SELECT pg_catalog.pg_extension_config_dump('auth.users', '');
SELECT pg_catalog.pg_extension_config_dump('auth.posix_identities', '');
SELECT pg_catalog.pg_extension_config_dump('auth.posix_allocator', '');
SELECT pg_catalog.pg_extension_config_dump('auth.oidc_providers', '');
SELECT pg_catalog.pg_extension_config_dump('auth.identities', '');
SELECT pg_catalog.pg_extension_config_dump('auth.service_accounts', '');
SELECT pg_catalog.pg_extension_config_dump('auth.sessions', '');
SELECT pg_catalog.pg_extension_config_dump('auth.refresh_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('auth.oidc_nonces', '');
SELECT pg_catalog.pg_extension_config_dump('auth.signing_keys', '');

-- source: sql/auth/20_jwt.sql
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
    RETURN auth.create_signing_key(0);
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

-- source: sql/auth/30_sessions.sql
-- Users, POSIX identities, sessions and refresh tokens (internal to auth).

CREATE FUNCTION auth.error_response(code text, details text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    m text;
    d text;
BEGIN
    -- The catalogued error body, without aborting the transaction: for the
    -- one case where the effect (a revocation) must commit and the caller
    -- must still get an error. PostgREST sends response.status.
    BEGIN
        PERFORM pgcloud.raise(code, details);
    EXCEPTION WHEN SQLSTATE 'PGRST' THEN
        GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL;
    END;
    PERFORM set_config('response.status', d::jsonb ->> 'status', true);
    RETURN m::jsonb;
END
$$;
COMMENT ON FUNCTION auth.error_response(text, text) IS 'Returns the catalogued error body {code, message, details, hint} and sets response.status, instead of raising: the transaction (e.g. a revocation) commits.';

CREATE FUNCTION auth.posix_username_base(email text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT CASE WHEN b ~ '^[a-z_]' THEN b ELSE 'u' || b END
      FROM (SELECT left(regexp_replace(translate(lower(coalesce(split_part(email, '@', 1), '')), '.+', '__'),
                                       '[^a-z0-9_-]', '', 'g'), 24) AS b) s
$$;
COMMENT ON FUNCTION auth.posix_username_base(text) IS 'The POSIX user name a user would like: the local part of the e-mail address in [a-z0-9_-], starting with a letter or _, at most 24 characters ("u" alone when there is nothing usable).';

CREATE FUNCTION auth.assign_posix_identity(user_id uuid, email text) RETURNS auth.posix_identities
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    lo bigint := pgcloud.policy('auth.posix_uid_min', NULL::bigint);
    hi bigint := pgcloud.policy('auth.posix_uid_max', NULL::bigint);
    reserved jsonb := pgcloud.policy('auth.posix_reserved_usernames', NULL::jsonb);
    new_uid bigint;
    base text := auth.posix_username_base(email);
    candidate text;
    n integer := 0;
    inserted integer;
    p auth.posix_identities;
BEGIN
    IF lo IS NULL OR hi IS NULL OR lo < 1000 OR hi > 2147483647 OR lo > hi THEN
        PERFORM pgcloud.raise('policy_invalid', 'auth.posix_uid_min and auth.posix_uid_max must satisfy 1000 <= min <= max <= 2147483647');
    END IF;
    -- The counter only grows (one row, locked until commit): an id is never given twice.
    INSERT INTO auth.posix_allocator AS a (singleton, next_uid) VALUES (true, lo + 1)
    ON CONFLICT (singleton) DO UPDATE SET next_uid = greatest(a.next_uid, lo) + 1
    RETURNING a.next_uid - 1 INTO new_uid;
    IF new_uid > hi THEN
        PERFORM pgcloud.raise('posix_ids_exhausted',
            format('every uid from %s to %s has been given', lo, hi),
            'An operator widens the range with pgcloud.set_policy(''auth.posix_uid_max'', ...).');
    END IF;
    -- The first free name among base, base1, base2, ... (reserved names never).
    -- The unique index decides, so rows hidden by row-level security count too.
    LOOP
        candidate := CASE WHEN n = 0 THEN base ELSE base || n END;
        IF NOT coalesce(reserved ? candidate, false) THEN
            INSERT INTO auth.posix_identities (user_id, uid, gid, username)
            VALUES (assign_posix_identity.user_id, new_uid, new_uid, candidate)
            ON CONFLICT (username) DO NOTHING;
            GET DIAGNOSTICS inserted = ROW_COUNT;
            EXIT WHEN inserted = 1;
        END IF;
        n := n + 1;
    END LOOP;
    p := (assign_posix_identity.user_id, new_uid::int, new_uid::int, candidate, now());
    RETURN p;
END
$$;
COMMENT ON FUNCTION auth.assign_posix_identity(uuid, text) IS 'Gives a new user a POSIX identity: the next uid from the policy range (gid = uid) and the first free, non-reserved user name derived from the e-mail address. Assigned once; uids and names are never reused.';

CREATE FUNCTION auth.sign_in_identity(issuer text, subject text, email text, email_verified boolean,
                                      display_name text) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
#variable_conflict use_column
DECLARE
    uid uuid;
    new_id uuid;
    inserted integer;
    p auth.posix_identities;
    u auth.users;
BEGIN
    SELECT i.user_id INTO uid FROM auth.identities i
     WHERE i.issuer = sign_in_identity.issuer AND i.subject = sign_in_identity.subject;
    IF FOUND THEN
        UPDATE auth.identities i SET last_sign_in_at = now(), email = coalesce(sign_in_identity.email, i.email)
         WHERE i.issuer = sign_in_identity.issuer AND i.subject = sign_in_identity.subject;
        RETURN uid;
    END IF;

    IF email IS NOT NULL THEN
        SELECT u2.* INTO u FROM auth.users u2 WHERE u2.email = sign_in_identity.email FOR UPDATE;
        IF FOUND AND NOT coalesce(email_verified, false) THEN
            PERFORM pgcloud.audit('identity.link_refused', 'user', u.id::text, 'denied',
                jsonb_build_object('issuer', issuer, 'subject', subject, 'reason', 'email_not_verified'));
            PERFORM pgcloud.raise('email_not_verified',
                'an account with this e-mail address exists, and the provider has not verified the address, so this identity is not linked to it');
        END IF;
        IF FOUND AND NOT u.email_verified THEN
            -- The address was taken by an identity whose provider never
            -- verified it: it does not capture the address. The verified
            -- owner gets an account of its own and the address; the other
            -- account keeps its identities but loses the address.
            UPDATE auth.users u4 SET email = NULL WHERE u4.id = u.id;
            PERFORM pgcloud.audit('user.email_released', 'user', u.id::text, 'ok',
                jsonb_build_object('reason', 'claimed by a verified identity', 'issuer', issuer, 'subject', subject));
        ELSIF FOUND THEN
            -- Both sides verified: link, and say so in the audit log.
            uid := u.id;
            PERFORM pgcloud.audit('identity.linked', 'user', uid::text, 'ok',
                jsonb_build_object('issuer', issuer, 'subject', subject, 'by', 'verified_email'));
        END IF;
        IF NOT coalesce(email_verified, false)
           AND pgcloud.policy('auth.unverified_email_signin', NULL::text) = 'refuse' THEN
            PERFORM pgcloud.raise('email_not_verified',
                'the identity provider has not verified this e-mail address, and policy auth.unverified_email_signin refuses such sign-ins');
        END IF;
    END IF;

    IF uid IS NULL THEN
        new_id := gen_random_uuid();
        -- An unverified address is never stored on the account (the unique
        -- address is what linking and e-mail go by); the identity keeps it.
        INSERT INTO auth.users (id, email, email_verified, display_name)
        VALUES (new_id, CASE WHEN coalesce(email_verified, false) THEN sign_in_identity.email END,
                coalesce(email_verified, false) AND sign_in_identity.email IS NOT NULL,
                left(sign_in_identity.display_name, 200))
        ON CONFLICT (email) DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted = 0 THEN
            PERFORM pgcloud.raise('account_conflict', 'this e-mail address belongs to another account than the one signed in',
                                  'Sign out first.');
        END IF;
        uid := new_id;
        p := auth.assign_posix_identity(uid, sign_in_identity.email);
        SELECT * INTO u FROM auth.users u3 WHERE u3.id = uid;
        PERFORM pgcloud.emit('user.created', 'user', uid::text, jsonb_build_object(
            'user_id', uid, 'email', u.email, 'posix_username', p.username,
            'uid', p.uid, 'gid', p.gid, 'created_at', u.created_at));
    END IF;

    INSERT INTO auth.identities (user_id, issuer, subject, email)
    VALUES (uid, sign_in_identity.issuer, sign_in_identity.subject, sign_in_identity.email)
    ON CONFLICT (issuer, subject) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 0 THEN
        PERFORM pgcloud.raise('account_conflict', 'this identity belongs to another account than the one signed in',
                              'Sign out first.');
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION auth.sign_in_identity(text, text, text, boolean, text) IS 'The user an external identity (issuer, subject) signs in: the linked one; else the user with the same e-mail address when both that account''s address and this identity''s are verified (audited as identity.linked); else a new user with a POSIX identity (emits user.created). An unverified address is never linked nor stored on an account (policy auth.unverified_email_signin = refuse refuses such sign-ins); a verified identity takes its address back from an account that only holds it unverified (audited as user.email_released).';

CREATE FUNCTION auth.new_refresh_token(session_id uuid, user_id uuid, generation integer) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    token text := auth.random_token('pgrt_', 32);
BEGIN
    INSERT INTO auth.refresh_tokens (session_id, user_id, token_hash, generation, expires_at)
    VALUES (new_refresh_token.session_id, new_refresh_token.user_id, auth.secret_hash(token), generation,
            now() + make_interval(secs => pgcloud.policy('auth.refresh_token_ttl_seconds', NULL::int)));
    RETURN token;
END
$$;
COMMENT ON FUNCTION auth.new_refresh_token(uuid, uuid, integer) IS 'Issues a refresh token (pgrt_ + 256 random bits) of a session; only its SHA-256 is stored.';

CREATE FUNCTION auth.user_role(user_id uuid) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, auth
AS $$
    SELECT CASE WHEN u.is_admin THEN 'pgcloud_admin' ELSE 'pgcloud_user' END
      FROM auth.users u WHERE u.id = user_role.user_id
$$;
COMMENT ON FUNCTION auth.user_role(uuid) IS 'The role a user''s access tokens carry: pgcloud_admin for administrators, else pgcloud_user.';

CREATE FUNCTION auth.start_session(user_id uuid, method text, details jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sid uuid := gen_random_uuid();
    ttl integer := pgcloud.policy('auth.access_token_ttl_seconds', NULL::int);
    refresh text;
BEGIN
    INSERT INTO auth.sessions (id, user_id, method, expires_at)
    VALUES (sid, start_session.user_id, method,
            now() + make_interval(secs => pgcloud.policy('auth.refresh_token_ttl_seconds', NULL::int)));
    refresh := auth.new_refresh_token(sid, start_session.user_id, 1);
    UPDATE auth.users u SET last_sign_in_at = now() WHERE u.id = start_session.user_id;
    PERFORM pgcloud.emit('user.signed_in', 'user', start_session.user_id::text,
        jsonb_build_object('user_id', start_session.user_id, 'session_id', sid, 'method', method,
                           'signed_in_at', now()) || coalesce(details, '{}'::jsonb));
    PERFORM pgcloud.audit('user.sign_in', 'user', start_session.user_id::text, 'ok',
        jsonb_build_object('session_id', sid, 'method', method) || coalesce(details, '{}'::jsonb));
    RETURN jsonb_build_object(
        'access_token', auth.issue_access_token(start_session.user_id, auth.user_role(start_session.user_id),
                                                sid, '{}'::text[], ttl),
        'token_type', 'Bearer',
        'expires_in', ttl,
        'refresh_token', refresh);
END
$$;
COMMENT ON FUNCTION auth.start_session(uuid, text, jsonb) IS 'Starts a session for a signed-in user (emits user.signed_in, audits user.sign_in) and returns {access_token, token_type, expires_in, refresh_token}.';

CREATE FUNCTION auth.revoke_session(session_id uuid, reason text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    s auth.sessions;
    until timestamptz := now() + make_interval(secs => auth.max_token_lifetime());
BEGIN
    UPDATE auth.sessions x SET revoked_at = now(), revoked_reason = reason
     WHERE x.id = revoke_session.session_id AND x.revoked_at IS NULL
    RETURNING x.* INTO s;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE auth.refresh_tokens r SET revoked_at = now()
     WHERE r.session_id = revoke_session.session_id AND r.revoked_at IS NULL;
    PERFORM pgcloud.revoke_session(revoke_session.session_id, until);
    PERFORM pgcloud.emit('session.revoked', 'session', revoke_session.session_id::text, jsonb_build_object(
        'session_id', s.id, 'user_id', s.user_id, 'service_account_id', s.service_account_id,
        'reason', reason, 'revoked_at', s.revoked_at, 'tokens_valid_until', until));
    PERFORM pgcloud.audit('session.revoke', 'session', revoke_session.session_id::text,
        CASE WHEN reason = 'refresh_token_reuse' THEN 'denied' ELSE 'ok' END,
        jsonb_build_object('reason', reason, 'user_id', s.user_id, 'service_account_id', s.service_account_id));
    RETURN true;
END
$$;
COMMENT ON FUNCTION auth.revoke_session(uuid, text) IS 'Revokes a session and every refresh token of it, tells pgcloud.pre_request() to refuse its access tokens, emits session.revoked and audits session.revoke. False when it was already revoked.';

CREATE FUNCTION auth.prune() RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    nonces bigint;
    tokens bigint;
BEGIN
    DELETE FROM auth.oidc_nonces WHERE expires_at <= now();
    GET DIAGNOSTICS nonces = ROW_COUNT;
    DELETE FROM auth.refresh_tokens WHERE expires_at <= now() - interval '1 day';
    GET DIAGNOSTICS tokens = ROW_COUNT;
    RETURN jsonb_build_object('nonces', nonces, 'refresh_tokens', tokens);
END
$$;
COMMENT ON FUNCTION auth.prune() IS 'The auth expiry job (auth.prune, every core.prune_interval_seconds): deletes used nonces of expired ID tokens and refresh tokens expired for a day; returns the counts. Sessions are kept as history; revocations are pruned by core.prune_revoked_sessions in every database.';
SELECT pgcloud.register_job('auth.prune', 'auth.prune()', 'core.prune_interval_seconds', 's',
    'Deletes used OpenID Connect nonces of expired ID tokens and refresh tokens expired for a day.');

-- source: sql/auth/40_api.sql
-- The public API of auth. Sign-in functions return credentials, so they are
-- not wrapped in pgcloud.idempotent(): a stored replay response would be a
-- stored secret. They are safe to retry in their own way (a retried token
-- exchange or dev login starts another session; a refresh token is used
-- once by design).

-- api.jwks ---------------------------------------------------------------------

CREATE FUNCTION api.jwks() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN auth.published_jwks();
END
$$;
COMMENT ON FUNCTION api.jwks() IS 'The platform''s public token signing keys as a JSON Web Key Set (RFC 7517): the key that signs now, keys about to sign, and retired keys until their tokens have expired. PostgREST verifies access tokens with it (jwt-secret). Anyone may call it.';

-- api.token_exchange -------------------------------------------------------------

CREATE FUNCTION auth.token_exchange_apply(id_token text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    peek jsonb;
    iss text;
    p auth.oidc_providers;
    claims jsonb;
    skew integer := pgcloud.policy('auth.clock_skew_seconds', NULL::int);
    sent_nonce text := pgcloud.header('x-oidc-nonce');
    nonce text;
    inserted integer;
    email text;
    user_id uuid;
BEGIN
    IF id_token IS NULL OR id_token = '' THEN
        PERFORM pgcloud.raise('invalid_token', 'id_token is required');
    END IF;
    peek := auth.jwt_decode(id_token);
    iss := peek #>> '{claims,iss}';
    IF iss IS NULL OR jsonb_typeof(peek #> '{claims,iss}') <> 'string' THEN
        PERFORM pgcloud.raise('invalid_token', 'the ID token has no issuer (iss)');
    END IF;
    SELECT * INTO p FROM auth.oidc_providers o WHERE o.issuer = iss;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('invalid_token', 'the ID token''s issuer is not a registered identity provider');
    END IF;
    claims := auth.jwt_verify(id_token, p.jwks, jsonb_build_object(
        'iss', p.issuer, 'aud', p.audience,
        'algs', pgcloud.policy('auth.oidc_algorithms', NULL::jsonb),
        'leeway', skew, 'require', jsonb_build_array('exp', 'iat', 'sub')));
    -- OIDC Core 3.1.3.7: with several audiences, azp names the client.
    IF jsonb_typeof(claims -> 'aud') = 'array' AND jsonb_array_length(claims -> 'aud') > 1
       AND (claims ->> 'azp') IS DISTINCT FROM p.audience THEN
        PERFORM pgcloud.raise('invalid_token', 'the ID token has several audiences and its azp is not this client');
    END IF;
    IF length(claims ->> 'sub') > 255 THEN
        PERFORM pgcloud.raise('invalid_token', 'the ID token''s subject is longer than 255 characters');
    END IF;
    -- The nonce: one exchange per ID token that has one, and equal to the one
    -- the client sent (X-OIDC-Nonce) when it sends one.
    IF claims ? 'nonce' THEN
        nonce := claims ->> 'nonce';
        IF jsonb_typeof(claims -> 'nonce') <> 'string' OR length(nonce) NOT BETWEEN 1 AND 255 THEN
            PERFORM pgcloud.raise('invalid_token', 'the ID token''s nonce is not a string of 1 to 255 characters');
        END IF;
        IF sent_nonce IS NOT NULL AND sent_nonce <> nonce THEN
            PERFORM pgcloud.raise('invalid_token', 'the ID token''s nonce is not the one this client sent');
        END IF;
        INSERT INTO auth.oidc_nonces (issuer, nonce_hash, expires_at)
        VALUES (p.issuer, auth.secret_hash(nonce),
                to_timestamp((claims ->> 'exp')::float8) + make_interval(secs => skew))
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        IF inserted = 0 THEN
            PERFORM pgcloud.raise('invalid_token', 'the ID token''s nonce was already used: an ID token is exchanged once');
        END IF;
    ELSIF sent_nonce IS NOT NULL THEN
        PERFORM pgcloud.raise('invalid_token', 'the client sent a nonce but the ID token has none');
    END IF;

    IF jsonb_typeof(claims -> 'email') = 'string' THEN
        email := lower(claims ->> 'email');
        IF length(email) > 254 OR email !~ '^[^@[:space:]]+@[^@[:space:]]+$' THEN
            email := NULL;
        END IF;
    END IF;
    user_id := auth.sign_in_identity(p.issuer, claims ->> 'sub', email,
        coalesce(claims -> 'email_verified' IN ('true'::jsonb, '"true"'::jsonb), false),
        CASE WHEN jsonb_typeof(claims -> 'name') = 'string' THEN claims ->> 'name' END);
    RETURN auth.start_session(user_id, 'oidc', jsonb_build_object('issuer', p.issuer));
END
$$;
COMMENT ON FUNCTION auth.token_exchange_apply(text) IS 'Internal to api.token_exchange().';

CREATE FUNCTION api.token_exchange(id_token text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN auth.token_exchange_apply(id_token);
END
$$;
COMMENT ON FUNCTION api.token_exchange(text) IS 'Signs in with an OpenID Connect ID token: verifies it against its registered provider (issuer, audience, JWKS signature with RS256/ES256/EdDSA, exp/nbf/iat with policy leeway, nonce used once and equal to the X-OIDC-Nonce header when sent), creates or finds the user and identity, and returns {access_token, refresh_token, expires_in, token_type}. Errors: invalid_token, token_expired, token_not_yet_valid (401), email_not_verified (403), account_conflict (409).';

-- api.refresh_token ----------------------------------------------------------------

CREATE FUNCTION auth.refresh_apply(refresh_token text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    t auth.refresh_tokens;
    s auth.sessions;
    ttl integer := pgcloud.policy('auth.access_token_ttl_seconds', NULL::int);
    next_token text;
BEGIN
    IF refresh_token IS NULL OR refresh_token !~ '^pgrt_[A-Za-z0-9_-]{43}$' THEN
        PERFORM pgcloud.raise('invalid_refresh_token', 'this is not a refresh token issued by this service');
    END IF;
    SELECT * INTO t FROM auth.refresh_tokens r WHERE r.token_hash = auth.secret_hash(refresh_token) FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('invalid_refresh_token', 'the refresh token is unknown');
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.id = t.session_id FOR UPDATE;
    IF s.revoked_at IS NOT NULL THEN
        PERFORM pgcloud.raise('invalid_refresh_token', 'the session of this refresh token has been revoked', 'Sign in again.');
    END IF;
    IF t.used_at IS NOT NULL AND t.successor_sealed IS NOT NULL
       AND clock_timestamp() < t.used_at + make_interval(secs => pgcloud.policy('auth.refresh_reuse_interval_seconds', NULL::int)) THEN
        -- Two tabs refreshing at once: within the reuse interval the same
        -- token gets the same successor (and a fresh access token).
        next_token := convert_from(pgcloud.unseal(t.successor_sealed, 'auth.refresh_successor'), 'UTF8');
        PERFORM pgcloud.audit('session.refresh_token_reused_in_interval', 'session', s.id::text, 'ok',
            jsonb_build_object('user_id', s.user_id, 'generation', t.generation, 'used_at', t.used_at));
        RETURN jsonb_build_object(
            'access_token', auth.issue_access_token(s.user_id, auth.user_role(s.user_id), s.id, '{}'::text[], ttl),
            'token_type', 'Bearer',
            'expires_in', ttl,
            'refresh_token', next_token);
    END IF;
    IF t.used_at IS NOT NULL THEN
        -- Reuse of a rotated token: someone else may hold the family. Revoke
        -- it all, audit, and answer 401 without rolling that back.
        PERFORM pgcloud.audit('session.refresh_token_reused', 'session', s.id::text, 'denied',
            jsonb_build_object('user_id', s.user_id, 'generation', t.generation, 'used_at', t.used_at));
        PERFORM auth.revoke_session(s.id, 'refresh_token_reuse');
        RETURN auth.error_response('refresh_token_reused',
            'this refresh token had already been exchanged; every token of its session has been revoked');
    END IF;
    IF t.expires_at <= now() OR s.expires_at <= now() THEN
        PERFORM pgcloud.raise('invalid_refresh_token', 'the refresh token has expired', 'Sign in again.');
    END IF;
    next_token := auth.new_refresh_token(s.id, s.user_id, t.generation + 1);
    UPDATE auth.refresh_tokens r
       SET used_at = clock_timestamp(),
           successor_sealed = pgcloud.seal(convert_to(next_token, 'UTF8'), 'auth.refresh_successor')
     WHERE r.id = t.id;
    -- Sealed successors are kept only for the reuse interval.
    UPDATE auth.refresh_tokens r SET successor_sealed = NULL
     WHERE r.session_id = s.id AND r.successor_sealed IS NOT NULL
       AND r.used_at < clock_timestamp() - make_interval(secs => pgcloud.policy('auth.refresh_reuse_interval_seconds', NULL::int));
    UPDATE auth.sessions x
       SET expires_at = now() + make_interval(secs => pgcloud.policy('auth.refresh_token_ttl_seconds', NULL::int))
     WHERE x.id = s.id;
    UPDATE auth.users u SET last_sign_in_at = now() WHERE u.id = s.user_id;
    RETURN jsonb_build_object(
        'access_token', auth.issue_access_token(s.user_id, auth.user_role(s.user_id), s.id, '{}'::text[], ttl),
        'token_type', 'Bearer',
        'expires_in', ttl,
        'refresh_token', next_token);
END
$$;
COMMENT ON FUNCTION auth.refresh_apply(text) IS 'Internal to api.refresh_token().';

CREATE FUNCTION api.refresh_token(refresh_token text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN auth.refresh_apply(refresh_token);
END
$$;
COMMENT ON FUNCTION api.refresh_token(text) IS 'Exchanges a refresh token for a new access token and a new refresh token (the old one is spent). Within auth.refresh_reuse_interval_seconds (default 10) of its exchange the same token returns the same successor again (two tabs refreshing at once). After that, using a spent refresh token again revokes its whole session and is audited: the call answers refresh_token_reused (401) and the revocation stays. Other errors: invalid_refresh_token (401).';

-- api.dev_login -------------------------------------------------------------------

CREATE FUNCTION auth.dev_login_apply(email text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    addr text := lower(btrim(email));
    user_id uuid;
BEGIN
    IF NOT coalesce(pgcloud.policy('auth.dev_login_enabled', NULL::boolean), false) THEN
        PERFORM pgcloud.raise('dev_login_disabled',
            'development login is turned off (policy auth.dev_login_enabled is false); sign in with an identity provider',
            'For a development system only, an administrator can run: SELECT pgcloud.set_policy(''auth.dev_login_enabled'', ''true'');');
    END IF;
    IF addr IS NULL OR length(addr) > 254 OR addr !~ '^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'email must be an e-mail address such as alice@example.com');
    END IF;
    user_id := auth.sign_in_identity('pgcloud:dev', addr, addr, true, NULL);
    RETURN auth.start_session(user_id, 'dev', '{}'::jsonb);
END
$$;
COMMENT ON FUNCTION auth.dev_login_apply(text) IS 'Internal to api.dev_login().';

CREATE FUNCTION api.dev_login(email text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN auth.dev_login_apply(email);
END
$$;
COMMENT ON FUNCTION api.dev_login(text) IS 'Development only: signs in as the user with this e-mail address (created if new) without an identity provider, and returns {access_token, refresh_token, expires_in, token_type}. Off by default: while policy auth.dev_login_enabled is false it answers dev_login_disabled (403).';

-- api.logout --------------------------------------------------------------------

CREATE FUNCTION auth.logout_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sid text := args ->> 'session_id';
    s auth.sessions;
BEGIN
    PERFORM pgcloud.authorize('user');
    IF sid IS NULL OR sid !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        PERFORM pgcloud.raise('invalid_token', 'the access token carries no session id (sid)');
    END IF;
    SELECT * INTO s FROM auth.sessions x WHERE x.id = sid::uuid;
    IF NOT FOUND OR s.user_id IS DISTINCT FROM pgcloud.user_id() THEN
        PERFORM pgcloud.raise('not_found', 'the session of this access token does not exist');
    END IF;
    PERFORM auth.revoke_session(s.id, 'logout');
    SELECT * INTO s FROM auth.sessions x WHERE x.id = s.id;
    RETURN jsonb_build_object('session_id', s.id, 'revoked', true, 'revoked_at', s.revoked_at);
END
$$;
COMMENT ON FUNCTION auth.logout_apply(jsonb) IS 'Internal to api.logout(): revokes {session_id} when it is the caller''s.';

CREATE FUNCTION api.logout() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('auth.logout', jsonb_build_object('session_id', pgcloud.claims() ->> 'sid'),
                              'auth.logout_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.logout() IS 'Signs out: revokes the session of the calling access token (its sid claim) and its refresh tokens; pgcloud.pre_request() then refuses the session''s access tokens (session_revoked, 401). Emits session.revoked. Returns {session_id, revoked, revoked_at}.';

-- api.me --------------------------------------------------------------------------

CREATE FUNCTION api.me() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    result jsonb;
BEGIN
    PERFORM pgcloud.authorize('user');
    SELECT jsonb_build_object(
               'id', u.id,
               'email', u.email,
               'email_verified', u.email_verified,
               'display_name', u.display_name,
               'role', pgcloud.request_role(),
               'is_admin', u.is_admin,
               'session_id', pgcloud.claims() ->> 'sid',
               'posix', jsonb_build_object('username', p.username, 'uid', p.uid, 'gid', p.gid),
               'identities', coalesce((SELECT jsonb_agg(jsonb_build_object('issuer', i.issuer, 'subject', i.subject,
                                                                           'last_sign_in_at', i.last_sign_in_at)
                                                        ORDER BY i.created_at)
                                         FROM auth.identities i WHERE i.user_id = u.id), '[]'::jsonb),
               'created_at', u.created_at,
               'last_sign_in_at', u.last_sign_in_at)
      INTO result
      FROM auth.users u LEFT JOIN auth.posix_identities p ON p.user_id = u.id
     WHERE u.id = pgcloud.user_id();
    IF result IS NULL THEN
        PERFORM pgcloud.raise('not_found', 'no user is signed in with this token');
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION api.me() IS 'The signed-in user: id, email, display name, role, POSIX identity (username, uid, gid), identities, session id and times.';

-- api.admin_upsert_oidc_provider ----------------------------------------------------

CREATE FUNCTION auth.upsert_oidc_provider_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    iss text := args ->> 'issuer';
    aud text := args ->> 'audience';
    keys jsonb;
    prior auth.oidc_providers;
    p auth.oidc_providers;
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF iss IS NULL OR length(iss) > 512 OR iss !~ '^https?://[^[:space:]]+$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'issuer must be the provider''s issuer URL (http(s)://..., at most 512 characters)');
    END IF;
    IF aud IS NULL OR length(aud) NOT BETWEEN 1 AND 512 THEN
        PERFORM pgcloud.raise('invalid_argument', 'audience must be our client id at the provider (1 to 512 characters)');
    END IF;
    IF args -> 'jwks' IS NULL OR jsonb_typeof(args -> 'jwks') = 'null' THEN
        PERFORM pgcloud.raise('invalid_jwks', 'jwks is required');
    END IF;
    keys := auth.jwks_validate(args -> 'jwks');
    SELECT * INTO prior FROM auth.oidc_providers o WHERE o.issuer = iss FOR UPDATE;
    INSERT INTO auth.oidc_providers AS o (issuer, audience, jwks) VALUES (iss, aud, keys)
    ON CONFLICT (issuer) DO UPDATE SET audience = excluded.audience, jwks = excluded.jwks, updated_at = now()
    RETURNING o.* INTO p;
    PERFORM pgcloud.audit(CASE WHEN prior.id IS NULL THEN 'oidc_provider.create' ELSE 'oidc_provider.update' END,
        'oidc_provider', p.id::text, 'ok', jsonb_build_object(
            'issuer', iss, 'audience', aud,
            'kids', (SELECT jsonb_agg(k -> 'kid') FROM jsonb_array_elements(keys -> 'keys') k),
            'previous_kids', (SELECT jsonb_agg(k -> 'kid') FROM jsonb_array_elements(prior.jwks -> 'keys') k)));
    RETURN jsonb_build_object('id', p.id, 'issuer', p.issuer, 'audience', p.audience, 'created', prior.id IS NULL,
                              'keys', jsonb_array_length(keys -> 'keys'),
                              'kids', (SELECT coalesce(jsonb_agg(k -> 'kid'), '[]'::jsonb)
                                         FROM jsonb_array_elements(keys -> 'keys') k));
END
$$;
COMMENT ON FUNCTION auth.upsert_oidc_provider_apply(jsonb) IS 'Internal to api.admin_upsert_oidc_provider().';

CREATE FUNCTION api.admin_upsert_oidc_provider(issuer text, audience text, jwks jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('auth.upsert_oidc_provider',
        jsonb_build_object('issuer', issuer, 'audience', audience, 'jwks', jwks),
        'auth.upsert_oidc_provider_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_upsert_oidc_provider(text, text, jsonb) IS 'Administrators: registers an OpenID Connect provider (issuer URL, our client id as audience, its JWKS of public signing keys) or replaces its audience and keys (key rotation). Audited as oidc_provider.create / oidc_provider.update. Returns {id, issuer, audience, created, keys, kids}. Errors: invalid_argument, invalid_jwks (400).';

-- Service accounts ------------------------------------------------------------------

CREATE FUNCTION auth.create_service_account_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sa_name text := args ->> 'name';
    sa_scopes text[];
    bad text;
    sa auth.service_accounts;
    secret text := auth.random_token('pgcs_', 32);
    inserted integer;
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF sa_name IS NULL OR sa_name !~ '^[a-z][a-z0-9_.-]{2,62}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'name must be 3 to 63 characters of [a-z0-9_.-], starting with a letter');
    END IF;
    IF args -> 'scopes' IS NULL OR jsonb_typeof(args -> 'scopes') <> 'array' THEN
        PERFORM pgcloud.raise('invalid_argument', 'scopes must be an array of scopes (it may be empty)');
    END IF;
    SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}'::text[]) INTO sa_scopes
      FROM jsonb_array_elements_text(args -> 'scopes') s;
    IF cardinality(sa_scopes) > 64 THEN
        PERFORM pgcloud.raise('invalid_argument', 'a service account has at most 64 scopes');
    END IF;
    SELECT s INTO bad FROM unnest(sa_scopes) s WHERE NOT pgcloud.valid_scope(s) LIMIT 1;
    IF bad IS NOT NULL THEN
        PERFORM pgcloud.raise('invalid_argument',
            format('scope "%s" is not valid: use [tenant:<t>/[project:<p>/]]<name>, e.g. allocations:read', left(bad, 80)));
    END IF;
    sa := (gen_random_uuid(), sa_name, auth.random_token('sa_', 16), auth.secret_hash(secret), sa_scopes,
           pgcloud.user_id(), now(), NULL);
    INSERT INTO auth.service_accounts (id, name, client_id, secret_hash, scopes, created_by, created_at)
    VALUES (sa.id, sa.name, sa.client_id, sa.secret_hash, sa.scopes, sa.created_by, sa.created_at)
    ON CONFLICT (name) DO NOTHING;
    GET DIAGNOSTICS inserted = ROW_COUNT;
    IF inserted = 0 THEN
        PERFORM pgcloud.raise('conflict', format('a service account named "%s" exists', sa_name));
    END IF;
    PERFORM pgcloud.emit('service_account.created', 'service_account', sa.id::text, jsonb_build_object(
        'service_account_id', sa.id, 'name', sa.name, 'client_id', sa.client_id, 'scopes', to_jsonb(sa.scopes),
        'created_by', sa.created_by, 'created_at', sa.created_at));
    PERFORM pgcloud.audit('service_account.create', 'service_account', sa.id::text, 'ok',
        jsonb_build_object('name', sa.name, 'client_id', sa.client_id, 'scopes', to_jsonb(sa.scopes)));
    RETURN jsonb_build_object('id', sa.id, 'name', sa.name, 'client_id', sa.client_id, 'client_secret', secret,
                              'scopes', to_jsonb(sa.scopes), 'created_at', sa.created_at);
END
$$;
COMMENT ON FUNCTION auth.create_service_account_apply(jsonb) IS 'Internal to api.admin_create_service_account().';

CREATE FUNCTION api.admin_create_service_account(name text, scopes text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    -- Not replayable through pgcloud.idempotent(): the response holds the
    -- secret, which must not be stored. Names are unique, so a retry cannot
    -- create a second account (it answers conflict, 409).
    RETURN auth.create_service_account_apply(jsonb_build_object('name', name, 'scopes', to_jsonb(scopes)));
END
$$;
COMMENT ON FUNCTION api.admin_create_service_account(text, text[]) IS 'Administrators: creates a service account with scopes (e.g. {allocations:read, tenant:acme/inventory:write}) and returns {id, name, client_id, client_secret, scopes, created_at}. The secret is shown this once and stored only hashed. Emits service_account.created; audited. A name already in use answers conflict (409).';

CREATE FUNCTION auth.service_token_apply(client_id text, client_secret text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sa auth.service_accounts;
    ok boolean;
    sid uuid := gen_random_uuid();
    ttl integer := pgcloud.policy('auth.service_token_ttl_seconds', NULL::int);
BEGIN
    IF client_id IS NULL OR client_secret IS NULL OR length(client_id) > 64 OR length(client_secret) > 128 THEN
        PERFORM pgcloud.raise('invalid_client', 'client_id and client_secret are required');
    END IF;
    SELECT * INTO sa FROM auth.service_accounts s WHERE s.client_id = service_token_apply.client_id;
    -- Compare against a dummy hash when the id is unknown: same work either way.
    ok := auth.secret_matches(client_secret, coalesce(sa.secret_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea))
          AND sa.id IS NOT NULL AND sa.disabled_at IS NULL;
    IF NOT ok THEN
        PERFORM pgcloud.raise('invalid_client', 'the client id or the client secret is wrong, or the account is disabled');
    END IF;
    INSERT INTO auth.sessions (id, service_account_id, method, expires_at)
    VALUES (sid, sa.id, 'service', now() + make_interval(secs => ttl));
    RETURN jsonb_build_object(
        'access_token', auth.issue_access_token(sa.id, 'pgcloud_service', sid, sa.scopes, ttl),
        'token_type', 'Bearer',
        'expires_in', ttl,
        'scopes', to_jsonb(sa.scopes));
END
$$;
COMMENT ON FUNCTION auth.service_token_apply(text, text) IS 'Internal to api.service_token().';

CREATE FUNCTION api.service_token(client_id text, client_secret text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN auth.service_token_apply(client_id, client_secret);
END
$$;
COMMENT ON FUNCTION api.service_token(text, text) IS 'Machine clients (client credentials): exchanges a service account''s client id and secret for an access token with role pgcloud_service, sub = the account id and its scopes. Returns {access_token, token_type, expires_in, scopes}; no refresh token (ask again). Errors: invalid_client (401).';

-- Administration ----------------------------------------------------------------------

CREATE FUNCTION auth.set_user_admin_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    target uuid;
    flag boolean;
    was boolean;
BEGIN
    PERFORM pgcloud.authorize('admin');
    BEGIN
        target := (args ->> 'user_id')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM pgcloud.raise('invalid_argument', 'user_id must be a uuid');
    END;
    IF target IS NULL OR jsonb_typeof(args -> 'is_admin') IS DISTINCT FROM 'boolean' THEN
        PERFORM pgcloud.raise('invalid_argument', 'user_id and is_admin are required');
    END IF;
    flag := (args ->> 'is_admin')::boolean;
    SELECT u.is_admin INTO was FROM auth.users u WHERE u.id = target FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('not_found', 'no such user');
    END IF;
    UPDATE auth.users u SET is_admin = flag WHERE u.id = target;
    PERFORM pgcloud.audit('user.set_admin', 'user', target::text, 'ok',
                          jsonb_build_object('is_admin', flag, 'was_admin', was));
    RETURN jsonb_build_object('user_id', target, 'is_admin', flag, 'was_admin', was);
END
$$;
COMMENT ON FUNCTION auth.set_user_admin_apply(jsonb) IS 'Internal to api.admin_set_user_admin().';

CREATE FUNCTION api.admin_set_user_admin(user_id uuid, is_admin boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('auth.set_user_admin',
        jsonb_build_object('user_id', user_id, 'is_admin', is_admin), 'auth.set_user_admin_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_set_user_admin(uuid, boolean) IS 'Administrators (and the operator at psql, to make the first one): makes a user an administrator or not. Takes effect at the user''s next sign-in or refresh (role pgcloud_admin). Audited as user.set_admin. Returns {user_id, is_admin, was_admin}.';

CREATE FUNCTION auth.rotate_signing_key_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    lead_seconds integer;
    k auth.signing_keys;
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF args -> 'activate_after_seconds' IS NULL OR jsonb_typeof(args -> 'activate_after_seconds') = 'null' THEN
        lead_seconds := pgcloud.policy('auth.signing_key_lead_seconds', NULL::int);
    ELSIF jsonb_typeof(args -> 'activate_after_seconds') = 'number' THEN
        lead_seconds := (args ->> 'activate_after_seconds')::int;
    ELSE
        PERFORM pgcloud.raise('invalid_argument', 'activate_after_seconds must be a number of seconds');
    END IF;
    k := auth.create_signing_key(lead_seconds);
    PERFORM pgcloud.audit('signing_key.rotate', 'signing_key', k.kid, 'ok',
                          jsonb_build_object('alg', k.alg, 'activates_at', k.activates_at));
    RETURN jsonb_build_object('kid', k.kid, 'alg', k.alg, 'activates_at', k.activates_at, 'jwks', auth.published_jwks());
END
$$;
COMMENT ON FUNCTION auth.rotate_signing_key_apply(jsonb) IS 'Internal to api.admin_rotate_signing_key().';

CREATE FUNCTION api.admin_rotate_signing_key(activate_after_seconds integer DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('auth.rotate_signing_key',
        jsonb_build_object('activate_after_seconds', activate_after_seconds), 'auth.rotate_signing_key_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_rotate_signing_key(integer) IS 'Administrators: generates a new platform signing key (kid = RFC 7638 thumbprint). It is published in api.jwks() at once and signs after activate_after_seconds (default policy auth.signing_key_lead_seconds), leaving time to refresh PostgREST''s JWKS; the old key stays published until its tokens have expired. Audited as signing_key.rotate. Returns {kid, alg, activates_at, jwks}.';

-- source: sql/auth/90_privileges.sql
-- Who may call what. service_end() revokes PUBLIC execute on every routine
-- of the extension; these grants are the whole surface of auth.

-- Anonymous callers get exactly the sign-in functions and the public keys.
GRANT EXECUTE ON FUNCTION api.jwks() TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION api.token_exchange(text), api.dev_login(text), api.refresh_token(text)
    TO pgcloud_anon, pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_token(text, text) TO pgcloud_anon, pgcloud_service;

-- Signed-in users (administrators are users too).
GRANT EXECUTE ON FUNCTION api.me(), api.logout() TO pgcloud_user, pgcloud_admin;

-- Administrators.
GRANT EXECUTE ON FUNCTION api.admin_upsert_oidc_provider(text, text, jsonb),
    api.admin_create_service_account(text, text[]), api.admin_set_user_admin(uuid, boolean),
    api.admin_rotate_signing_key(integer)
    TO pgcloud_admin;

SELECT pgcloud.service_end('auth');
