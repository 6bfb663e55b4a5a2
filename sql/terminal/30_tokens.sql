-- Mint (users) and redeem (the relay) of terminal tokens.

CREATE FUNCTION terminal.may_open(alloc terminal.allocations, who uuid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
    SELECT alloc.user_id = who
        OR EXISTS (SELECT 1 FROM terminal.app_members m
                    WHERE m.allocation_id = alloc.allocation_id AND m.user_id = who
                      AND m.role IN ('owner', 'editor'))
$$;
COMMENT ON FUNCTION terminal.may_open(terminal.allocations, uuid) IS 'Whether a user may open a terminal to an allocation: its owner, or an owner or editor of an app instance on it.';

CREATE FUNCTION api.mint_terminal_token(allocation_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    v_user uuid;
    v_sid text := pgcloud.claims() ->> 'sid';
    a terminal.allocations;
    ttl integer := pgcloud.policy('terminal.token_ttl_seconds', NULL::integer);
    tok text;
    t terminal.tokens;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.user_id();
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'a terminal token is minted for a signed-in user');
    END IF;
    IF mint_terminal_token.allocation_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'allocation_id is required');
    END IF;
    IF v_sid IS NULL THEN
        PERFORM pgcloud.raise('terminal_no_session', 'the request carries no sid claim',
                              'Sign in; tokens of service accounts cannot open terminals.');
    END IF;
    IF v_sid !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_request_context', 'the sid claim must be a session uuid');
    END IF;
    IF ttl IS NULL OR ttl NOT BETWEEN 5 AND 600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'terminal.token_ttl_seconds must be between 5 and 600');
    END IF;
    IF EXISTS (SELECT 1 FROM terminal.revoked_sessions r WHERE r.session_id = v_sid::uuid) THEN
        PERFORM pgcloud.raise('session_revoked', format('session %s is revoked', v_sid));
    END IF;
    SELECT * INTO a FROM terminal.allocations x WHERE x.allocation_id = mint_terminal_token.allocation_id FOR SHARE;
    -- Someone else's allocation is as unknown as a missing one.
    IF NOT FOUND OR NOT terminal.may_open(a, v_user) THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', mint_terminal_token.allocation_id));
    END IF;
    IF a.state <> 'active' THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is %s', a.allocation_id, a.state),
                              'A terminal opens only while the allocation is active.');
    END IF;
    tok := terminal.random_token('pgt_', 32);
    INSERT INTO terminal.tokens (token_hash, user_id, session_id, allocation_id, expires_at)
    VALUES (terminal.token_hash(tok), v_user, v_sid::uuid, a.allocation_id,
            now() + make_interval(secs => ttl))
    RETURNING * INTO t;
    PERFORM pgcloud.audit('terminal.token_minted', 'allocation', a.allocation_id::text, 'ok',
        jsonb_build_object('token_id', t.id, 'session_id', t.session_id, 'expires_at', t.expires_at));
    PERFORM pgcloud.emit('terminal.token_minted', 'allocation', a.allocation_id::text,
        jsonb_build_object('token_id', t.id, 'allocation_id', a.allocation_id, 'user_id', v_user,
                           'session_id', t.session_id, 'expires_at', t.expires_at));
    RETURN jsonb_build_object('token', tok, 'expires_at', t.expires_at);
END
$$;
COMMENT ON FUNCTION api.mint_terminal_token(uuid) IS 'A single-use token that opens a browser terminal to one of your active allocations (or one you are an app owner or editor on) through the terminal relay: pass it in Sec-WebSocket-Protocol as "pgcloud.token.<token>", never in the URL. Returns {token, expires_at}; lives terminal.token_ttl_seconds and dies with your session and the allocation. Not idempotent: a retry mints another token. Unknown or another user''s allocation: 404 allocation_not_found; not active: 409 allocation_not_active.';
SELECT pgcloud.expose('api.mint_terminal_token(uuid)', 'user', 'admin');

CREATE FUNCTION api.service_redeem_terminal_token(token text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    t terminal.tokens;
    a terminal.allocations;
    uname text;
    v_relay text := left(coalesce(pgcloud.claims() ->> 'relay', pgcloud.claims() ->> 'sub', 'relay'), 100);
    s terminal.sessions;
BEGIN
    PERFORM pgcloud.authorize_service('terminal:redeem');
    IF token IS NULL OR length(token) NOT BETWEEN 20 AND 200 OR token !~ '^pgt_[A-Za-z0-9_-]+$' THEN
        PERFORM pgcloud.raise('terminal_token_invalid', 'not a terminal token');
    END IF;
    -- Row lock: of two redeems at once the second waits, then sees redeemed_at.
    SELECT * INTO t FROM terminal.tokens x WHERE x.token_hash = terminal.token_hash(token) FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('terminal_token_invalid', 'unknown terminal token');
    END IF;
    IF t.redeemed_at IS NOT NULL THEN
        PERFORM pgcloud.raise('terminal_token_used', format('token %s was redeemed at %s', t.id, t.redeemed_at));
    END IF;
    IF t.revoked_at IS NOT NULL THEN
        PERFORM pgcloud.raise('terminal_token_revoked', format('token %s was revoked: %s', t.id, t.revoked_reason));
    END IF;
    IF t.expires_at <= now() THEN
        PERFORM pgcloud.raise('terminal_token_expired', format('token %s expired at %s', t.id, t.expires_at));
    END IF;
    IF EXISTS (SELECT 1 FROM terminal.revoked_sessions r WHERE r.session_id = t.session_id) THEN
        PERFORM pgcloud.raise('session_revoked', format('session %s is revoked', t.session_id));
    END IF;
    SELECT * INTO a FROM terminal.allocations x WHERE x.allocation_id = t.allocation_id FOR SHARE;
    IF NOT FOUND OR a.state <> 'active' THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is not active', t.allocation_id));
    END IF;
    IF NOT terminal.may_open(a, t.user_id) THEN
        PERFORM pgcloud.raise('forbidden', 'the token''s user may no longer open terminals to this allocation');
    END IF;
    SELECT u.posix_username INTO uname FROM terminal.users u WHERE u.user_id = a.user_id;
    IF uname IS NULL THEN
        PERFORM pgcloud.raise('posix_identity_missing', 'no POSIX username is known for the allocation''s owner');
    END IF;
    UPDATE terminal.tokens x SET redeemed_at = now() WHERE x.id = t.id;
    INSERT INTO terminal.sessions (token_id, user_id, session_id, allocation_id, posix_username, relay)
    VALUES (t.id, t.user_id, t.session_id, t.allocation_id, uname, v_relay)
    RETURNING * INTO s;
    PERFORM pgcloud.audit('terminal.token_redeemed', 'allocation', a.allocation_id::text, 'ok',
        jsonb_build_object('token_id', t.id, 'terminal_session_id', s.id, 'user_id', t.user_id,
                           'session_id', t.session_id, 'relay', v_relay, 'posix_username', uname));
    PERFORM pgcloud.emit('terminal.token_redeemed', 'allocation', a.allocation_id::text,
        jsonb_build_object('token_id', t.id, 'terminal_session_id', s.id, 'allocation_id', a.allocation_id,
                           'user_id', t.user_id, 'session_id', t.session_id, 'relay', v_relay));
    RETURN jsonb_build_object('terminal_session_id', s.id, 'allocation_id', a.allocation_id,
                              'user_id', t.user_id, 'owner_id', a.user_id, 'session_id', t.session_id,
                              'posix_username', uname, 'address', coalesce(a.address, a.hostname),
                              'hostname', a.hostname);
END
$$;
COMMENT ON FUNCTION api.service_redeem_terminal_token(token text) IS 'The terminal relay (pgcloud_service with scope terminal:redeem) redeems a terminal token, once: returns {terminal_session_id, allocation_id, user_id, owner_id, session_id, posix_username, address, hostname} and opens a live session. Unknown: 401 terminal_token_invalid; second redeem: 409 terminal_token_used; expired: 401 terminal_token_expired; revoked with its session: 401 session_revoked or terminal_token_revoked; allocation no longer active: 409 allocation_not_active.';
SELECT pgcloud.expose('api.service_redeem_terminal_token(text)', 'service');

CREATE FUNCTION api.service_terminal_refused(token text, code text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    t terminal.tokens;
BEGIN
    PERFORM pgcloud.authorize_service('terminal:redeem');
    IF code IS NULL OR code !~ '^[a-z_]{1,64}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'code must be the catalogued error code of the refusal');
    END IF;
    IF token IS NOT NULL AND length(token) BETWEEN 20 AND 200 AND token ~ '^pgt_[A-Za-z0-9_-]+$' THEN
        SELECT * INTO t FROM terminal.tokens x WHERE x.token_hash = terminal.token_hash(token);
    END IF;
    PERFORM pgcloud.audit('terminal.token_refused', 'allocation', coalesce(t.allocation_id::text, 'unknown'), 'rejected',
        jsonb_build_object('code', code, 'token_id', t.id, 'user_id', t.user_id, 'relay', terminal.relay_name()));
    RETURN jsonb_build_object('audited', true, 'token_id', t.id);
END
$$;
COMMENT ON FUNCTION api.service_terminal_refused(text, text) IS 'A relay (scope terminal:redeem) records that it refused a token (the redeem''s error rolled back with it): audited as terminal.token_refused with the error code and, when the token is known, its id, user and allocation. The token itself is never stored.';
SELECT pgcloud.expose('api.service_terminal_refused(text, text)', 'service');
