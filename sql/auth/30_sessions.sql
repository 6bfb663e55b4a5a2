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
