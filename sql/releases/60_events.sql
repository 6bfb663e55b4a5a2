-- The read model: user.created and allocation.activated / released / failed.

CREATE FUNCTION releases.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
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
COMMENT ON FUNCTION releases.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

CREATE FUNCTION releases.payload_time(payload jsonb, field text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    IF payload ->> field IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (payload ->> field)::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
    PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a timestamp', field));
END
$$;
COMMENT ON FUNCTION releases.payload_time(jsonb, text) IS 'An optional timestamp field of an event payload (NULL when absent); raises invalid_event when malformed.';

CREATE FUNCTION releases.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                  payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid;
    v_alloc uuid;
    uname text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := releases.payload_uuid(payload, 'user_id', aggregate_id);
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
    WHEN 'allocation.activated' THEN
        v_alloc := releases.payload_uuid(payload, 'allocation_id', aggregate_id);
        v_user := releases.payload_uuid(payload, 'user_id');
        -- An ended allocation stays ended (a late or replayed activation changes nothing).
        IF payload ->> 'ssh_principal' IS NOT NULL
           AND (payload ->> 'ssh_principal') !~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'ssh_principal must be pgcloud-alloc-<uuid>');
        END IF;
        INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, ssh_principal, state, started_at, ends_at,
                                               updated_at)
        VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'),
                payload ->> 'ssh_principal', 'active',
                coalesce(releases.payload_time(payload, 'started_at'), now()),
                coalesce(releases.payload_time(payload, 'ends_at'), releases.payload_time(payload, 'ended_at')), now())
        ON CONFLICT (allocation_id) DO UPDATE
            SET user_id = excluded.user_id, sku = excluded.sku, hostname = excluded.hostname,
                ssh_principal = excluded.ssh_principal,
                started_at = excluded.started_at, ends_at = excluded.ends_at, updated_at = excluded.updated_at
            WHERE x.state = 'active';
    WHEN 'allocation.released', 'allocation.failed', 'allocation.releasing' THEN
        -- Releasing already ends access: no certificate is minted once the
        -- release is requested.
        v_alloc := releases.payload_uuid(payload, 'allocation_id', aggregate_id);
        IF payload ? 'user_id' THEN
            v_user := releases.payload_uuid(payload, 'user_id');
        END IF;
        INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, state, started_at, ended_at, updated_at)
        VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'), 'ended',
                releases.payload_time(payload, 'started_at'),
                coalesce(releases.payload_time(payload, 'ended_at'), now()), now())
        ON CONFLICT (allocation_id) DO UPDATE
            SET state = 'ended',
                user_id = coalesce(x.user_id, excluded.user_id),
                ended_at = coalesce(x.ended_at, excluded.ended_at),
                updated_at = excluded.updated_at;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION releases.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created fills releases.users; allocation.activated makes an allocation active, allocation.releasing, allocation.released and allocation.failed end it (no access is minted once a release is requested). Other types are ignored.';
