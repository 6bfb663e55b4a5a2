-- Events in: MAAS statuses (maas.machine_commissioned, maas.machine_status_changed)
-- and slot claims (allocation.requested / released / failed). One handler per
-- subscribed event type, inventory.on_<type>(pgcloud.event_envelope), called
-- by the core's delivery with the inbox row in the same transaction.

-- The node a MAAS event is about: by node_id when given, else by system id
-- among nodes not retired. NULL when inventory does not know it.
CREATE FUNCTION inventory.node_of_machine(payload jsonb) RETURNS inventory.nodes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
BEGIN
    IF payload ? 'node_id' AND jsonb_typeof(payload -> 'node_id') = 'string' THEN
        SELECT * INTO n FROM inventory.nodes x
         WHERE x.id = pgcloud.payload_uuid(payload, 'node_id') AND x.state <> 'retired' FOR UPDATE;
        IF FOUND THEN
            RETURN n;
        END IF;
    END IF;
    IF jsonb_typeof(payload -> 'system_id') IS DISTINCT FROM 'string' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field system_id must be a string');
    END IF;
    SELECT * INTO n FROM inventory.nodes x
     WHERE x.maas_system_id = payload ->> 'system_id' AND x.state <> 'retired' FOR UPDATE;
    RETURN n;
END
$$;
COMMENT ON FUNCTION inventory.node_of_machine(jsonb) IS 'The (locked) node a maas.* event is about, by node_id or else MAAS system id; NULL when unknown or retired.';

CREATE FUNCTION inventory.set_node_state(n inventory.nodes, new_state text, reason text) RETURNS inventory.nodes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    prev text := n.state;
BEGIN
    UPDATE inventory.nodes x SET state = new_state, state_reason = left(reason, 500), updated_at = now()
     WHERE x.id = n.id
    RETURNING * INTO n;
    PERFORM pgcloud.audit('node.state_changed', 'node', n.id::text, 'ok',
        jsonb_build_object('hostname', n.hostname, 'previous_state', prev, 'state', n.state, 'reason', n.state_reason));
    PERFORM inventory.announce_node(n, 'node.state_changed', prev);
    RETURN n;
END
$$;
COMMENT ON FUNCTION inventory.set_node_state(inventory.nodes, text, text) IS 'Moves a node to a new state on MAAS''s word (guarded by the transition trigger); audited and announced as node.state_changed.';

CREATE FUNCTION inventory.on_maas_machine_commissioned(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    payload jsonb := event.payload;
    n inventory.nodes := inventory.node_of_machine(payload);
BEGIN
    IF n.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE inventory.nodes x SET maas_status = coalesce(left(payload ->> 'status_name', 64), x.maas_status)
     WHERE x.id = n.id RETURNING * INTO n;
    IF n.state IN ('commissioning', 'failed', 'broken') THEN
        PERFORM inventory.set_node_state(n, 'ready', 'commissioned by MAAS');
    END IF;
END
$$;
COMMENT ON FUNCTION inventory.on_maas_machine_commissioned(pgcloud.event_envelope) IS 'Event handler of maas.machine_commissioned: a commissioning (or failed, broken) node becomes ready.';

CREATE FUNCTION inventory.on_maas_machine_status_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    payload jsonb := event.payload;
    n inventory.nodes := inventory.node_of_machine(payload);
    target text;
    v_image text;
    cached boolean := false;
    why text;
BEGIN
    IF n.id IS NULL THEN
        RETURN;
    END IF;
    UPDATE inventory.nodes x SET maas_status = coalesce(left(payload ->> 'status_name', 64), x.maas_status)
     WHERE x.id = n.id RETURNING * INTO n;
    -- A deployment leaves its image in the node's cache.
    v_image := payload ->> 'image';
    IF payload ->> 'status_name' = 'Deployed' AND v_image IS NOT NULL
       AND EXISTS (SELECT 1 FROM inventory.images i WHERE i.code = v_image) THEN
        INSERT INTO inventory.node_image_cache AS c (node_id, image) VALUES (n.id, v_image)
        ON CONFLICT (node_id, image) DO UPDATE SET cached_at = now()
        RETURNING (xmax = 0) INTO cached;
    END IF;
    target := payload ->> 'node_state';
    why := coalesce(payload ->> 'reason',
                    format('MAAS status %s%s', payload ->> 'status_name',
                           CASE WHEN coalesce(payload ->> 'status_message', '') <> ''
                                THEN ': ' || (payload ->> 'status_message') ELSE '' END));
    -- Operator states (maintenance, retired) are not MAAS's to change.
    IF target = 'failed' AND n.state = 'commissioning'
       OR target = 'broken' AND n.state IN ('ready', 'commissioning', 'failed')
       OR target = 'ready' AND n.state = 'broken'
       OR target = 'commissioning' AND n.state IN ('failed', 'broken') THEN
        PERFORM inventory.set_node_state(n, target, why);
    ELSIF cached THEN
        PERFORM inventory.announce_node(n, 'node.state_changed', n.state);
    END IF;
END
$$;
COMMENT ON FUNCTION inventory.on_maas_machine_status_changed(pgcloud.event_envelope) IS 'Event handler of maas.machine_status_changed: applies the node_state MAAS''s status maps to (failed, broken, ready, commissioning; never over maintenance or retired) and records deployed images in the node''s cache.';

CREATE FUNCTION inventory.on_allocation_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    payload jsonb := event.payload;
    v_alloc uuid := pgcloud.payload_uuid(payload, 'allocation_id', event.aggregate_id);
BEGIN
    IF jsonb_typeof(payload -> 'slots') IS DISTINCT FROM 'array' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field slots must be an array of slot numbers');
    END IF;
    UPDATE inventory.slots s SET allocation_id = v_alloc, claimed_at = now()
     WHERE s.node_id = pgcloud.payload_uuid(payload, 'node_id')
       AND s.slot_index IN (SELECT (e #>> '{}')::integer FROM jsonb_array_elements(payload -> 'slots') e
                             WHERE jsonb_typeof(e) = 'number');
END
$$;
COMMENT ON FUNCTION inventory.on_allocation_requested(pgcloud.event_envelope) IS 'Event handler of allocation.requested: the allocation claims its slots.';

-- allocation.released and allocation.failed free the allocation's slots.
CREATE FUNCTION inventory.free_slots(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
    UPDATE inventory.slots s SET allocation_id = NULL, claimed_at = NULL
     WHERE s.allocation_id = pgcloud.payload_uuid(event.payload, 'allocation_id', event.aggregate_id)
$$;
COMMENT ON FUNCTION inventory.free_slots(pgcloud.event_envelope) IS 'allocation.released / allocation.failed: frees the slots the allocation claimed.';

CREATE FUNCTION inventory.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$ SELECT inventory.free_slots(event) $$;
COMMENT ON FUNCTION inventory.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: frees its slots (inventory.free_slots).';

CREATE FUNCTION inventory.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$ SELECT inventory.free_slots(event) $$;
COMMENT ON FUNCTION inventory.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: frees its slots (inventory.free_slots).';
