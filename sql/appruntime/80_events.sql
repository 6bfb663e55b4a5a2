-- Read model, and the end of instances with their allocation.

CREATE FUNCTION appruntime.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                    payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    v_alloc uuid;
    v_user uuid;
    uname text;
    addr text;
    i appruntime.instances;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := appruntime.uuid_arg(coalesce(payload ->> 'user_id', aggregate_id), 'user_id');
        uname := payload ->> 'posix_username';
        IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
        END IF;
        INSERT INTO appruntime.users AS u (user_id, posix_username) VALUES (v_user, uname)
        ON CONFLICT (user_id) DO UPDATE SET posix_username = coalesce(excluded.posix_username, u.posix_username), updated_at = now();
    WHEN 'allocation.activated' THEN
        v_alloc := appruntime.uuid_arg(coalesce(payload ->> 'allocation_id', aggregate_id), 'allocation_id');
        v_user := appruntime.uuid_arg(payload ->> 'user_id', 'user_id');
        IF jsonb_typeof(payload -> 'ip_addresses') = 'array' THEN
            addr := payload -> 'ip_addresses' ->> 0;
        END IF;
        INSERT INTO appruntime.allocations AS x (allocation_id, user_id, hostname, address, state)
        VALUES (v_alloc, v_user, coalesce(payload ->> 'node_hostname', payload ->> 'hostname'), coalesce(addr, payload ->> 'address'), 'active')
        ON CONFLICT (allocation_id) DO UPDATE
            SET user_id = excluded.user_id, hostname = excluded.hostname, address = excluded.address, updated_at = now()
            WHERE x.state = 'active';
    WHEN 'allocation.releasing', 'allocation.released', 'allocation.failed' THEN
        v_alloc := appruntime.uuid_arg(coalesce(payload ->> 'allocation_id', aggregate_id), 'allocation_id');
        INSERT INTO appruntime.allocations AS x (allocation_id, state) VALUES (v_alloc, 'ended')
        ON CONFLICT (allocation_id) DO UPDATE SET state = 'ended', updated_at = now();
        FOR i IN SELECT * FROM appruntime.instances x WHERE x.allocation_id = v_alloc AND x.state <> 'released' FOR UPDATE LOOP
            PERFORM appruntime.set_state(i, 'released', NULL, 'the allocation ended');
        END LOOP;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION appruntime.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler: user.created fills appruntime.users; allocation.activated / releasing / released / failed keep appruntime.allocations, and an allocation being released or ended releases its instances (app.instance_released).';
