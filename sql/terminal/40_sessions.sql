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
SELECT pgcloud.expose('api.service_terminal_relay_started()', 'service');

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
SELECT pgcloud.expose('api.service_terminal_heartbeat(jsonb)', 'service');

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
SELECT pgcloud.expose('api.service_end_terminal_session(uuid, text, bigint, bigint)', 'service');

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
SELECT pgcloud.expose('api.admin_terminal_sessions(text)', 'admin');
