-- pgcloud_terminal install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_terminal" to load this file. \quit

SELECT pgcloud.service_begin('terminal');
-- source: sql/terminal/00_catalogue.sql
-- pgcloud_terminal: single-use terminal tokens and the live sessions of the
-- terminal relay (relay/). Schema terminal, owned by pgcloud_svc_terminal.
--
-- Decisions:
--   * A token is 32 random bytes (base64url, prefix "pgt_"), returned once and
--     stored only as its SHA-256. It is bound to the caller, the caller's
--     session (sid claim) and one allocation, lives terminal.token_ttl_seconds
--     and is redeemed once, by the relay (pgcloud_service, scope
--     terminal:redeem). Minting is not idempotent (PRODUCT.md §2): a retry
--     mints another token.
--   * Who may open a terminal: the allocation's owner, or a member (owner or
--     editor) of an app instance on it (read model of appruntime's
--     app.member_added / app.member_removed). Viewers may not.
--   * The node login is the allocation owner's POSIX username (the account
--     the node was deployed for); the certificate's key id names the
--     person who opened the terminal.
--   * A redeem opens a live session row. The relay reports its sessions with a
--     heartbeat and learns which to close (allocation ended, session revoked,
--     member removed); it ends each with the bytes both ways. Sessions whose
--     relay stopped reporting (terminal.session_stale_seconds) are ended by
--     terminal.reap_sessions(), a scheduler job (terminal.reap_interval_seconds),
--     so nothing stays marked live.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('terminal_token_invalid',      401, 'The terminal token is not valid.', 'terminal'),
    ('terminal_token_expired',      401, 'The terminal token has expired.', 'terminal'),
    ('terminal_token_used',         409, 'The terminal token has already been used.', 'terminal'),
    ('terminal_token_revoked',      401, 'The terminal token was revoked with its session or allocation.', 'terminal'),
    ('terminal_session_not_found',  404, 'The terminal session does not exist.', 'terminal'),
    ('terminal_no_session',         400, 'A terminal token needs a signed-in session (the sid claim).', 'terminal');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_found',        404, 'The allocation does not exist.', 'terminal'),
    ('allocation_not_active',       409, 'The allocation is not active.', 'terminal'),
    ('posix_identity_missing',      409, 'Your account has no POSIX username yet.', 'terminal')
ON CONFLICT (code) DO NOTHING;

-- terminal.token_ttl_seconds is seeded by core (60 s, allowed 5 to 600).
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('terminal.session_stale_seconds', '30', 'A live terminal session whose relay has not reported for this long is ended as lost (seconds, 2 to 3600).');

-- source: sql/terminal/10_tables.sql
-- Read model (users, allocations, app members), tokens and sessions.

CREATE TABLE terminal.users (
    user_id        uuid PRIMARY KEY,
    posix_username text CHECK (posix_username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE terminal.users IS 'Read model of users (from user.created): the POSIX username a terminal logs in as.';
COMMENT ON COLUMN terminal.users.user_id IS 'The user (JWT sub).';
COMMENT ON COLUMN terminal.users.posix_username IS 'POSIX login name on nodes.';
COMMENT ON COLUMN terminal.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE terminal.allocation_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE terminal.allocation_transitions IS 'Allowed changes of terminal.allocations.state (from_state NULL: initial state).';
COMMENT ON COLUMN terminal.allocation_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN terminal.allocation_transitions.to_state IS 'State after.';
INSERT INTO terminal.allocation_transitions (from_state, to_state) VALUES
    (NULL, 'active'), (NULL, 'ended'), ('active', 'ended');

CREATE TABLE terminal.allocations (
    allocation_id uuid PRIMARY KEY,
    user_id       uuid,
    hostname      text,
    address       text,
    state         text NOT NULL CHECK (state IN ('active', 'ended')),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'ended' OR user_id IS NOT NULL)
);
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON terminal.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'terminal.allocation_transitions');
COMMENT ON TABLE terminal.allocations IS 'Read model of allocations (allocation.activated / released / failed): whose they are, where the node is, whether terminals may open.';
COMMENT ON COLUMN terminal.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN terminal.allocations.user_id IS 'The owner.';
COMMENT ON COLUMN terminal.allocations.hostname IS 'Hostname of the node.';
COMMENT ON COLUMN terminal.allocations.address IS 'Address the relay connects to: the first of ip_addresses, else the hostname.';
COMMENT ON COLUMN terminal.allocations.state IS 'active or ended (terminal).';
COMMENT ON COLUMN terminal.allocations.updated_at IS 'When the last event about it was applied.';

CREATE TABLE terminal.app_members (
    instance_id   uuid NOT NULL,
    allocation_id uuid NOT NULL,
    user_id       uuid NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX app_members_alloc_idx ON terminal.app_members (allocation_id, user_id);
COMMENT ON TABLE terminal.app_members IS 'Read model of app instance members (app.member_added / app.member_removed / app.instance_released): owners and editors may open terminals to the instance''s allocation.';
COMMENT ON COLUMN terminal.app_members.instance_id IS 'The app instance.';
COMMENT ON COLUMN terminal.app_members.allocation_id IS 'The allocation it runs on.';
COMMENT ON COLUMN terminal.app_members.user_id IS 'The member.';
COMMENT ON COLUMN terminal.app_members.role IS 'owner, editor or viewer.';

CREATE TABLE terminal.revoked_sessions (
    session_id uuid PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE terminal.revoked_sessions IS 'Read model of session.revoked: sign-in sessions that may no longer mint or redeem terminal tokens.';
COMMENT ON COLUMN terminal.revoked_sessions.session_id IS 'The revoked session (sid).';
COMMENT ON COLUMN terminal.revoked_sessions.revoked_at IS 'When the event was applied.';

CREATE TABLE terminal.tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash    bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id       uuid NOT NULL,
    session_id    uuid NOT NULL,
    allocation_id uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    redeemed_at   timestamptz,
    revoked_at    timestamptz,
    revoked_reason text,
    CHECK (expires_at > created_at)
);
CREATE INDEX tokens_session_idx ON terminal.tokens (session_id) WHERE redeemed_at IS NULL AND revoked_at IS NULL;
CREATE INDEX tokens_alloc_idx ON terminal.tokens (allocation_id) WHERE redeemed_at IS NULL AND revoked_at IS NULL;
COMMENT ON TABLE terminal.tokens IS 'Terminal tokens, stored only as SHA-256 of the token: single-use, short-lived, bound to a user, a session and an allocation.';
COMMENT ON COLUMN terminal.tokens.id IS 'Token id (never the token).';
COMMENT ON COLUMN terminal.tokens.token_hash IS 'SHA-256 of the token.';
COMMENT ON COLUMN terminal.tokens.user_id IS 'Who minted it.';
COMMENT ON COLUMN terminal.tokens.session_id IS 'The sign-in session it was minted in (sid claim); dies with it.';
COMMENT ON COLUMN terminal.tokens.allocation_id IS 'The allocation it opens a terminal to; dies with it.';
COMMENT ON COLUMN terminal.tokens.created_at IS 'When it was minted.';
COMMENT ON COLUMN terminal.tokens.expires_at IS 'Until when it may be redeemed.';
COMMENT ON COLUMN terminal.tokens.redeemed_at IS 'When the relay redeemed it (once).';
COMMENT ON COLUMN terminal.tokens.revoked_at IS 'When it was revoked (session revoked, allocation ended).';
COMMENT ON COLUMN terminal.tokens.revoked_reason IS 'Why it was revoked.';

CREATE TABLE terminal.session_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE terminal.session_transitions IS 'Allowed changes of terminal.sessions.state.';
COMMENT ON COLUMN terminal.session_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN terminal.session_transitions.to_state IS 'State after.';
INSERT INTO terminal.session_transitions (from_state, to_state) VALUES (NULL, 'live'), ('live', 'ended');

CREATE TABLE terminal.sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_id      uuid NOT NULL UNIQUE REFERENCES terminal.tokens (id),
    user_id       uuid NOT NULL,
    session_id    uuid NOT NULL,
    allocation_id uuid NOT NULL,
    posix_username text NOT NULL,
    relay         text NOT NULL,
    state         text NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'ended')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    end_reason    text,
    bytes_in      bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out     bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    close_requested text,
    CHECK ((state = 'ended') = (ended_at IS NOT NULL))
);
CREATE INDEX sessions_live_idx ON terminal.sessions (relay) WHERE state = 'live';
CREATE INDEX sessions_alloc_idx ON terminal.sessions (allocation_id) WHERE state = 'live';
CREATE TRIGGER sessions_state BEFORE INSERT OR UPDATE OF state ON terminal.sessions
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'terminal.session_transitions');
COMMENT ON TABLE terminal.sessions IS 'Terminal sessions held by relays: live from redeem until the relay ends them (or they are reaped as lost).';
COMMENT ON COLUMN terminal.sessions.id IS 'Terminal session id.';
COMMENT ON COLUMN terminal.sessions.token_id IS 'The token redeemed to open it.';
COMMENT ON COLUMN terminal.sessions.user_id IS 'Who opened it.';
COMMENT ON COLUMN terminal.sessions.session_id IS 'The sign-in session of the token.';
COMMENT ON COLUMN terminal.sessions.allocation_id IS 'The allocation.';
COMMENT ON COLUMN terminal.sessions.posix_username IS 'The login on the node.';
COMMENT ON COLUMN terminal.sessions.relay IS 'Name of the relay holding it.';
COMMENT ON COLUMN terminal.sessions.state IS 'live or ended.';
COMMENT ON COLUMN terminal.sessions.started_at IS 'When the token was redeemed.';
COMMENT ON COLUMN terminal.sessions.last_seen_at IS 'Last heartbeat of its relay.';
COMMENT ON COLUMN terminal.sessions.ended_at IS 'When it ended.';
COMMENT ON COLUMN terminal.sessions.end_reason IS 'Why: closed, idle, allocation_ended, session_revoked, node_closed, error, relay_lost, relay_restarted.';
COMMENT ON COLUMN terminal.sessions.bytes_in IS 'Bytes from the browser to the node.';
COMMENT ON COLUMN terminal.sessions.bytes_out IS 'Bytes from the node to the browser.';
COMMENT ON COLUMN terminal.sessions.close_requested IS 'Set when the platform wants the relay to close it (allocation_ended, session_revoked, member_removed).';

SELECT pg_catalog.pg_extension_config_dump('terminal.users', '');
SELECT pg_catalog.pg_extension_config_dump('terminal.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('terminal.app_members', '');
SELECT pg_catalog.pg_extension_config_dump('terminal.tokens', '');
SELECT pg_catalog.pg_extension_config_dump('terminal.revoked_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('terminal.sessions', '');

-- source: sql/terminal/20_c.sql
-- C primitives shared with auth's (same symbols in pgcloud.so): a token from
-- the CSPRNG and its SHA-256.

CREATE FUNCTION terminal.random_token(prefix text, nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_random_token';
COMMENT ON FUNCTION terminal.random_token(text, integer) IS 'prefix followed by the base64url of nbytes (16-64) bytes from the operating system''s CSPRNG.';

CREATE FUNCTION terminal.token_hash(token text) RETURNS bytea
LANGUAGE C IMMUTABLE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_auth_secret_hash';
COMMENT ON FUNCTION terminal.token_hash(text) IS 'SHA-256 of a terminal token: the only form in which it is stored.';

-- source: sql/terminal/30_tokens.sql
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

-- source: sql/terminal/40_sessions.sql
-- Live sessions: the relay's heartbeat and end, lost relays, operators' view.

CREATE FUNCTION terminal.relay_name() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, terminal
AS $$ SELECT left(coalesce(pgcloud.claims() ->> 'relay', pgcloud.claims() ->> 'sub', 'relay'), 100) $$;
COMMENT ON FUNCTION terminal.relay_name() IS 'The calling relay''s name: the relay claim, else sub.';

CREATE FUNCTION terminal.end_session(s terminal.sessions, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
BEGIN
    UPDATE terminal.sessions x SET state = 'ended', ended_at = now(), end_reason = reason
     WHERE x.id = s.id AND x.state = 'live';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pgcloud.audit('terminal.session_ended', 'allocation', s.allocation_id::text, 'ok',
        jsonb_build_object('terminal_session_id', s.id, 'user_id', s.user_id, 'relay', s.relay, 'reason', reason,
                           'bytes_in', s.bytes_in, 'bytes_out', s.bytes_out,
                           'seconds', round(extract(epoch FROM now() - s.started_at)::numeric, 3)));
    PERFORM pgcloud.emit('terminal.session_ended', 'allocation', s.allocation_id::text,
        jsonb_build_object('terminal_session_id', s.id, 'allocation_id', s.allocation_id, 'user_id', s.user_id,
                           'reason', reason, 'bytes_in', s.bytes_in, 'bytes_out', s.bytes_out));
END
$$;
COMMENT ON FUNCTION terminal.end_session(terminal.sessions, text) IS 'Ends a live session once: audited (terminal.session_ended with bytes each way) and announced.';

CREATE FUNCTION terminal.reap_sessions() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    stale integer := pgcloud.policy('terminal.session_stale_seconds', NULL::integer);
    s terminal.sessions;
    n integer := 0;
BEGIN
    IF stale IS NULL OR stale NOT BETWEEN 2 AND 3600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'terminal.session_stale_seconds must be between 2 and 3600');
    END IF;
    FOR s IN SELECT * FROM terminal.sessions x
              WHERE x.state = 'live' AND x.last_seen_at < now() - make_interval(secs => stale)
              FOR UPDATE SKIP LOCKED LOOP
        PERFORM terminal.end_session(s, 'relay_lost');
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION terminal.reap_sessions() IS 'Ends live sessions whose relay has not reported for terminal.session_stale_seconds (reason relay_lost); returns how many.';

CREATE FUNCTION api.service_terminal_relay_started() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    v_relay text := terminal.relay_name();
    s terminal.sessions;
    n integer := 0;
BEGIN
    PERFORM pgcloud.authorize_service('terminal:redeem');
    FOR s IN SELECT * FROM terminal.sessions x WHERE x.state = 'live' AND x.relay = v_relay FOR UPDATE LOOP
        PERFORM terminal.end_session(s, 'relay_restarted');
        n := n + 1;
    END LOOP;
    PERFORM pgcloud.audit('terminal.relay_started', 'relay', v_relay, 'ok', jsonb_build_object('ended_sessions', n));
    RETURN jsonb_build_object('relay', v_relay, 'ended_sessions', n);
END
$$;
COMMENT ON FUNCTION api.service_terminal_relay_started() IS 'A relay (scope terminal:redeem) announces it (re)started: every session still marked live for it is ended (relay_restarted). Returns {relay, ended_sessions}.';

CREATE FUNCTION api.service_terminal_heartbeat(sessions jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    v_relay text := terminal.relay_name();
    e jsonb;
    s terminal.sessions;
    close jsonb := '[]'::jsonb;
BEGIN
    PERFORM pgcloud.authorize_service('terminal:redeem');
    IF sessions IS NULL OR jsonb_typeof(sessions) <> 'array' OR jsonb_array_length(sessions) > 10000 THEN
        PERFORM pgcloud.raise('invalid_argument', 'sessions must be an array of {id, bytes_in, bytes_out} (at most 10000)');
    END IF;
    FOR e IN SELECT * FROM jsonb_array_elements(sessions) LOOP
        IF jsonb_typeof(e) <> 'object' OR (e ->> 'id') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
           OR jsonb_typeof(coalesce(e -> 'bytes_in', '0')) <> 'number' OR jsonb_typeof(coalesce(e -> 'bytes_out', '0')) <> 'number'
           OR coalesce((e ->> 'bytes_in')::numeric, 0) < 0 OR coalesce((e ->> 'bytes_out')::numeric, 0) < 0 THEN
            PERFORM pgcloud.raise('invalid_argument', 'each session is {id: uuid, bytes_in: number, bytes_out: number}');
        END IF;
        UPDATE terminal.sessions x
           SET last_seen_at = now(),
               bytes_in = greatest(x.bytes_in, coalesce((e ->> 'bytes_in')::bigint, 0)),
               bytes_out = greatest(x.bytes_out, coalesce((e ->> 'bytes_out')::bigint, 0))
         WHERE x.id = (e ->> 'id')::uuid AND x.relay = v_relay AND x.state = 'live'
        RETURNING * INTO s;
        IF NOT FOUND THEN
            close := close || jsonb_build_array(jsonb_build_object('id', e ->> 'id', 'reason', 'not_live'));
        ELSIF s.close_requested IS NOT NULL THEN
            close := close || jsonb_build_array(jsonb_build_object('id', s.id, 'reason', s.close_requested));
        END IF;
    END LOOP;
    PERFORM terminal.reap_sessions();
    RETURN jsonb_build_object('close', close);
END
$$;
COMMENT ON FUNCTION api.service_terminal_heartbeat(jsonb) IS 'A relay (scope terminal:redeem) reports its live sessions [{id, bytes_in, bytes_out}]; returns {close: [{id, reason}]}: sessions it must close now (allocation_ended, session_revoked, member_removed, or not_live when the platform no longer knows them as live). Also ends sessions of relays that stopped reporting.';

CREATE FUNCTION api.service_end_terminal_session(terminal_session_id uuid, reason text, bytes_in bigint, bytes_out bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    s terminal.sessions;
BEGIN
    PERFORM pgcloud.authorize_service('terminal:redeem');
    IF reason IS NULL OR reason !~ '^[a-z_]{1,40}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'reason must be a short lower-case word such as closed or idle');
    END IF;
    IF bytes_in IS NULL OR bytes_out IS NULL OR bytes_in < 0 OR bytes_out < 0 THEN
        PERFORM pgcloud.raise('invalid_argument', 'bytes_in and bytes_out must be non-negative');
    END IF;
    UPDATE terminal.sessions x
       SET bytes_in = greatest(x.bytes_in, service_end_terminal_session.bytes_in),
           bytes_out = greatest(x.bytes_out, service_end_terminal_session.bytes_out)
     WHERE x.id = terminal_session_id AND x.relay = terminal.relay_name()
    RETURNING * INTO s;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('terminal_session_not_found', format('no session %s held by this relay', terminal_session_id));
    END IF;
    PERFORM terminal.end_session(s, reason);
    SELECT * INTO s FROM terminal.sessions x WHERE x.id = terminal_session_id;
    RETURN jsonb_build_object('terminal_session_id', s.id, 'state', s.state, 'end_reason', s.end_reason,
                              'bytes_in', s.bytes_in, 'bytes_out', s.bytes_out);
END
$$;
COMMENT ON FUNCTION api.service_end_terminal_session(uuid, text, bigint, bigint) IS 'A relay (scope terminal:redeem) ends one of its sessions with the reason and the bytes each way; audited as terminal.session_ended. Ending an ended session changes nothing (safe to retry).';

CREATE FUNCTION api.admin_terminal_sessions(state text DEFAULT 'live') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF state IS NOT NULL AND state NOT IN ('live', 'ended') THEN
        PERFORM pgcloud.raise('invalid_argument', 'state must be live, ended or NULL (all)');
    END IF;
    PERFORM terminal.reap_sessions();
    RETURN coalesce((SELECT jsonb_agg(jsonb_build_object(
                'id', s.id, 'user_id', s.user_id, 'allocation_id', s.allocation_id, 'session_id', s.session_id,
                'posix_username', s.posix_username, 'relay', s.relay, 'state', s.state,
                'started_at', s.started_at, 'last_seen_at', s.last_seen_at, 'ended_at', s.ended_at,
                'end_reason', s.end_reason, 'bytes_in', s.bytes_in, 'bytes_out', s.bytes_out) ORDER BY s.started_at DESC)
              FROM (SELECT * FROM terminal.sessions x
                     WHERE admin_terminal_sessions.state IS NULL OR x.state = admin_terminal_sessions.state
                     ORDER BY x.started_at DESC LIMIT 1000) s), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_terminal_sessions(text) IS 'Operators: terminal sessions (live by default; ended, or NULL for all), newest first, at most 1000: who, which allocation, which relay, since when, bytes each way. Sessions of relays that stopped reporting are ended first.';

-- Lost relays are noticed by themselves: the scheduler worker runs the reaper
-- every terminal.reap_interval_seconds (heartbeats and the operators' listing
-- reap too, so a listing is never stale).
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('terminal.reap_interval_seconds', '10', 'How often the scheduler ends live terminal sessions whose relay stopped reporting (seconds).');
SELECT pgcloud.register_job('terminal.reap_sessions', 'terminal.reap_sessions()', 'terminal.reap_interval_seconds', 's',
    'Ends live terminal sessions whose relay has not reported for terminal.session_stale_seconds (reason relay_lost).');

-- source: sql/terminal/80_events.sql
-- The read model and the death of tokens and sessions with their allocation,
-- session or membership.

CREATE FUNCTION terminal.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    v text := coalesce(payload ->> field, fallback);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a uuid', field));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION terminal.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when missing or malformed.';

CREATE FUNCTION terminal.kill(where_alloc uuid, where_session uuid, where_user uuid, reason text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
BEGIN
    UPDATE terminal.tokens t SET revoked_at = now(), revoked_reason = reason
     WHERE t.redeemed_at IS NULL AND t.revoked_at IS NULL
       AND (where_alloc IS NULL OR t.allocation_id = where_alloc)
       AND (where_session IS NULL OR t.session_id = where_session)
       AND (where_user IS NULL OR t.user_id = where_user);
    UPDATE terminal.sessions s SET close_requested = reason
     WHERE s.state = 'live' AND s.close_requested IS NULL
       AND (where_alloc IS NULL OR s.allocation_id = where_alloc)
       AND (where_session IS NULL OR s.session_id = where_session)
       AND (where_user IS NULL OR s.user_id = where_user);
END
$$;
COMMENT ON FUNCTION terminal.kill(uuid, uuid, uuid, text) IS 'Revokes unredeemed tokens and asks relays to close live sessions matching an allocation, a sign-in session and/or a user.';

CREATE FUNCTION terminal.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                  payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    v_user uuid;
    v_alloc uuid;
    v_inst uuid;
    uname text;
    addr text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := terminal.payload_uuid(payload, 'user_id', aggregate_id);
        uname := payload ->> 'posix_username';
        IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
        END IF;
        INSERT INTO terminal.users AS u (user_id, posix_username) VALUES (v_user, uname)
        ON CONFLICT (user_id) DO UPDATE SET posix_username = coalesce(excluded.posix_username, u.posix_username),
                                            updated_at = now();
    WHEN 'allocation.activated' THEN
        v_alloc := terminal.payload_uuid(payload, 'allocation_id', aggregate_id);
        v_user := terminal.payload_uuid(payload, 'user_id');
        IF jsonb_typeof(payload -> 'ip_addresses') = 'array' THEN
            addr := payload -> 'ip_addresses' ->> 0;
        END IF;
        INSERT INTO terminal.allocations AS x (allocation_id, user_id, hostname, address, state)
        VALUES (v_alloc, v_user, coalesce(payload ->> 'node_hostname', payload ->> 'hostname'),
                coalesce(addr, payload ->> 'address'), 'active')
        ON CONFLICT (allocation_id) DO UPDATE
            SET user_id = excluded.user_id, hostname = excluded.hostname, address = excluded.address, updated_at = now()
            WHERE x.state = 'active';
    WHEN 'allocation.releasing', 'allocation.released', 'allocation.failed' THEN
        v_alloc := terminal.payload_uuid(payload, 'allocation_id', aggregate_id);
        INSERT INTO terminal.allocations AS x (allocation_id, state) VALUES (v_alloc, 'ended')
        ON CONFLICT (allocation_id) DO UPDATE SET state = 'ended', updated_at = now();
        PERFORM terminal.kill(v_alloc, NULL, NULL, 'allocation_ended');
    WHEN 'session.revoked' THEN
        INSERT INTO terminal.revoked_sessions (session_id)
        VALUES (terminal.payload_uuid(payload, 'session_id', aggregate_id)) ON CONFLICT DO NOTHING;
        PERFORM terminal.kill(NULL, terminal.payload_uuid(payload, 'session_id', aggregate_id), NULL, 'session_revoked');
    WHEN 'app.member_added' THEN
        v_inst := terminal.payload_uuid(payload, 'instance_id', aggregate_id);
        IF payload ->> 'role' IS NULL OR payload ->> 'role' NOT IN ('owner', 'editor', 'viewer') THEN
            PERFORM pgcloud.raise('invalid_event', 'role must be owner, editor or viewer');
        END IF;
        INSERT INTO terminal.app_members AS m (instance_id, allocation_id, user_id, role)
        VALUES (v_inst, terminal.payload_uuid(payload, 'allocation_id'), terminal.payload_uuid(payload, 'user_id'),
                payload ->> 'role')
        ON CONFLICT (instance_id, user_id) DO UPDATE SET role = excluded.role;
        IF payload ->> 'role' = 'viewer' THEN
            -- A demotion closes the terminals the member had opened.
            v_alloc := terminal.payload_uuid(payload, 'allocation_id');
            v_user := terminal.payload_uuid(payload, 'user_id');
            IF NOT EXISTS (SELECT 1 FROM terminal.allocations a WHERE a.allocation_id = v_alloc AND a.user_id = v_user) THEN
                PERFORM terminal.kill(v_alloc, NULL, v_user, 'member_removed');
            END IF;
        END IF;
    WHEN 'app.member_removed' THEN
        v_inst := terminal.payload_uuid(payload, 'instance_id', aggregate_id);
        v_user := terminal.payload_uuid(payload, 'user_id');
        DELETE FROM terminal.app_members m WHERE m.instance_id = v_inst AND m.user_id = v_user
        RETURNING m.allocation_id INTO v_alloc;
        IF v_alloc IS NOT NULL AND NOT EXISTS (SELECT 1 FROM terminal.allocations a
                                                WHERE a.allocation_id = v_alloc AND a.user_id = v_user) THEN
            PERFORM terminal.kill(v_alloc, NULL, v_user, 'member_removed');
        END IF;
    WHEN 'app.instance_released' THEN
        DELETE FROM terminal.app_members m WHERE m.instance_id = terminal.payload_uuid(payload, 'instance_id', aggregate_id);
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION terminal.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler: user.created fills terminal.users; allocation.activated / releasing / released / failed keep terminal.allocations (an allocation being released or ended revokes its tokens and closes its sessions); session.revoked revokes the session''s tokens and closes its terminals; app.member_added / member_removed / instance_released keep terminal.app_members.';

-- source: sql/terminal/90_grants.sql
-- Who may call what (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.mint_terminal_token(uuid) TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_redeem_terminal_token(text), api.service_terminal_relay_started(),
    api.service_terminal_heartbeat(jsonb), api.service_end_terminal_session(uuid, text, bigint, bigint),
    api.service_terminal_refused(text, text)
    TO pgcloud_service;
GRANT EXECUTE ON FUNCTION api.admin_terminal_sessions(text) TO pgcloud_admin;

SELECT pgcloud.service_end('terminal');
