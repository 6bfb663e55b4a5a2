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
