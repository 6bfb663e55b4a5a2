-- Events in: catalogue and nodes (inventory), standing and force release
-- (billing), force release (admin), deployment outcomes (maas), SSH keys
-- (releases). One handler per subscribed event type,
-- provisioning.on_<type>(pgcloud.event_envelope), called by the core's
-- delivery with the inbox row in the same transaction.

CREATE FUNCTION provisioning.payload_int(payload jsonb, field text, lo bigint, hi bigint, required boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    IF NOT required AND coalesce(jsonb_typeof(payload -> field), 'null') = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(payload -> field) IS DISTINCT FROM 'number' OR (payload ->> field) !~ '^-?[0-9]{1,18}$'
       OR (payload ->> field)::bigint NOT BETWEEN lo AND hi THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a whole number from %s to %s', field, lo, hi));
    END IF;
    RETURN (payload ->> field)::bigint;
END
$$;
COMMENT ON FUNCTION provisioning.payload_int(jsonb, text, bigint, bigint, boolean) IS 'A whole-number field of an event payload within [lo, hi] (NULL when optional and absent); raises invalid_event otherwise.';

-- The allocation an event is about, locked; NULL when unknown here.
CREATE FUNCTION provisioning.lock_allocation(payload jsonb, aggregate_id text) RETURNS provisioning.allocations
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    a provisioning.allocations;
BEGIN
    SELECT * INTO a FROM provisioning.allocations x
     WHERE x.id = pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id) FOR UPDATE;
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.lock_allocation(jsonb, text) IS 'The allocation named by an event''s allocation_id, locked for update; NULL when it is not known here.';

CREATE FUNCTION provisioning.on_sku_upserted(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
BEGIN
    INSERT INTO provisioning.skus AS s (code, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region,
                                        price_per_hour, currency, updated_at)
    VALUES (pgcloud.payload_text(payload, 'code', '^[a-z0-9][a-z0-9._-]{0,62}$'),
            pgcloud.payload_text(payload, 'gpu_model', '^.{1,64}$'),
            provisioning.payload_int(payload, 'gpu_count', 1, 64),
            provisioning.payload_int(payload, 'vcpus', 0, 1000000, false),
            provisioning.payload_int(payload, 'memory_gb', 0, 100000000, false),
            provisioning.payload_int(payload, 'disk_gb', 0, 100000000, false),
            pgcloud.payload_text(payload, 'region', '^[a-z0-9][a-z0-9-]{0,31}$'),
            provisioning.payload_int(payload, 'price_per_hour', 0, 100000000000),
            pgcloud.payload_text(payload, 'currency', '^[a-z]{3}$'), now())
    ON CONFLICT (code) DO UPDATE
        SET gpu_model = excluded.gpu_model, gpu_count = excluded.gpu_count, vcpus = excluded.vcpus,
            memory_gb = excluded.memory_gb, disk_gb = excluded.disk_gb, region = excluded.region,
            price_per_hour = excluded.price_per_hour, currency = excluded.currency, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION provisioning.on_sku_upserted(pgcloud.event_envelope) IS 'Event handler of sku.upserted: the SKU read model.';

CREATE FUNCTION provisioning.on_image_upserted(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
BEGIN
    INSERT INTO provisioning.images AS i (code, distro_series, updated_at)
    VALUES (pgcloud.payload_text(payload, 'code', '^[a-z0-9][a-z0-9._-]{0,62}$'),
            pgcloud.payload_text(payload, 'distro_series', '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$'),
            now())
    ON CONFLICT (code) DO UPDATE SET distro_series = excluded.distro_series, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION provisioning.on_image_upserted(pgcloud.event_envelope) IS 'Event handler of image.upserted: the OS image read model.';

-- node.registered and node.state_changed carry the whole node.
CREATE FUNCTION provisioning.apply_node(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    v_state text;
BEGIN
    v_state := pgcloud.payload_text(payload, 'state', '^[a-z_]{1,32}$');
    IF jsonb_typeof(payload -> 'cached_images') NOT IN ('array', 'null') THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field cached_images must be an array');
    END IF;
    -- Waits for a placement holding the node: a node leaves placement
    -- after the placements already working on it, never during one.
    INSERT INTO provisioning.nodes AS n (node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count,
                                         state, cached_images, free_slots, updated_at)
    VALUES (pgcloud.payload_uuid(payload, 'node_id', event.aggregate_id),
            pgcloud.payload_text(payload, 'hostname', '^[a-z0-9.-]{1,253}$'),
            pgcloud.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
            payload ->> 'sku',
            pgcloud.payload_text(payload, 'region', '^[a-z0-9][a-z0-9-]{0,31}$'),
            pgcloud.payload_text(payload, 'gpu_model', '^.{1,64}$'),
            provisioning.payload_int(payload, 'slot_count', 1, 64),
            v_state,
            ARRAY(SELECT jsonb_array_elements_text(coalesce(payload -> 'cached_images', '[]'))),
            provisioning.payload_int(payload, 'slot_count', 1, 64),
            now())
    ON CONFLICT (node_id) DO UPDATE
        SET hostname = excluded.hostname, maas_system_id = excluded.maas_system_id, sku = excluded.sku,
            region = excluded.region, gpu_model = excluded.gpu_model, state = excluded.state,
            cached_images = excluded.cached_images, updated_at = excluded.updated_at;
END
$$;
COMMENT ON FUNCTION provisioning.apply_node(pgcloud.event_envelope) IS 'node.registered / node.state_changed: the node read model (state, slots, cached images).';

CREATE FUNCTION provisioning.on_node_registered(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$ SELECT provisioning.apply_node(event) $$;
COMMENT ON FUNCTION provisioning.on_node_registered(pgcloud.event_envelope) IS 'Event handler of node.registered: the node read model (provisioning.apply_node).';

CREATE FUNCTION provisioning.on_node_state_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$ SELECT provisioning.apply_node(event) $$;
COMMENT ON FUNCTION provisioning.on_node_state_changed(pgcloud.event_envelope) IS 'Event handler of node.state_changed: the node read model (provisioning.apply_node).';

CREATE FUNCTION provisioning.on_account_standing_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    v_user uuid := pgcloud.payload_uuid(payload, 'user_id', event.aggregate_id);
    v_as_of timestamptz;
BEGIN
    v_as_of := CASE WHEN payload ->> 'as_of' ~ '^\d{4}-\d{2}-\d{2}[T ][0-9:.]+(Z|[+-][0-9:]+)?$'
                    THEN (payload ->> 'as_of')::timestamptz END;
    INSERT INTO provisioning.account_standing AS s (user_id, standing, balance, currency, min_balance_to_allocate,
                                                    as_of, updated_at)
    VALUES (v_user, pgcloud.payload_text(payload, 'standing', '^[a-z_]{1,32}$'),
            provisioning.payload_int(payload, 'balance', -9000000000000000000, 9000000000000000000, false),
            payload ->> 'currency',
            provisioning.payload_int(payload, 'min_balance_to_allocate', -9000000000000000000, 9000000000000000000, false),
            v_as_of, now())
    ON CONFLICT (user_id) DO UPDATE
        SET standing = excluded.standing, balance = excluded.balance, currency = excluded.currency,
            min_balance_to_allocate = excluded.min_balance_to_allocate, as_of = excluded.as_of,
            updated_at = excluded.updated_at
        WHERE s.as_of IS NULL OR excluded.as_of IS NULL OR excluded.as_of >= s.as_of;
END
$$;
COMMENT ON FUNCTION provisioning.on_account_standing_changed(pgcloud.event_envelope) IS 'Event handler of account.standing_changed: the standing read model (ordered by as_of).';

CREATE FUNCTION provisioning.on_ssh_key_added(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
BEGIN
    INSERT INTO provisioning.ssh_keys AS k (key_id, user_id, public_key, fingerprint)
    VALUES (pgcloud.payload_uuid(payload, CASE WHEN payload ? 'key_id' THEN 'key_id' ELSE 'id' END, event.aggregate_id),
            pgcloud.payload_uuid(payload, 'user_id'),
            pgcloud.payload_text(payload, 'public_key',
                '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$'),
            payload ->> 'fingerprint')
    ON CONFLICT (key_id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION provisioning.on_ssh_key_added(pgcloud.event_envelope) IS 'Event handler of ssh_key.added: the SSH key read model.';

CREATE FUNCTION provisioning.on_ssh_key_deleted(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
BEGIN
    DELETE FROM provisioning.ssh_keys k
     WHERE k.key_id = pgcloud.payload_uuid(payload, CASE WHEN payload ? 'key_id' THEN 'key_id' ELSE 'id' END,
                                           event.aggregate_id);
END
$$;
COMMENT ON FUNCTION provisioning.on_ssh_key_deleted(pgcloud.event_envelope) IS 'Event handler of ssh_key.deleted: removes the key from the read model.';

CREATE FUNCTION provisioning.on_billing_force_release_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    a provisioning.allocations;
    v_user uuid := pgcloud.payload_uuid(payload, 'user_id', event.aggregate_id);
    ids uuid[];
    why text;
BEGIN
    IF jsonb_typeof(payload -> 'allocation_ids') NOT IN ('array', 'null')
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(payload -> 'allocation_ids', '[]')) e
                   WHERE jsonb_typeof(e) <> 'string'
                      OR (e #>> '{}') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$') THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field allocation_ids must be an array of uuids');
    END IF;
    ids := ARRAY(SELECT (e #>> '{}')::uuid FROM jsonb_array_elements(coalesce(payload -> 'allocation_ids', '[]')) e);
    why := 'billing: ' || coalesce(left(payload ->> 'reason', 400), 'force release');
    -- All the user's live allocations when no ids are given.
    FOR a IN SELECT * FROM provisioning.allocations x
              WHERE x.user_id = v_user AND x.state IN ('requested', 'provisioning', 'active')
                AND (cardinality(ids) = 0 OR x.id = ANY (ids))
              ORDER BY x.id FOR UPDATE
    LOOP
        PERFORM provisioning.begin_release(a, why, 'billing');
    END LOOP;
END
$$;
COMMENT ON FUNCTION provisioning.on_billing_force_release_requested(pgcloud.event_envelope) IS 'Event handler of billing.force_release_requested {user_id, allocation_ids, reason}: releases the user''s live allocations (all of them when no ids are given).';

CREATE FUNCTION provisioning.on_admin_force_release_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    a provisioning.allocations := provisioning.lock_allocation(payload, event.aggregate_id);
BEGIN
    IF a.state IN ('requested', 'provisioning', 'active') THEN
        PERFORM provisioning.begin_release(a, 'admin: ' || coalesce(left(payload ->> 'reason', 400), 'force release'),
                                           'admin');
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.on_admin_force_release_requested(pgcloud.event_envelope) IS 'Event handler of admin.force_release_requested {allocation_id, reason}: releases the allocation when it is live.';

CREATE FUNCTION provisioning.on_maas_machine_deployed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    a provisioning.allocations := provisioning.lock_allocation(payload, event.aggregate_id);
BEGIN
    IF a.state = 'provisioning' THEN
        PERFORM provisioning.activate(a, payload);
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.on_maas_machine_deployed(pgcloud.event_envelope) IS 'Event handler of maas.machine_deployed: activates a provisioning allocation (a late or repeated outcome changes nothing).';

CREATE FUNCTION provisioning.on_maas_deploy_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    a provisioning.allocations := provisioning.lock_allocation(payload, event.aggregate_id);
    why text := coalesce(left(payload ->> 'reason', 450), 'deployment failed');
BEGIN
    IF a.state IN ('requested', 'provisioning') THEN
        PERFORM provisioning.finish(a, 'failed', why);
    ELSIF a.state = 'releasing' THEN
        -- Released while deploying, and the deployment failed: nothing left to release.
        PERFORM provisioning.finish(a, 'released', a.reason || ' (deployment failed: ' || why || ')');
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.on_maas_deploy_failed(pgcloud.event_envelope) IS 'Event handler of maas.deploy_failed: fails the allocation (or finishes its release when it was being released).';

CREATE FUNCTION provisioning.on_maas_machine_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    payload jsonb := event.payload;
    a provisioning.allocations := provisioning.lock_allocation(payload, event.aggregate_id);
BEGIN
    IF a.state = 'releasing' THEN
        PERFORM provisioning.finish(a, 'released',
            a.reason || CASE WHEN payload ->> 'reason' IS NOT NULL
                             THEN ' (' || left(payload ->> 'reason', 300) || ')' ELSE '' END);
    ELSIF a.state IN ('requested', 'provisioning') THEN
        PERFORM provisioning.finish(a, 'failed',
            'MAAS released the machine before it was deployed'
            || CASE WHEN payload ->> 'reason' IS NOT NULL THEN ': ' || left(payload ->> 'reason', 300) ELSE '' END);
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.on_maas_machine_released(pgcloud.event_envelope) IS 'Event handler of maas.machine_released: finishes a release, or fails an allocation MAAS released before it was deployed.';
