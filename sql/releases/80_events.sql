-- The read model: user.created and allocation.activated / releasing /
-- released / failed. One handler per subscribed event type,
-- releases.on_<type>(pgcloud.event_envelope), called by the core's delivery
-- with the inbox row in the same transaction.

CREATE FUNCTION releases.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
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
    IF jsonb_typeof(payload -> 'uid') NOT IN ('number', 'null') OR jsonb_typeof(payload -> 'gid') NOT IN ('number', 'null') THEN
        PERFORM pgcloud.raise('invalid_event', 'uid and gid must be numbers');
    END IF;
    INSERT INTO releases.users AS u (user_id, email, posix_username, uid, gid, updated_at)
    VALUES (v_user, payload ->> 'email', uname, (payload ->> 'uid')::integer, (payload ->> 'gid')::integer, now())
    ON CONFLICT (user_id) DO UPDATE
        SET email = coalesce(excluded.email, u.email),
            posix_username = coalesce(excluded.posix_username, u.posix_username),
            uid = coalesce(excluded.uid, u.uid),
            gid = coalesce(excluded.gid, u.gid),
            updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION releases.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: fills releases.users (e-mail, POSIX name, uid, gid).';

CREATE FUNCTION releases.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_alloc uuid;
BEGIN
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    v_user := pgcloud.payload_uuid(payload, 'user_id');
    -- An ended allocation stays ended (a late or replayed activation changes nothing).
    IF payload ->> 'ssh_principal' IS NOT NULL
       AND (payload ->> 'ssh_principal') !~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'ssh_principal must be pgcloud-alloc-<uuid>');
    END IF;
    INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, ssh_principal, state, started_at, ends_at,
                                           updated_at)
    VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'),
            payload ->> 'ssh_principal', 'active',
            coalesce(pgcloud.payload_time(payload, 'started_at'), now()),
            coalesce(pgcloud.payload_time(payload, 'ends_at'), pgcloud.payload_time(payload, 'ended_at')), now())
    ON CONFLICT (allocation_id) DO UPDATE
        SET user_id = excluded.user_id, sku = excluded.sku, hostname = excluded.hostname,
            ssh_principal = excluded.ssh_principal,
            started_at = excluded.started_at, ends_at = excluded.ends_at, updated_at = excluded.updated_at
        WHERE x.state = 'active';
END
$$;
COMMENT ON FUNCTION releases.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: makes the allocation active (an ended one stays ended).';

CREATE FUNCTION releases.end_allocation(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_alloc uuid;
BEGIN
    -- Releasing already ends access: no certificate is minted once the
    -- release is requested.
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    IF payload ? 'user_id' THEN
        v_user := pgcloud.payload_uuid(payload, 'user_id');
    END IF;
    INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, state, started_at, ended_at, updated_at)
    VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'), 'ended',
            pgcloud.payload_time(payload, 'started_at'),
            coalesce(pgcloud.payload_time(payload, 'ended_at'), now()), now())
    ON CONFLICT (allocation_id) DO UPDATE
        SET state = 'ended',
            user_id = coalesce(x.user_id, excluded.user_id),
            ended_at = coalesce(x.ended_at, excluded.ended_at),
            updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION releases.end_allocation(pgcloud.event_envelope) IS 'allocation.releasing / released / failed: ends the allocation in the read model (no access is minted once a release is requested).';

CREATE FUNCTION releases.on_allocation_releasing(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$ SELECT releases.end_allocation(event) $$;
COMMENT ON FUNCTION releases.on_allocation_releasing(pgcloud.event_envelope) IS 'Event handler of allocation.releasing: ends the allocation (releases.end_allocation).';

CREATE FUNCTION releases.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$ SELECT releases.end_allocation(event) $$;
COMMENT ON FUNCTION releases.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: ends the allocation (releases.end_allocation).';

CREATE FUNCTION releases.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$ SELECT releases.end_allocation(event) $$;
COMMENT ON FUNCTION releases.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: ends the allocation (releases.end_allocation).';
