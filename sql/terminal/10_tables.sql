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
