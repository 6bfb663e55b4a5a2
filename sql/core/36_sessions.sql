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

-- Published signing keys (database per service): auth announces its JSON Web
-- Key Set as signing_key.published when it creates a key (rotation, with the
-- new key's activation time ahead); every database keeps the latest set it
-- learnt (pgcloud.consume_event), from which its own PostgREST's jwt-secret
-- is written (scripts/multicluster.sh keys) before the new key signs. In the
-- auth database auth writes the set itself.
CREATE TABLE pgcloud.published_keys (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    jwks         jsonb NOT NULL CHECK (jsonb_typeof(jwks -> 'keys') = 'array'),
    published_at timestamptz NOT NULL,
    learnt_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgcloud.published_keys IS 'The platform''s public signing keys (JWKS) as auth last announced them (signing_key.published): what this database''s PostgREST verifies tokens with. One row.';
COMMENT ON COLUMN pgcloud.published_keys.singleton IS 'Always true: one row.';
COMMENT ON COLUMN pgcloud.published_keys.jwks IS 'The JSON Web Key Set (public keys only).';
COMMENT ON COLUMN pgcloud.published_keys.published_at IS 'When auth published this set (a set published earlier never replaces it).';
COMMENT ON COLUMN pgcloud.published_keys.learnt_at IS 'When this database stored it.';

CREATE FUNCTION pgcloud.learn_jwks(jwks jsonb, published_at timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    k jsonb;
BEGIN
    IF jwks IS NULL OR jsonb_typeof(jwks -> 'keys') IS DISTINCT FROM 'array' OR published_at IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'a key set is {"keys": [...]} with a publication time');
    END IF;
    FOR k IN SELECT * FROM jsonb_array_elements(jwks -> 'keys') LOOP
        -- Public keys only: a private member (d, p, q, ...) is refused.
        IF jsonb_typeof(k) <> 'object' OR k ->> 'kid' IS NULL OR k ->> 'kty' IS NULL
           OR k ?| ARRAY['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'] THEN
            PERFORM pgcloud.raise('invalid_argument', 'a published key is a public JWK with kid and kty');
        END IF;
    END LOOP;
    INSERT INTO pgcloud.published_keys AS p (jwks, published_at, learnt_at)
    VALUES (learn_jwks.jwks, learn_jwks.published_at, now())
    ON CONFLICT (singleton) DO UPDATE SET jwks = excluded.jwks, published_at = excluded.published_at,
                                          learnt_at = excluded.learnt_at
     WHERE p.published_at < excluded.published_at;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION pgcloud.learn_jwks(jsonb, timestamptz) IS 'Services (auth) and pgcloud.consume_event (signing_key.published): stores the platform''s public key set published at published_at unless a later one is stored; refuses private key material. Returns whether it was stored.';

CREATE FUNCTION pgcloud.published_jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT p.jwks FROM pgcloud.published_keys p
$$;
COMMENT ON FUNCTION pgcloud.published_jwks() IS 'The platform''s public signing keys this database has learnt (pgcloud.published_keys), or NULL before the first signing_key.published: the jwt-secret of this database''s PostgREST.';
