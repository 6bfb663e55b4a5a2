-- Creating an allocation: standing, SSH keys, placement, claims, deploy intent.

-- (no SET clause, every name qualified, and STABLE like what it calls
-- (to_jsonb, jsonb_build_object): the planner inlines it into the calling
-- statement instead of parsing and planning its body on every call, which
-- it refuses for a function declared IMMUTABLE around stable calls)
CREATE FUNCTION provisioning.allocation_json(a provisioning.allocations) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.jsonb_build_object('id', a.id, 'state', a.state, 'sku', a.sku, 'image', a.image,
                              'gpu_count', a.gpu_count, 'region', a.region, 'node_hostname', a.node_hostname,
                              'slots', pg_catalog.to_jsonb(a.slot_indexes), 'price_per_hour', a.price_per_hour,
                              'currency', a.currency, 'ssh_key_ids', pg_catalog.to_jsonb(a.ssh_key_ids), 'reason', a.reason,
                              'released_by', a.released_by, 'requested_at', a.requested_at,
                              'started_at', a.started_at, 'releasing_at', a.releasing_at, 'ended_at', a.ended_at)
$$;
COMMENT ON FUNCTION provisioning.allocation_json(provisioning.allocations) IS 'The API form of an allocation: id, state, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ssh_key_ids, reason, released_by, requested_at, started_at, releasing_at, ended_at.';

-- The node to claim slots on, locked. See the placement policy at the top
-- of 00_catalogue.sql. Each preference is its own query on an index in
-- the order wanted (fewest free slots, then node id), so a placement reads a
-- few index entries, not every node; nodes held by concurrent placements are
-- skipped (SKIP LOCKED).
CREATE FUNCTION provisioning.claim_node(k provisioning.skus, v_image text, v_user uuid) RETURNS provisioning.nodes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    n provisioning.nodes;
    attempts integer := pgcloud.policy('provisioning.placement_attempts', NULL::integer);
    shared boolean := pgcloud.policy('provisioning.node_tenancy', NULL::text) = 'shared';
BEGIN
    IF shared THEN
        -- A deployment has one default user: co-tenants would share it and
        -- each other's keys. Refused until each tenant gets its own account.
        PERFORM pgcloud.raise('policy_invalid',
            'provisioning.node_tenancy = shared is refused: the nodes would give every co-tenant the same account and keys',
            'Set provisioning.node_tenancy to single.');
    END IF;
    FOR attempt IN 1 .. greatest(attempts, 1) LOOP
        -- 1. A node already running the image (with single tenancy: the user's own).
        IF shared THEN
            SELECT * INTO n FROM provisioning.nodes x
             WHERE x.state = 'ready' AND x.gpu_model = k.gpu_model AND x.region = k.region
               AND x.current_image = v_image AND x.free_slots >= k.gpu_count
             ORDER BY x.free_slots, x.node_id LIMIT 1
               FOR UPDATE SKIP LOCKED;
        ELSE
            SELECT * INTO n FROM provisioning.nodes x
             WHERE x.state = 'ready' AND x.current_user_id = v_user AND x.current_image = v_image
               AND x.gpu_model = k.gpu_model AND x.region = k.region AND x.free_slots >= k.gpu_count
             ORDER BY x.free_slots, x.node_id LIMIT 1
               FOR UPDATE SKIP LOCKED;
        END IF;
        IF FOUND THEN
            RETURN n;
        END IF;
        -- 2. An idle node with the image in its cache, the fullest that fits.
        SELECT * INTO n FROM provisioning.nodes x
         WHERE x.state = 'ready' AND x.current_image IS NULL AND x.gpu_model = k.gpu_model AND x.region = k.region
           AND x.free_slots >= k.gpu_count AND v_image = ANY (x.cached_images)
         ORDER BY x.free_slots, x.node_id LIMIT 1
           FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN n;
        END IF;
        -- 3. Any idle node, the fullest that fits.
        SELECT * INTO n FROM provisioning.nodes x
         WHERE x.state = 'ready' AND x.current_image IS NULL AND x.gpu_model = k.gpu_model AND x.region = k.region
           AND x.free_slots >= k.gpu_count
         ORDER BY x.free_slots, x.node_id LIMIT 1
           FOR UPDATE SKIP LOCKED;
        IF FOUND THEN
            RETURN n;
        END IF;
        -- 4. Every fitting node is held by a concurrent placement (or none
        -- fits): wait for the best one. After the wait the row is checked
        -- again as it now is; one that no longer fits is passed over.
        SELECT * INTO n FROM provisioning.nodes x
         WHERE x.state = 'ready' AND x.gpu_model = k.gpu_model AND x.region = k.region
           AND x.free_slots >= k.gpu_count AND (x.current_image IS NULL OR x.current_image = v_image)
           AND (shared OR x.current_user_id IS NULL OR x.current_user_id = v_user)
         ORDER BY x.current_image IS NOT NULL DESC, v_image = ANY (x.cached_images) DESC, x.free_slots, x.node_id
         LIMIT 1
           FOR UPDATE;
        IF FOUND THEN
            RETURN n;
        END IF;
        -- Look again (a fresh snapshot) unless nothing fits any more.
        EXIT WHEN NOT EXISTS (
            SELECT 1 FROM provisioning.nodes x
             WHERE x.state = 'ready' AND x.gpu_model = k.gpu_model AND x.region = k.region
               AND x.free_slots >= k.gpu_count AND (x.current_image IS NULL OR x.current_image = v_image)
               AND (shared OR x.current_user_id IS NULL OR x.current_user_id = v_user));
    END LOOP;
    PERFORM pgcloud.raise('capacity_unavailable',
        format('no ready %s node in %s has %s free slots for image %s', k.gpu_model, k.region, k.gpu_count, v_image),
        'See api.marketplace() for free capacity, or try again later.');
END
$$;
COMMENT ON FUNCTION provisioning.claim_node(provisioning.skus, text, uuid) IS 'Placement: the ready node the SKU and image of the user go on, locked (FOR UPDATE), within the node tenancy policy: a node already running the image, else an idle one with the image cached, else the fullest idle one that fits (ties: node id). Skips nodes other placements hold; waits only when all fitting nodes are held. Raises capacity_unavailable.';

-- Written in C (src/provisioning/create.c): authorize, idempotency, standing
-- (billing's last report: good or low, with at least min_balance_to_allocate;
-- insufficient_balance 402, account_not_in_good_standing 403), keys, the live
-- allocation limit and the reservation of every live allocation's first
-- accrual interval (policy provisioning.reserve_first_interval), placement
-- onto free slots and their claims, the deploy intent (deploy.requested) and
-- the audit entry (allocation.created), all in the caller's transaction. Its
-- statements are prepared once per backend with generic plans (every
-- placement would otherwise plan the find-and-claim statement afresh, which
-- cost as much as running it), and planned by index (enable_seqscan off: a
-- plan made while a table is nearly empty, in a new deployment or after a
-- quiet night, would otherwise read it whole on every placement as it
-- fills: the slot claims, the user's live allocations). One function instead
-- of a chain of PL/pgSQL functions, each with its SET clauses switched per
-- call.
CREATE FUNCTION api.create_allocation(sku text, image text, ssh_key_ids uuid[] DEFAULT '{}') RETURNS jsonb
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
SET enable_seqscan = off
AS 'MODULE_PATHNAME', 'pgcloud_provisioning_create_allocation';
COMMENT ON FUNCTION api.create_allocation(text, text, uuid[]) IS 'Creates an allocation of a SKU running an OS image, with your SSH keys (ids from api.list_ssh_keys()) in its user data: places it onto free GPU slots (never double booked) and asks MAAS to deploy it. Returns the allocation ({id, state: provisioning, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ...}); it becomes active when the node is deployed (poll api.get_allocation(id)), and is billed from then. Refused: 402 insufficient_balance (billing reports too low a balance, or none yet), 403 account_not_in_good_standing, 404 sku_not_found / image_not_found / allocation_ssh_key_not_found, 409 capacity_unavailable, allocation_limit_reached. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.create_allocation(text, text, uuid[])', 'user', 'admin');
