-- Read model, and the end of instances with their allocation. One handler per
-- subscribed event type, appruntime.on_<type>(pgcloud.event_envelope), called
-- by the core's delivery with the inbox row in the same transaction.

CREATE FUNCTION appruntime.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    uname text;
BEGIN
    v_user := appruntime.uuid_arg(coalesce(payload ->> 'user_id', aggregate_id), 'user_id');
    uname := payload ->> 'posix_username';
    IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
    END IF;
    INSERT INTO appruntime.users AS u (user_id, posix_username) VALUES (v_user, uname)
    ON CONFLICT (user_id) DO UPDATE SET posix_username = coalesce(excluded.posix_username, u.posix_username), updated_at = now();
END
$$;
COMMENT ON FUNCTION appruntime.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: fills appruntime.users.';

CREATE FUNCTION appruntime.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_alloc uuid;
    v_user uuid;
    addr text;
BEGIN
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
END
$$;
COMMENT ON FUNCTION appruntime.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: the allocation read model (appruntime.allocations).';

CREATE FUNCTION appruntime.end_allocation(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_alloc uuid;
    i appruntime.instances;
BEGIN
    v_alloc := appruntime.uuid_arg(coalesce(payload ->> 'allocation_id', aggregate_id), 'allocation_id');
    INSERT INTO appruntime.allocations AS x (allocation_id, state) VALUES (v_alloc, 'ended')
    ON CONFLICT (allocation_id) DO UPDATE SET state = 'ended', updated_at = now();
    FOR i IN SELECT * FROM appruntime.instances x WHERE x.allocation_id = v_alloc AND x.state <> 'released' FOR UPDATE LOOP
        PERFORM appruntime.set_state(i, 'released', NULL, 'the allocation ended');
    END LOOP;
END
$$;
COMMENT ON FUNCTION appruntime.end_allocation(pgcloud.event_envelope) IS 'allocation.releasing / released / failed: ends the allocation and releases its instances (app.instance_released).';

CREATE FUNCTION appruntime.on_allocation_releasing(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$ SELECT appruntime.end_allocation(event) $$;
COMMENT ON FUNCTION appruntime.on_allocation_releasing(pgcloud.event_envelope) IS 'Event handler of allocation.releasing: ends the allocation and releases its instances (appruntime.end_allocation).';

CREATE FUNCTION appruntime.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$ SELECT appruntime.end_allocation(event) $$;
COMMENT ON FUNCTION appruntime.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: ends the allocation and releases its instances (appruntime.end_allocation).';

CREATE FUNCTION appruntime.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$ SELECT appruntime.end_allocation(event) $$;
COMMENT ON FUNCTION appruntime.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: ends the allocation and releases its instances (appruntime.end_allocation).';
