-- Revoked sessions: pgcloud.pre_request() refuses access tokens whose sid
-- claim names one of these (an indexed lookup per request). auth writes
-- them when a session is revoked (logout, refresh-token reuse); a row is
-- kept until every access token of the session has expired.

INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('session_revoked', 401, 'This session has been revoked; sign in again.');

CREATE TABLE pgcloud.revoked_sessions (
    session_id uuid PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expires_idx ON pgcloud.revoked_sessions (expires_at);
COMMENT ON TABLE pgcloud.revoked_sessions IS 'Sessions whose access tokens pgcloud.pre_request() refuses (sid claim), kept until those tokens have expired.';
COMMENT ON COLUMN pgcloud.revoked_sessions.session_id IS 'The session id (the sid claim of its access tokens).';
COMMENT ON COLUMN pgcloud.revoked_sessions.revoked_at IS 'When the session was revoked.';
COMMENT ON COLUMN pgcloud.revoked_sessions.expires_at IS 'When the last access token of the session expires; the row may be pruned after that.';

CREATE FUNCTION pgcloud.revoke_session(session_id uuid, expires_at timestamptz) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    INSERT INTO pgcloud.revoked_sessions AS r (session_id, expires_at)
    VALUES (revoke_session.session_id, revoke_session.expires_at)
    ON CONFLICT (session_id) DO UPDATE SET expires_at = greatest(r.expires_at, excluded.expires_at)
$$;
COMMENT ON FUNCTION pgcloud.revoke_session(uuid, timestamptz) IS 'Services: marks a session revoked until expires_at (when its last access token expires); pgcloud.pre_request() then refuses its tokens with session_revoked (401).';

CREATE FUNCTION pgcloud.prune_revoked_sessions() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    WITH gone AS (DELETE FROM pgcloud.revoked_sessions WHERE expires_at <= now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION pgcloud.prune_revoked_sessions() IS 'Deletes revocations whose access tokens have all expired; returns how many. Run by the job core.prune_revoked_sessions.';
