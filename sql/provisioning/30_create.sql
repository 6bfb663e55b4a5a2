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

-- Its statements are planned once per session (generic plans: every
-- placement would otherwise plan the find-and-claim statement afresh, which
-- cost as much as running it), and by index (a plan made while a table is
-- nearly empty, in a new deployment or after a quiet night, would otherwise
-- read it whole on every placement as it fills: the slot claims, the user's
-- live allocations).
CREATE FUNCTION provisioning.create_allocation_apply(p_sku text, p_image text, p_ssh_key_ids uuid[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_sku text := p_sku;
    v_image text := p_image;
    k provisioning.skus;
    img provisioning.images;
    key_ids uuid[];
    keys text[];
    missing text;
    max_keys integer := pgcloud.policy('provisioning.max_ssh_keys_per_allocation', NULL::integer);
    max_live integer := pgcloud.policy('provisioning.max_live_allocations_per_user', NULL::integer);
    std provisioning.account_standing;
    need numeric;
    reserve boolean;
    secs bigint;
    n_live bigint;
    reserved numeric;
    bal bigint;
    n provisioning.nodes;
    a provisioning.allocations;
    v_slots integer[];
    v_id uuid;
    v_node uuid;
    ev uuid;
    audit_id bigint;
    r record;
BEGIN
    IF v_sku IS NULL OR v_image IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'sku and image are required');
    END IF;
    -- One statement reads the SKU, the image and the user's standing, and
    -- takes the lock that serialises one user's creations (see below; the
    -- statements after this one see what committed before the lock was
    -- granted). Each read is its own statement's worth of executor start-up
    -- otherwise.
    SELECT s AS sku, i AS img, x AS std,
           pg_advisory_xact_lock(hashtextextended('provisioning.allocations/' || v_user::text, 0)) AS locked
      INTO r
      FROM (SELECT) o
      LEFT JOIN provisioning.skus s ON s.code = v_sku
      LEFT JOIN provisioning.images i ON i.code = v_image
      LEFT JOIN provisioning.account_standing x ON x.user_id = v_user;
    IF (r.sku).code IS NULL THEN
        PERFORM pgcloud.raise('sku_not_found', format('no SKU %s', left(v_sku, 64)), 'See api.list_skus().');
    END IF;
    k := r.sku;
    IF (r.img).code IS NULL THEN
        PERFORM pgcloud.raise('image_not_found', format('no image %s', left(v_image, 64)), 'See api.list_images().');
    END IF;
    img := r.img;
    -- Standing, from billing's last report: refused unless good or low with
    -- a balance of at least min_balance_to_allocate (insufficient_balance,
    -- 402, for no report, standing insufficient or exhausted, or a low
    -- balance; account_not_in_good_standing, 403, for any other standing).
    std := r.std;
    IF std.user_id IS NULL THEN
        PERFORM pgcloud.raise('insufficient_balance',
            'billing has not reported a balance for this account yet; a new account has a balance of 0',
            'Top up your balance; allocations can be created once it covers the minimum.');
    END IF;
    IF std.standing IN ('insufficient', 'exhausted') THEN
        PERFORM pgcloud.raise('insufficient_balance',
            format('billing reports the account as %s (balance %s %s)', std.standing, std.balance, std.currency),
            'Top up your balance.');
    END IF;
    IF std.standing NOT IN ('good', 'low') THEN
        PERFORM pgcloud.raise('account_not_in_good_standing', format('billing reports the account as %s', std.standing),
            'Contact support.');
    END IF;
    need := coalesce(std.min_balance_to_allocate, pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint));
    IF std.balance IS NULL OR std.balance < need THEN
        PERFORM pgcloud.raise('insufficient_balance',
            format('the balance is %s %s; creating an allocation needs at least %s', coalesce(std.balance::text, 'unknown'),
                   std.currency, need),
            'Top up your balance.');
    END IF;

    -- SSH keys: the caller's own, in the order given, each once (none asked
    -- for: nothing to read).
    IF coalesce(cardinality(p_ssh_key_ids), 0) = 0 THEN
        key_ids := '{}';
        keys := '{}';
    ELSE
        key_ids := ARRAY(SELECT u.id FROM (SELECT x.e AS id, min(x.o) AS o
                                             FROM unnest(p_ssh_key_ids) WITH ORDINALITY x (e, o)
                                            GROUP BY 1) u
                          WHERE u.id IS NOT NULL ORDER BY u.o);
        IF cardinality(key_ids) > max_keys THEN
            PERFORM pgcloud.raise('invalid_argument', format('at most %s SSH keys per allocation', max_keys));
        END IF;
        keys := ARRAY(SELECT s.public_key FROM unnest(key_ids) WITH ORDINALITY u (id, o)
                        JOIN provisioning.ssh_keys s ON s.key_id = u.id AND s.user_id = v_user ORDER BY u.o);
        IF cardinality(keys) <> cardinality(key_ids) THEN
            SELECT string_agg(u.id::text, ', ') INTO missing FROM unnest(key_ids) u (id)
             WHERE NOT EXISTS (SELECT 1 FROM provisioning.ssh_keys s WHERE s.key_id = u.id AND s.user_id = v_user);
            PERFORM pgcloud.raise('allocation_ssh_key_not_found', format('not your SSH key: %s', missing),
                'See api.list_ssh_keys(); a key added a moment ago may take a second to be known here.');
        END IF;
    END IF;

    -- One user's creations are serialised (the lock taken by the first
    -- statement above) so the limit holds, and so does the balance check,
    -- which is a reservation: every live allocation of the user, and this
    -- one, holds its first accrual interval against the balance (policy
    -- provisioning.reserve_first_interval), so concurrent creations cannot
    -- overdraw it. Under the lock, one statement (its snapshot taken after
    -- the lock was granted) reads the user's live allocations (how many,
    -- what they reserve) and billing's report as it is now.
    reserve := pgcloud.policy('provisioning.reserve_first_interval', NULL::boolean);
    IF reserve THEN
        secs := pgcloud.policy('billing.accrual_interval_seconds', NULL::bigint);
    END IF;
    SELECT l.n, l.reserved, x.balance, x.currency, x.min_balance_to_allocate
      INTO n_live, reserved, bal, std.currency, std.min_balance_to_allocate
      FROM (SELECT count(*) AS n, coalesce(sum(ceil(y.price_per_hour::numeric * secs / 3600)), 0) AS reserved
              FROM provisioning.allocations y
             WHERE y.user_id = v_user AND y.state IN ('requested', 'provisioning', 'active', 'releasing')) l
      LEFT JOIN provisioning.account_standing x ON x.user_id = v_user;
    IF n_live >= max_live THEN
        PERFORM pgcloud.raise('allocation_limit_reached', format('at most %s live allocations per user', max_live),
            'Release an allocation you no longer use.');
    END IF;
    IF reserve THEN
        need := coalesce(std.min_balance_to_allocate, pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint))
                + reserved + ceil(k.price_per_hour::numeric * secs / 3600);
        IF bal IS NULL OR bal < need THEN
            PERFORM pgcloud.raise('insufficient_balance',
                format('the balance is %s %s; with the first interval of your %s live allocation(s) reserved (%s), another needs at least %s',
                       coalesce(bal::text, 'unknown'), std.currency, n_live, reserved, need),
                'Top up your balance, or release an allocation.');
        END IF;
    END IF;

    -- Find and claim in one statement: the node (a node of the user's
    -- already running the image, else an idle one with the image cached,
    -- else the fullest idle one that fits; each preference read in index
    -- order, nodes held by concurrent placements skipped, and a preference
    -- read only when the ones before it found nothing), locked, with the
    -- allocation and its lowest free slots, and the node's counts updated.
    -- The primary key of the claims is
    -- the last line: a slot taken by a transaction that committed after this
    -- statement's snapshot is skipped (ON CONFLICT), never double booked.
    IF pgcloud.policy('provisioning.node_tenancy', NULL::text) = 'shared' THEN
        -- A deployment has one default user: co-tenants would share it and
        -- each other's keys. Refused until each tenant gets its own account.
        PERFORM pgcloud.raise('policy_invalid',
            'provisioning.node_tenancy = shared is refused: the nodes would give every co-tenant the same account and keys',
            'Set provisioning.node_tenancy to single.');
    END IF;
    v_id := gen_random_uuid();
    FOR attempt IN 1 .. 2 LOOP
        WITH node AS (
            SELECT u.node_id, u.slot_count, u.hostname, u.maas_system_id FROM (
                -- (the node claim_node() locked, on the second attempt)
                (SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id
                   FROM provisioning.nodes x WHERE x.node_id = v_node)
                UNION ALL
                (SELECT y.* FROM (
                    SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id FROM provisioning.nodes x
                     WHERE v_node IS NULL AND x.state = 'ready' AND x.current_user_id = v_user
                       AND x.current_image = v_image AND x.gpu_model = k.gpu_model AND x.region = k.region
                       AND x.free_slots >= k.gpu_count
                     ORDER BY x.free_slots, x.node_id LIMIT 1
                       FOR UPDATE SKIP LOCKED) y)
                UNION ALL
                (SELECT y.* FROM (
                    SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id
                      FROM provisioning.idle_node_images c JOIN provisioning.nodes x ON x.node_id = c.node_id
                     WHERE v_node IS NULL AND c.image = v_image AND c.gpu_model = k.gpu_model
                       AND c.region = k.region AND c.free_slots >= k.gpu_count
                       AND x.state = 'ready' AND x.current_image IS NULL AND x.free_slots >= k.gpu_count
                     ORDER BY c.free_slots, c.node_id LIMIT 1
                       FOR UPDATE OF x SKIP LOCKED) y)
                UNION ALL
                (SELECT y.* FROM (
                    SELECT x.node_id, x.slot_count, x.hostname, x.maas_system_id FROM provisioning.nodes x
                     WHERE v_node IS NULL AND x.state = 'ready' AND x.current_image IS NULL
                       AND x.gpu_model = k.gpu_model AND x.region = k.region AND x.free_slots >= k.gpu_count
                     ORDER BY x.free_slots, x.node_id LIMIT 1
                       FOR UPDATE SKIP LOCKED) y)
            ) u LIMIT 1
        ), claim AS (
            INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id)
            -- The node's claimed slots are read once, by its index (an
            -- anti-join would hash every claim of the fleet per request).
            SELECT node.node_id, i, v_id
              FROM node
             CROSS JOIN LATERAL (SELECT ARRAY(SELECT c.slot_index FROM provisioning.slot_claims c
                                               WHERE c.node_id = node.node_id) OFFSET 0) t (taken)
             CROSS JOIN LATERAL generate_series(0, node.slot_count - 1) i
             WHERE i <> ALL (t.taken)
             ORDER BY i LIMIT k.gpu_count
            ON CONFLICT DO NOTHING
            RETURNING slot_index
        ), taken AS (
            -- The node's counts, image and user, what the index-ordered
            -- searches read (the row is ours: locked above; a version
            -- committed after this statement's snapshot is the one updated).
            UPDATE provisioning.nodes x
               SET free_slots = x.free_slots - k.gpu_count, live_allocations = x.live_allocations + 1,
                   current_image = img.code, current_user_id = coalesce(x.current_user_id, v_user)
              FROM node
             WHERE x.node_id = node.node_id
        )
        -- Written once, as it leaves this transaction: placed, and the
        -- deploy intent is written below (requested -> provisioning happens
        -- within this transaction, which no other one sees; the row starts
        -- in provisioning, an initial state allocation_transitions allows).
        -- maas deploys the node (or joins the deployment it already has) and
        -- answers with maas.machine_deployed or maas.deploy_failed.
        INSERT INTO provisioning.allocations (id, user_id, sku, image, distro_series, gpu_count, region, price_per_hour,
                                              currency, node_id, node_hostname, maas_system_id, ssh_key_ids,
                                              ssh_public_keys, slot_indexes, state, provisioning_at)
        SELECT v_id, v_user, k.code, img.code, img.distro_series, k.gpu_count, k.region, k.price_per_hour,
               k.currency, node.node_id, node.hostname, node.maas_system_id, key_ids, keys,
               coalesce((SELECT array_agg(c.slot_index ORDER BY c.slot_index) FROM claim c), '{}'), 'provisioning',
               now()
          FROM node
        RETURNING * INTO a;
        EXIT WHEN FOUND;
        -- Every fitting node is held by a concurrent placement, or none fits:
        -- claim_node() waits for the best one (or raises capacity_unavailable).
        n := provisioning.claim_node(k, v_image, v_user);
        v_node := n.node_id;
    END LOOP;
    IF a.id IS NULL THEN
        PERFORM pgcloud.raise('capacity_unavailable',
            format('no ready %s node in %s has %s free slots for image %s', k.gpu_model, k.region, k.gpu_count, v_image),
            'See api.marketplace() for free capacity, or try again later.');
    END IF;
    IF cardinality(a.slot_indexes) < k.gpu_count THEN
        -- A placement that committed after this statement's snapshot took
        -- some of the slots. The node's lock is ours now, so a fresh look
        -- sees every claim: take the rest (and write the allocation's slots
        -- again; this path alone updates the row).
        v_slots := a.slot_indexes;
        WITH c AS (
            INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id)
            SELECT a.node_id, i, a.id FROM provisioning.nodes x, generate_series(0, x.slot_count - 1) i
             WHERE x.node_id = a.node_id
               AND i <> ALL (ARRAY(SELECT y.slot_index FROM provisioning.slot_claims y WHERE y.node_id = a.node_id))
             ORDER BY i LIMIT k.gpu_count - cardinality(v_slots)
            ON CONFLICT DO NOTHING
            RETURNING slot_index)
        SELECT array_agg(s ORDER BY s) INTO v_slots FROM (SELECT unnest(v_slots) UNION ALL SELECT c.slot_index FROM c) z (s);
        IF coalesce(cardinality(v_slots), 0) <> k.gpu_count THEN
            PERFORM pgcloud.raise('capacity_conflict',
                format('node %s had %s of %s slots free', a.node_hostname, coalesce(cardinality(v_slots), 0), k.gpu_count));
        END IF;
        UPDATE provisioning.allocations x SET slot_indexes = v_slots WHERE x.id = a.id RETURNING * INTO a;
    END IF;

    -- The events and the audit entry are assignments, not PERFORM: PL/pgSQL
    -- evaluates a lone function call assigned to a variable as a simple
    -- expression, where PERFORM starts a query (an executor) for each. The
    -- allocation was inserted by this transaction, which no other one sees:
    -- nothing else emits for it before this commits (aggregate_locked).
    ev := pgcloud.emit('allocation.requested', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'image', a.image,
                           'gpu_count', a.gpu_count, 'region', a.region, 'node_id', a.node_id,
                           'node_hostname', a.node_hostname, 'slots', to_jsonb(a.slot_indexes),
                           'price_per_hour', a.price_per_hour, 'currency', a.currency, 'requested_at', a.requested_at), true);
    ev := pgcloud.emit('deploy.requested', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'node_id', a.node_id,
                           'maas_system_id', a.maas_system_id, 'node_hostname', a.node_hostname,
                           'image', a.image, 'distro_series', a.distro_series,
                           'ssh_public_keys', to_jsonb(a.ssh_public_keys)), true);
    ev := pgcloud.emit('allocation.provisioning', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'node_id', a.node_id,
                           'node_hostname', a.node_hostname, 'provisioning_at', a.provisioning_at), true);
    audit_id := pgcloud.audit('allocation.created', 'allocation', a.id::text, 'ok',
        jsonb_build_object('sku', a.sku, 'image', a.image, 'node', a.node_hostname, 'slots', to_jsonb(a.slot_indexes),
                           'price_per_hour', a.price_per_hour, 'currency', a.currency));
    RETURN provisioning.allocation_json(a);
END
$$;
COMMENT ON FUNCTION provisioning.create_allocation_apply(text, text, uuid[]) IS 'Internal to api.create_allocation() (which authorizes): checks standing (billing''s last report: good or low, with at least min_balance_to_allocate; insufficient_balance 402, account_not_in_good_standing 403), keys, the live allocation limit and the reservation of every live allocation''s first accrual interval (policy provisioning.reserve_first_interval), places the SKU and image with the SSH keys onto free slots and claims them, and writes the deploy intent (deploy.requested), all in the caller''s transaction. Audited as allocation.created.';

CREATE FUNCTION api.create_allocation(sku text, image text, ssh_key_ids uuid[] DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    caller text;
BEGIN
    caller := pgcloud.authorize('user');   -- (a simple expression: no query started)
    RETURN coalesce(
        pgcloud.idempotent('provisioning.create_allocation',
                           jsonb_build_object('sku', sku, 'image', image, 'ssh_key_ids', to_jsonb(ssh_key_ids))),
        pgcloud.idempotent_done('provisioning.create_allocation',
                                provisioning.create_allocation_apply(sku, image, ssh_key_ids)));
END
$$;
COMMENT ON FUNCTION api.create_allocation(text, text, uuid[]) IS 'Creates an allocation of a SKU running an OS image, with your SSH keys (ids from api.list_ssh_keys()) in its user data: places it onto free GPU slots (never double booked) and asks MAAS to deploy it. Returns the allocation ({id, state: provisioning, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ...}); it becomes active when the node is deployed (poll api.get_allocation(id)), and is billed from then. Refused: 402 insufficient_balance (billing reports too low a balance, or none yet), 403 account_not_in_good_standing, 404 sku_not_found / image_not_found / allocation_ssh_key_not_found, 409 capacity_unavailable, allocation_limit_reached. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.create_allocation(text, text, uuid[])', 'user', 'admin');
