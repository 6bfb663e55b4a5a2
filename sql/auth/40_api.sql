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
SELECT pgcloud.expose('api.jwks()', 'anon', 'user', 'admin', 'service');

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
SELECT pgcloud.expose('api.token_exchange(text)', 'anon', 'user', 'admin');

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
SELECT pgcloud.expose('api.refresh_token(text)', 'anon', 'user', 'admin');

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
SELECT pgcloud.expose('api.dev_login(text)', 'anon', 'user', 'admin');

-- api.logout --------------------------------------------------------------------

CREATE FUNCTION auth.logout_apply(p_session_id text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sid text := p_session_id;
    s auth.sessions;
BEGIN
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
COMMENT ON FUNCTION auth.logout_apply(text) IS 'Internal to api.logout() (which authorizes): revokes the session when it is the caller''s.';

CREATE FUNCTION api.logout() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('auth.logout', jsonb_build_object('session_id', pgcloud.claims() ->> 'sid')),
                    pgcloud.idempotent_done('auth.logout', auth.logout_apply(pgcloud.claims() ->> 'sid')));
END
$$;
COMMENT ON FUNCTION api.logout() IS 'Signs out: revokes the session of the calling access token (its sid claim) and its refresh tokens; pgcloud.pre_request() then refuses the session''s access tokens (session_revoked, 401). Emits session.revoked. Returns {session_id, revoked, revoked_at}.';
SELECT pgcloud.expose('api.logout()', 'user', 'admin');

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
SELECT pgcloud.expose('api.me()', 'user', 'admin');

-- api.admin_upsert_oidc_provider ----------------------------------------------------

CREATE FUNCTION auth.upsert_oidc_provider_apply(p_issuer text, p_audience text, p_jwks jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    iss text := p_issuer;
    aud text := p_audience;
    keys jsonb;
    prior auth.oidc_providers;
    p auth.oidc_providers;
BEGIN
    IF iss IS NULL OR length(iss) > 512 OR iss !~ '^https?://[^[:space:]]+$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'issuer must be the provider''s issuer URL (http(s)://..., at most 512 characters)');
    END IF;
    IF aud IS NULL OR length(aud) NOT BETWEEN 1 AND 512 THEN
        PERFORM pgcloud.raise('invalid_argument', 'audience must be our client id at the provider (1 to 512 characters)');
    END IF;
    IF p_jwks IS NULL OR jsonb_typeof(p_jwks) = 'null' THEN
        PERFORM pgcloud.raise('invalid_jwks', 'jwks is required');
    END IF;
    keys := auth.jwks_validate(p_jwks);
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
COMMENT ON FUNCTION auth.upsert_oidc_provider_apply(text, text, jsonb) IS 'Internal to api.admin_upsert_oidc_provider() (which authorizes): validates and stores the provider''s issuer, audience and JWKS; audited.';

CREATE FUNCTION api.admin_upsert_oidc_provider(issuer text, audience text, jwks jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('auth.upsert_oidc_provider',
                           jsonb_build_object('issuer', issuer, 'audience', audience, 'jwks', jwks)),
        pgcloud.idempotent_done('auth.upsert_oidc_provider', auth.upsert_oidc_provider_apply(issuer, audience, jwks)));
END
$$;
COMMENT ON FUNCTION api.admin_upsert_oidc_provider(text, text, jsonb) IS 'Administrators: registers an OpenID Connect provider (issuer URL, our client id as audience, its JWKS of public signing keys) or replaces its audience and keys (key rotation). Audited as oidc_provider.create / oidc_provider.update. Returns {id, issuer, audience, created, keys, kids}. Errors: invalid_argument, invalid_jwks (400).';
SELECT pgcloud.expose('api.admin_upsert_oidc_provider(text, text, jsonb)', 'admin');

-- Service accounts ------------------------------------------------------------------

CREATE FUNCTION auth.create_service_account_apply(p_name text, p_scopes text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    sa_name text := p_name;
    sa_scopes text[];
    bad text;
    sa auth.service_accounts;
    secret text := auth.random_token('pgcs_', 32);
    inserted integer;
BEGIN
    IF sa_name IS NULL OR sa_name !~ '^[a-z][a-z0-9_.-]{2,62}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'name must be 3 to 63 characters of [a-z0-9_.-], starting with a letter');
    END IF;
    IF p_scopes IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'scopes must be an array of scopes (it may be empty)');
    END IF;
    SELECT coalesce(array_agg(DISTINCT s ORDER BY s), '{}'::text[]) INTO sa_scopes
      FROM unnest(p_scopes) s;
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
COMMENT ON FUNCTION auth.create_service_account_apply(text, text[]) IS 'Internal to api.admin_create_service_account() (which authorizes): creates the account with its scopes and returns its secret once.';

CREATE FUNCTION api.admin_create_service_account(name text, scopes text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    -- Not replayable through pgcloud.idempotent(): the response holds the
    -- secret, which must not be stored. Names are unique, so a retry cannot
    -- create a second account (it answers conflict, 409).
    RETURN auth.create_service_account_apply(name, scopes);
END
$$;
COMMENT ON FUNCTION api.admin_create_service_account(text, text[]) IS 'Administrators: creates a service account with scopes (e.g. {allocations:read, tenant:acme/inventory:write}) and returns {id, name, client_id, client_secret, scopes, created_at}. The secret is shown this once and stored only hashed. Emits service_account.created; audited. A name already in use answers conflict (409).';
SELECT pgcloud.expose('api.admin_create_service_account(text, text[])', 'admin');

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
SELECT pgcloud.expose('api.service_token(text, text)', 'anon', 'service');

-- Administration ----------------------------------------------------------------------

CREATE FUNCTION auth.set_user_admin_apply(p_user_id uuid, p_is_admin boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    target uuid := p_user_id;
    flag boolean := p_is_admin;
    was boolean;
BEGIN
    IF target IS NULL OR flag IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'user_id and is_admin are required');
    END IF;
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
COMMENT ON FUNCTION auth.set_user_admin_apply(uuid, boolean) IS 'Internal to api.admin_set_user_admin() (which authorizes): sets the user''s is_admin flag; audited as user.set_admin.';

CREATE FUNCTION api.admin_set_user_admin(user_id uuid, is_admin boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('auth.set_user_admin', jsonb_build_object('user_id', user_id, 'is_admin', is_admin)),
        pgcloud.idempotent_done('auth.set_user_admin', auth.set_user_admin_apply(user_id, is_admin)));
END
$$;
COMMENT ON FUNCTION api.admin_set_user_admin(uuid, boolean) IS 'Administrators (and the operator at psql, to make the first one): makes a user an administrator or not. Takes effect at the user''s next sign-in or refresh (role pgcloud_admin). Audited as user.set_admin. Returns {user_id, is_admin, was_admin}.';
SELECT pgcloud.expose('api.admin_set_user_admin(uuid, boolean)', 'admin');

CREATE FUNCTION auth.rotate_signing_key_apply(p_activate_after_seconds integer) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, auth
AS $$
DECLARE
    lead_seconds integer;
    k auth.signing_keys;
BEGIN
    lead_seconds := coalesce(p_activate_after_seconds, pgcloud.policy('auth.signing_key_lead_seconds', NULL::int));
    k := auth.create_signing_key(lead_seconds);
    PERFORM pgcloud.audit('signing_key.rotate', 'signing_key', k.kid, 'ok',
                          jsonb_build_object('alg', k.alg, 'activates_at', k.activates_at));
    PERFORM auth.announce_keys(k);
    RETURN jsonb_build_object('kid', k.kid, 'alg', k.alg, 'activates_at', k.activates_at, 'jwks', auth.published_jwks());
END
$$;
COMMENT ON FUNCTION auth.rotate_signing_key_apply(integer) IS 'Internal to api.admin_rotate_signing_key() (which authorizes): creates a signing key that signs after the given lead (default auth.signing_key_lead_seconds); audited as signing_key.rotate; announced to every database as signing_key.published.';

CREATE FUNCTION api.admin_rotate_signing_key(activate_after_seconds integer DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, auth
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('auth.rotate_signing_key', jsonb_build_object('activate_after_seconds', activate_after_seconds)),
        pgcloud.idempotent_done('auth.rotate_signing_key', auth.rotate_signing_key_apply(activate_after_seconds)));
END
$$;
COMMENT ON FUNCTION api.admin_rotate_signing_key(integer) IS 'Administrators: generates a new platform signing key (kid = RFC 7638 thumbprint). It is published in api.jwks() at once and signs after activate_after_seconds (default policy auth.signing_key_lead_seconds), leaving time to refresh PostgREST''s JWKS; the old key stays published until its tokens have expired. Audited as signing_key.rotate. Returns {kid, alg, activates_at, jwks}.';
SELECT pgcloud.expose('api.admin_rotate_signing_key(integer)', 'admin');
