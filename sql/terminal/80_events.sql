-- The read model and the death of tokens and sessions with their allocation,
-- session or membership. One handler per subscribed event type,
-- terminal.on_<type>(pgcloud.event_envelope), called by the core's delivery
-- with the inbox row in the same transaction.

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

CREATE FUNCTION terminal.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    uname text;
BEGIN
    v_user := pgcloud.payload_uuid(payload, 'user_id', aggregate_id);
    uname := payload ->> 'posix_username';
    IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
    END IF;
    INSERT INTO terminal.users AS u (user_id, posix_username) VALUES (v_user, uname)
    ON CONFLICT (user_id) DO UPDATE SET posix_username = coalesce(excluded.posix_username, u.posix_username),
                                        updated_at = now();
END
$$;
COMMENT ON FUNCTION terminal.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: fills terminal.users.';

CREATE FUNCTION terminal.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_alloc uuid;
    addr text;
BEGIN
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    v_user := pgcloud.payload_uuid(payload, 'user_id');
    IF jsonb_typeof(payload -> 'ip_addresses') = 'array' THEN
        addr := payload -> 'ip_addresses' ->> 0;
    END IF;
    INSERT INTO terminal.allocations AS x (allocation_id, user_id, hostname, address, state)
    VALUES (v_alloc, v_user, coalesce(payload ->> 'node_hostname', payload ->> 'hostname'),
            coalesce(addr, payload ->> 'address'), 'active')
    ON CONFLICT (allocation_id) DO UPDATE
        SET user_id = excluded.user_id, hostname = excluded.hostname, address = excluded.address, updated_at = now()
        WHERE x.state = 'active';
END
$$;
COMMENT ON FUNCTION terminal.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: the allocation read model (terminal.allocations).';

CREATE FUNCTION terminal.end_allocation(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_alloc uuid;
BEGIN
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    INSERT INTO terminal.allocations AS x (allocation_id, state) VALUES (v_alloc, 'ended')
    ON CONFLICT (allocation_id) DO UPDATE SET state = 'ended', updated_at = now();
    PERFORM terminal.kill(v_alloc, NULL, NULL, 'allocation_ended');
END
$$;
COMMENT ON FUNCTION terminal.end_allocation(pgcloud.event_envelope) IS 'allocation.releasing / released / failed: ends the allocation, revokes its tokens and closes its sessions.';

CREATE FUNCTION terminal.on_allocation_releasing(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$ SELECT terminal.end_allocation(event) $$;
COMMENT ON FUNCTION terminal.on_allocation_releasing(pgcloud.event_envelope) IS 'Event handler of allocation.releasing: ends the allocation, its tokens and sessions (terminal.end_allocation).';

CREATE FUNCTION terminal.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$ SELECT terminal.end_allocation(event) $$;
COMMENT ON FUNCTION terminal.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: ends the allocation, its tokens and sessions (terminal.end_allocation).';

CREATE FUNCTION terminal.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$ SELECT terminal.end_allocation(event) $$;
COMMENT ON FUNCTION terminal.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: ends the allocation, its tokens and sessions (terminal.end_allocation).';

CREATE FUNCTION terminal.on_session_revoked(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
BEGIN
    INSERT INTO terminal.revoked_sessions (session_id)
    VALUES (pgcloud.payload_uuid(payload, 'session_id', aggregate_id)) ON CONFLICT DO NOTHING;
    PERFORM terminal.kill(NULL, pgcloud.payload_uuid(payload, 'session_id', aggregate_id), NULL, 'session_revoked');
END
$$;
COMMENT ON FUNCTION terminal.on_session_revoked(pgcloud.event_envelope) IS 'Event handler of session.revoked: revokes the session''s tokens and closes its terminals.';

CREATE FUNCTION terminal.on_app_member_added(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_alloc uuid;
    v_inst uuid;
BEGIN
    v_inst := pgcloud.payload_uuid(payload, 'instance_id', aggregate_id);
    IF payload ->> 'role' IS NULL OR payload ->> 'role' NOT IN ('owner', 'editor', 'viewer') THEN
        PERFORM pgcloud.raise('invalid_event', 'role must be owner, editor or viewer');
    END IF;
    INSERT INTO terminal.app_members AS m (instance_id, allocation_id, user_id, role)
    VALUES (v_inst, pgcloud.payload_uuid(payload, 'allocation_id'), pgcloud.payload_uuid(payload, 'user_id'),
            payload ->> 'role')
    ON CONFLICT (instance_id, user_id) DO UPDATE SET role = excluded.role;
    IF payload ->> 'role' = 'viewer' THEN
        -- A demotion closes the terminals the member had opened.
        v_alloc := pgcloud.payload_uuid(payload, 'allocation_id');
        v_user := pgcloud.payload_uuid(payload, 'user_id');
        IF NOT EXISTS (SELECT 1 FROM terminal.allocations a WHERE a.allocation_id = v_alloc AND a.user_id = v_user) THEN
            PERFORM terminal.kill(v_alloc, NULL, v_user, 'member_removed');
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION terminal.on_app_member_added(pgcloud.event_envelope) IS 'Event handler of app.member_added: terminal.app_members (a demotion to viewer closes the member''s terminals).';

CREATE FUNCTION terminal.on_app_member_removed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_alloc uuid;
    v_inst uuid;
BEGIN
    v_inst := pgcloud.payload_uuid(payload, 'instance_id', aggregate_id);
    v_user := pgcloud.payload_uuid(payload, 'user_id');
    DELETE FROM terminal.app_members m WHERE m.instance_id = v_inst AND m.user_id = v_user
    RETURNING m.allocation_id INTO v_alloc;
    IF v_alloc IS NOT NULL AND NOT EXISTS (SELECT 1 FROM terminal.allocations a
                                            WHERE a.allocation_id = v_alloc AND a.user_id = v_user) THEN
        PERFORM terminal.kill(v_alloc, NULL, v_user, 'member_removed');
    END IF;
END
$$;
COMMENT ON FUNCTION terminal.on_app_member_removed(pgcloud.event_envelope) IS 'Event handler of app.member_removed: removes the member and closes their terminals on the allocation.';

CREATE FUNCTION terminal.on_app_instance_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, terminal
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
BEGIN
    DELETE FROM terminal.app_members m WHERE m.instance_id = pgcloud.payload_uuid(payload, 'instance_id', aggregate_id);
END
$$;
COMMENT ON FUNCTION terminal.on_app_instance_released(pgcloud.event_envelope) IS 'Event handler of app.instance_released: forgets the instance''s members.';
