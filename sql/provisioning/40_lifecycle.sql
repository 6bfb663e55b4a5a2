-- The rest of the lifecycle: active, releasing, released, failed; reading.

CREATE FUNCTION provisioning.ended_payload(a provisioning.allocations) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
    SELECT jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'ended_at', a.ended_at,
                              'reason', a.reason, 'started_at', a.started_at, 'released_by', a.released_by,
                              'node_id', a.node_id, 'node_hostname', a.node_hostname,
                              'slots', to_jsonb(a.slot_indexes), 'gpu_count', a.gpu_count,
                              'price_per_hour', a.price_per_hour, 'currency', a.currency)
$$;
COMMENT ON FUNCTION provisioning.ended_payload(provisioning.allocations) IS 'Payload of allocation.released and allocation.failed: allocation_id, user_id, sku, ended_at, reason, started_at (NULL when it never became active: nothing to bill), released_by, node, slots, gpu_count, price.';

-- provisioning -> active, on maas.machine_deployed.
CREATE FUNCTION provisioning.activate(a provisioning.allocations, deployed jsonb) RETURNS provisioning.allocations
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    UPDATE provisioning.allocations x SET state = 'active', started_at = now(), updated_at = now()
     WHERE x.id = a.id RETURNING * INTO a;
    PERFORM pgcloud.emit('allocation.activated', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku,
                           'price_per_hour', a.price_per_hour, 'currency', a.currency, 'started_at', a.started_at,
                           'requested_at', a.requested_at, 'node_hostname', a.node_hostname, 'node_id', a.node_id, 'region', a.region,
                           'gpu_count', a.gpu_count, 'slots', to_jsonb(a.slot_indexes), 'image', a.image,
                           'ip_addresses', coalesce(deployed -> 'ip_addresses', '[]'::jsonb))
        || jsonb_strip_nulls(jsonb_build_object('ssh_principal', deployed -> 'ssh_principal', 'login', deployed -> 'login')));
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.activate(provisioning.allocations, jsonb) IS 'Makes a provisioning allocation active and emits allocation.activated {allocation_id, user_id, sku, price_per_hour, currency, started_at, node_hostname, ..., ssh_principal and login from maas.machine_deployed}: billing starts here.';

-- -> releasing: the slots stay held until MAAS has released the machine.
CREATE FUNCTION provisioning.begin_release(a provisioning.allocations, why text, who text) RETURNS provisioning.allocations
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    UPDATE provisioning.allocations x
       SET state = 'releasing', releasing_at = now(), reason = left(why, 500), released_by = who, updated_at = now()
     WHERE x.id = a.id RETURNING * INTO a;
    PERFORM pgcloud.emit('allocation.releasing', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'reason', a.reason,
                           'released_by', a.released_by, 'releasing_at', a.releasing_at,
                           'started_at', a.started_at));
    PERFORM pgcloud.emit('release.requested', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'node_id', a.node_id,
                           'maas_system_id', a.maas_system_id, 'node_hostname', a.node_hostname,
                           'image', a.image, 'distro_series', a.distro_series,
                           'ssh_public_keys', to_jsonb(a.ssh_public_keys), 'reason', a.reason));
    PERFORM pgcloud.audit(CASE who WHEN 'user' THEN 'allocation.release_requested' ELSE 'allocation.force_released' END,
        'allocation', a.id::text, 'ok',
        jsonb_build_object('by', who, 'reason', a.reason, 'user_id', a.user_id, 'node', a.node_hostname));
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.begin_release(provisioning.allocations, text, text) IS 'Moves a live allocation to releasing (who: user, admin or billing) and writes the release intent (release.requested); audited as allocation.release_requested or allocation.force_released.';

-- -> released or failed: the claims go, the node's counters follow.
CREATE FUNCTION provisioning.finish(a provisioning.allocations, final_state text, why text) RETURNS provisioning.allocations
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    freed integer;
BEGIN
    -- Node row first: the same lock order as placement.
    UPDATE provisioning.nodes x
       SET free_slots = x.free_slots + a.gpu_count, live_allocations = x.live_allocations - 1,
           current_image = CASE WHEN x.live_allocations = 1 THEN NULL ELSE x.current_image END,
           current_user_id = CASE WHEN x.live_allocations = 1 THEN NULL ELSE x.current_user_id END
     WHERE x.node_id = a.node_id;
    DELETE FROM provisioning.slot_claims c WHERE c.allocation_id = a.id;
    GET DIAGNOSTICS freed = ROW_COUNT;
    IF freed <> a.gpu_count THEN
        RAISE EXCEPTION 'allocation % held % slots, not %', a.id, freed, a.gpu_count;
    END IF;
    UPDATE provisioning.allocations x
       SET state = final_state, reason = coalesce(left(why, 500), x.reason),
           -- Billing ends when MAAS confirms (maas.machine_released), not at
           -- the request: until then the machine may still run.
           ended_at = now(),
           updated_at = now()
     WHERE x.id = a.id RETURNING * INTO a;
    PERFORM pgcloud.emit('allocation.' || final_state, 'allocation', a.id::text, provisioning.ended_payload(a));
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.finish(provisioning.allocations, text, text) IS 'Ends a live allocation (released or failed): frees its slots and the node''s counters and emits allocation.released / allocation.failed {allocation_id, user_id, sku, ended_at, reason, ...}.';

CREATE FUNCTION provisioning.release_allocation_apply(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_id uuid := p_id;
    a provisioning.allocations;
BEGIN
    IF v_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'id is required');
    END IF;
    -- Someone else's allocation is as unknown as a missing one (operators may release any).
    SELECT * INTO a FROM provisioning.allocations x
     WHERE x.id = v_id AND (x.user_id = v_user OR pgcloud.request_role() = 'pgcloud_admin') FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', v_id));
    END IF;
    IF a.state IN ('requested', 'provisioning', 'active') THEN
        a := provisioning.begin_release(a, 'released by the user', 'user');
    END IF;
    RETURN provisioning.allocation_json(a);
END
$$;
COMMENT ON FUNCTION provisioning.release_allocation_apply(uuid) IS 'Internal to api.release_allocation() (which authorizes): a live allocation goes to releasing (release.requested), an allocation already releasing or ended is returned as it is.';

CREATE FUNCTION api.release_allocation(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('provisioning.release_allocation', jsonb_build_object('id', id)),
                    pgcloud.idempotent_done('provisioning.release_allocation', provisioning.release_allocation_apply(id)));
END
$$;
COMMENT ON FUNCTION api.release_allocation(id uuid) IS 'Releases one of your allocations: it goes to releasing at once (no new access is minted from then) and to released when MAAS has released the machine; billing stops then. A release MAAS cannot complete keeps the allocation releasing (and billed) until an operator decides (api.admin_end_stuck_release). Releasing an allocation that is already releasing, released or failed changes nothing. Returns the allocation; another user''s or an unknown id is 404 allocation_not_found. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.release_allocation(uuid)', 'user', 'admin');

CREATE FUNCTION api.get_allocation(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid;
    a provisioning.allocations;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    SELECT * INTO a FROM provisioning.allocations x
     WHERE x.id = get_allocation.id AND (x.user_id = v_user OR pgcloud.request_role() = 'pgcloud_admin');
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', get_allocation.id));
    END IF;
    RETURN provisioning.allocation_json(a);
END
$$;
COMMENT ON FUNCTION api.get_allocation(id uuid) IS 'One of your allocations: {id, state, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ssh_key_ids, reason, released_by, requested_at, started_at, releasing_at, ended_at}. state is provisioning while MAAS deploys, active once deployed, releasing, released, or failed (reason says why). Another user''s or an unknown id is 404 allocation_not_found.';
SELECT pgcloud.expose('api.get_allocation(uuid)', 'user', 'admin');

CREATE FUNCTION api.list_allocations() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    RETURN coalesce((SELECT jsonb_agg(provisioning.allocation_json(a) ORDER BY a.requested_at DESC, a.id)
                       FROM (SELECT * FROM provisioning.allocations x WHERE x.user_id = v_user
                              ORDER BY x.requested_at DESC, x.id
                              LIMIT pgcloud.policy('provisioning.list_limit', NULL::integer)) a), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_allocations() IS 'Your allocations, newest first (at most provisioning.list_limit), in the form of api.get_allocation().';
SELECT pgcloud.expose('api.list_allocations()', 'user', 'admin');
