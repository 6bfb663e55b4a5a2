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
