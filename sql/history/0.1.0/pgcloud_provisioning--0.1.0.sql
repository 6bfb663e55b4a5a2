-- pgcloud_provisioning install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_provisioning" to load this file. \quit

SELECT pgcloud.service_begin('provisioning');
-- source: sql/provisioning/00_provisioning.sql
-- pgcloud_provisioning: placement and the allocation lifecycle. Schema
-- provisioning, owned by pgcloud_svc_provisioning (created by pgcloud.service_begin).
--
-- Decisions (see also src/provisioning/README.md):
--   * Provisioning owns the slot claims: provisioning.slot_claims is keyed by
--     (node_id, slot_index), so a slot can never be held twice, whatever the
--     locks do. Placement is atomic with the claim, in the caller's
--     transaction. Inventory publishes the nodes and their slot counts
--     (node.registered / node.state_changed) and keeps a read model of the
--     claims for the marketplace.
--   * Placement policy: among ready nodes of the SKU's GPU model and region
--     with enough free slots and no live allocation of another image,
--     prefer (1) a node already running the image, (2) a node with the image
--     in its cache, (3) the fullest node that fits (fewest free slots; packs
--     GPUs and keeps whole nodes free for big SKUs), (4) node id. A node
--     being placed onto by a concurrent request is skipped (SKIP LOCKED);
--     only when every fitting node is busy does the request wait for the best.
--   * All allocations on a node run one OS image (one MAAS deployment of the
--     machine is shared by the allocations on it).
--   * Tenancy (policy provisioning.node_tenancy): single (default) places a
--     user's allocations only on nodes no other user holds slots on -- the
--     deployment's user data carries the user's SSH keys, so a machine is
--     never shared between users; shared packs any users' allocations onto
--     one node (for images that isolate users themselves).
--   * Standing: api.create_allocation() asks the read model fed by billing's
--     account.standing_changed. An account billing never reported on is
--     refused with insufficient_balance: a new account has a balance of 0.
--   * SSH keys: provisioning subscribes to releases' ssh_key.added /
--     ssh_key.deleted and resolves the ids given to create_allocation() into
--     public keys, which deploy.requested carries to maas.

-- Error catalogue. Codes other services may also catalogue are inserted with
-- ON CONFLICT DO NOTHING: the first install wins, the meaning is the same.
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('capacity_unavailable',         409, 'There is no free capacity for this SKU and image right now.', 'provisioning'),
    ('capacity_conflict',            409, 'The placement collided with a concurrent one; retry the request.', 'provisioning'),
    ('allocation_limit_reached',     409, 'You have reached the maximum number of live allocations.', 'provisioning'),
    ('allocation_ssh_key_not_found', 404, 'An SSH key given is not one of your keys.', 'provisioning');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('insufficient_balance',         402, 'Your balance is too low to create an allocation; top up first.', 'provisioning'),
    ('account_not_in_good_standing', 403, 'Your account is not in good standing.', 'provisioning'),
    ('sku_not_found',                404, 'The SKU does not exist.', 'provisioning'),
    ('image_not_found',              404, 'The OS image does not exist.', 'provisioning'),
    ('allocation_not_found',         404, 'The allocation does not exist.', 'provisioning')
ON CONFLICT (code) DO NOTHING;

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('provisioning.max_live_allocations_per_user', '32', 'Allocations one user may hold at once (requested, provisioning, active or releasing).'),
    ('provisioning.max_ssh_keys_per_allocation', '10', 'SSH keys one allocation may be deployed with.'),
    ('provisioning.placement_attempts', '20', 'Times a placement looks for a node again when the node it waited for filled up, before it gives up with capacity_unavailable.'),
    ('provisioning.list_limit', '500', 'Most allocations api.list_allocations() returns (newest first).'),
    ('provisioning.node_tenancy', '"single"', 'single: a node holds the allocations of one user at a time (they share its deployment and its SSH keys); shared: any users'' allocations are packed onto one node.'),
    ('provisioning.reserve_first_interval', 'true', 'Whether each live allocation reserves its first accrual interval (price x billing.accrual_interval_seconds) against the balance, so concurrent allocations cannot overdraw it.');

-- source: sql/provisioning/10_read_model.sql
-- Read models fed by events: SKUs, images and nodes (inventory), account
-- standing (billing), SSH public keys (releases).

CREATE TABLE provisioning.skus (
    code           text PRIMARY KEY,
    gpu_model      text NOT NULL,
    gpu_count      integer NOT NULL CHECK (gpu_count BETWEEN 1 AND 64),
    vcpus          integer,
    memory_gb      integer,
    disk_gb        integer,
    region         text NOT NULL,
    price_per_hour bigint NOT NULL CHECK (price_per_hour >= 0),
    currency       text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE provisioning.skus IS 'Read model of the SKU catalogue (from sku.upserted): the shape placed and the price an allocation is created with.';
COMMENT ON COLUMN provisioning.skus.code IS 'SKU code.';
COMMENT ON COLUMN provisioning.skus.gpu_model IS 'GPU model a node must have.';
COMMENT ON COLUMN provisioning.skus.gpu_count IS 'Slots an allocation holds.';
COMMENT ON COLUMN provisioning.skus.vcpus IS 'Virtual CPUs.';
COMMENT ON COLUMN provisioning.skus.memory_gb IS 'Memory (GB).';
COMMENT ON COLUMN provisioning.skus.disk_gb IS 'Local disk (GB).';
COMMENT ON COLUMN provisioning.skus.region IS 'Region a node must be in.';
COMMENT ON COLUMN provisioning.skus.price_per_hour IS 'Price per hour, integer minor units.';
COMMENT ON COLUMN provisioning.skus.currency IS 'Currency of the price.';
COMMENT ON COLUMN provisioning.skus.updated_at IS 'When the last sku.upserted was applied.';

CREATE TABLE provisioning.images (
    code          text PRIMARY KEY,
    distro_series text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE provisioning.images IS 'Read model of the OS images (from image.upserted).';
COMMENT ON COLUMN provisioning.images.code IS 'Image code.';
COMMENT ON COLUMN provisioning.images.distro_series IS 'MAAS distro_series deployed for it.';
COMMENT ON COLUMN provisioning.images.updated_at IS 'When the last image.upserted was applied.';

CREATE TABLE provisioning.nodes (
    node_id          uuid PRIMARY KEY,
    hostname         text NOT NULL,
    maas_system_id   text NOT NULL,
    sku              text,
    region           text NOT NULL,
    gpu_model        text NOT NULL,
    slot_count       integer NOT NULL CHECK (slot_count BETWEEN 1 AND 64),
    state            text NOT NULL,
    cached_images    text[] NOT NULL DEFAULT '{}',
    free_slots       integer NOT NULL,
    live_allocations integer NOT NULL DEFAULT 0 CHECK (live_allocations >= 0),
    current_image    text,
    current_user_id  uuid,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (free_slots BETWEEN 0 AND slot_count),
    CHECK ((live_allocations = 0) = (current_image IS NULL)),
    CHECK ((live_allocations = 0) = (current_user_id IS NULL))
);
-- Placement's three preferences, each in the order wanted (see claim_node).
CREATE INDEX nodes_running_idx ON provisioning.nodes (gpu_model, region, current_image, free_slots, node_id)
    WHERE state = 'ready' AND current_image IS NOT NULL;
CREATE INDEX nodes_user_idx ON provisioning.nodes (current_user_id, current_image, free_slots, node_id)
    WHERE state = 'ready' AND current_user_id IS NOT NULL;
CREATE INDEX nodes_idle_idx ON provisioning.nodes (gpu_model, region, free_slots, node_id)
    WHERE state = 'ready' AND current_image IS NULL;
COMMENT ON TABLE provisioning.nodes IS 'Read model of the nodes (from node.registered / node.state_changed) plus provisioning''s own placement state: free slots, live allocations and the image they run. Placement locks the node row it claims slots on.';
COMMENT ON COLUMN provisioning.nodes.node_id IS 'Node id (inventory''s).';
COMMENT ON COLUMN provisioning.nodes.hostname IS 'Hostname.';
COMMENT ON COLUMN provisioning.nodes.maas_system_id IS 'MAAS system id.';
COMMENT ON COLUMN provisioning.nodes.sku IS 'The SKU the node was registered with.';
COMMENT ON COLUMN provisioning.nodes.region IS 'Region.';
COMMENT ON COLUMN provisioning.nodes.gpu_model IS 'GPU model.';
COMMENT ON COLUMN provisioning.nodes.slot_count IS 'Slots (GPUs) of the node.';
COMMENT ON COLUMN provisioning.nodes.state IS 'Inventory''s lifecycle state; only ready nodes are placed onto.';
COMMENT ON COLUMN provisioning.nodes.cached_images IS 'Images in the node''s cache (placement prefers them).';
COMMENT ON COLUMN provisioning.nodes.free_slots IS 'slot_count minus the slots claimed (kept with the claims, under the node''s row lock; provisioning.capacity_problems checks it).';
COMMENT ON COLUMN provisioning.nodes.live_allocations IS 'Allocations holding slots on the node.';
COMMENT ON COLUMN provisioning.nodes.current_image IS 'The image those allocations run (one MAAS deployment per node); NULL when none.';
COMMENT ON COLUMN provisioning.nodes.current_user_id IS 'The user of the first live allocation on the node (with single tenancy: the only user placed onto it); NULL when none.';
COMMENT ON COLUMN provisioning.nodes.updated_at IS 'When the last node event was applied.';

CREATE TABLE provisioning.account_standing (
    user_id                 uuid PRIMARY KEY,
    standing                text NOT NULL,
    balance                 bigint,
    currency                text,
    min_balance_to_allocate bigint,
    as_of                   timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE provisioning.account_standing IS 'Read model of account standing (from billing''s account.standing_changed): whether a user may create allocations.';
COMMENT ON COLUMN provisioning.account_standing.user_id IS 'The user (account).';
COMMENT ON COLUMN provisioning.account_standing.standing IS 'Billing''s word: good or low allow allocating (with the balance check); insufficient or exhausted mean top up; anything else (e.g. suspended) refuses.';
COMMENT ON COLUMN provisioning.account_standing.balance IS 'Balance in minor units when billing reported it.';
COMMENT ON COLUMN provisioning.account_standing.currency IS 'Currency of the balance.';
COMMENT ON COLUMN provisioning.account_standing.min_balance_to_allocate IS 'Balance needed to allocate, as billing reported it (else policy billing.min_balance_to_allocate).';
COMMENT ON COLUMN provisioning.account_standing.as_of IS 'Billing''s time of the report, when it gave one: an older report does not replace a newer one.';
COMMENT ON COLUMN provisioning.account_standing.updated_at IS 'When the last report was applied.';

CREATE TABLE provisioning.ssh_keys (
    key_id      uuid PRIMARY KEY,
    user_id     uuid NOT NULL,
    public_key  text NOT NULL CHECK (public_key ~ '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$'),
    fingerprint text,
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ssh_keys_user_idx ON provisioning.ssh_keys (user_id);
COMMENT ON TABLE provisioning.ssh_keys IS 'Read model of users'' SSH public keys (from ssh_key.added / ssh_key.deleted), for the deploy user data.';
COMMENT ON COLUMN provisioning.ssh_keys.key_id IS 'Key id (releases'').';
COMMENT ON COLUMN provisioning.ssh_keys.user_id IS 'Owner.';
COMMENT ON COLUMN provisioning.ssh_keys.public_key IS 'Canonical public key ("<type> <base64>").';
COMMENT ON COLUMN provisioning.ssh_keys.fingerprint IS 'SHA256 fingerprint.';
COMMENT ON COLUMN provisioning.ssh_keys.added_at IS 'When the event was applied.';

-- source: sql/provisioning/20_allocations.sql
-- Allocations, their state machine, and slot claims.

CREATE TABLE provisioning.allocation_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE provisioning.allocation_transitions IS 'Allowed changes of provisioning.allocations.state (from_state NULL: initial state).';
COMMENT ON COLUMN provisioning.allocation_transitions.from_state IS 'State before, NULL for a new allocation.';
COMMENT ON COLUMN provisioning.allocation_transitions.to_state IS 'State after.';
INSERT INTO provisioning.allocation_transitions (from_state, to_state) VALUES
    (NULL, 'requested'),
    ('requested', 'provisioning'), ('requested', 'failed'),
    ('provisioning', 'active'), ('provisioning', 'failed'), ('provisioning', 'releasing'),
    ('active', 'releasing'),
    ('releasing', 'released');

CREATE TABLE provisioning.allocations (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    sku             text NOT NULL,
    image           text NOT NULL,
    distro_series   text NOT NULL,
    gpu_count       integer NOT NULL CHECK (gpu_count BETWEEN 1 AND 64),
    region          text NOT NULL,
    price_per_hour  bigint NOT NULL CHECK (price_per_hour >= 0),
    currency        text NOT NULL,
    node_id         uuid NOT NULL REFERENCES provisioning.nodes (node_id),
    node_hostname   text NOT NULL,
    maas_system_id  text NOT NULL,
    slot_indexes    integer[] NOT NULL DEFAULT '{}',
    ssh_key_ids     uuid[] NOT NULL DEFAULT '{}',
    ssh_public_keys text[] NOT NULL DEFAULT '{}',
    state           text NOT NULL CHECK (state IN ('requested', 'provisioning', 'active', 'releasing', 'released', 'failed')),
    reason          text,
    released_by     text CHECK (released_by IN ('user', 'admin', 'billing')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    provisioning_at timestamptz,
    started_at      timestamptz,
    releasing_at    timestamptz,
    ended_at        timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_user_idx ON provisioning.allocations (user_id, requested_at DESC);
CREATE INDEX allocations_live_idx ON provisioning.allocations (user_id)
    WHERE state IN ('requested', 'provisioning', 'active', 'releasing');
CREATE INDEX allocations_node_idx ON provisioning.allocations (node_id)
    WHERE state IN ('requested', 'provisioning', 'active', 'releasing');
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON provisioning.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'provisioning.allocation_transitions');
COMMENT ON TABLE provisioning.allocations IS 'Allocations and their placement: requested -> provisioning -> active -> releasing -> released, and failed (guarded by pgcloud.transition()). The node and slots are the placement; slots are held (provisioning.slot_claims) until released or failed.';
COMMENT ON COLUMN provisioning.allocations.id IS 'Allocation id.';
COMMENT ON COLUMN provisioning.allocations.user_id IS 'The owner (JWT sub), billed for it.';
COMMENT ON COLUMN provisioning.allocations.sku IS 'SKU allocated.';
COMMENT ON COLUMN provisioning.allocations.image IS 'OS image deployed.';
COMMENT ON COLUMN provisioning.allocations.distro_series IS 'MAAS distro series of the image at request time.';
COMMENT ON COLUMN provisioning.allocations.gpu_count IS 'Slots held.';
COMMENT ON COLUMN provisioning.allocations.region IS 'Region.';
COMMENT ON COLUMN provisioning.allocations.price_per_hour IS 'Price per hour at request time, integer minor units (what billing charges, from allocation.activated).';
COMMENT ON COLUMN provisioning.allocations.currency IS 'Currency of the price.';
COMMENT ON COLUMN provisioning.allocations.node_id IS 'Node placed onto.';
COMMENT ON COLUMN provisioning.allocations.node_hostname IS 'Its hostname.';
COMMENT ON COLUMN provisioning.allocations.maas_system_id IS 'Its MAAS system id.';
COMMENT ON COLUMN provisioning.allocations.slot_indexes IS 'Slots (GPU indexes) on the node.';
COMMENT ON COLUMN provisioning.allocations.ssh_key_ids IS 'SSH keys the user asked to be deployed.';
COMMENT ON COLUMN provisioning.allocations.ssh_public_keys IS 'Those keys'' public keys at request time (deploy user data).';
COMMENT ON COLUMN provisioning.allocations.state IS 'requested, provisioning, active, releasing, released or failed.';
COMMENT ON COLUMN provisioning.allocations.reason IS 'Why it was released or failed.';
COMMENT ON COLUMN provisioning.allocations.released_by IS 'Who asked for the release: user, admin or billing.';
COMMENT ON COLUMN provisioning.allocations.requested_at IS 'When it was created and placed.';
COMMENT ON COLUMN provisioning.allocations.provisioning_at IS 'When the deploy was requested.';
COMMENT ON COLUMN provisioning.allocations.started_at IS 'When it became active (MAAS deployed it): billing starts here.';
COMMENT ON COLUMN provisioning.allocations.releasing_at IS 'When its release was requested.';
COMMENT ON COLUMN provisioning.allocations.ended_at IS 'When it ended: the release request for a released allocation (billing stops there, however long MAAS takes), the failure for a failed one.';
COMMENT ON COLUMN provisioning.allocations.updated_at IS 'When it last changed.';

CREATE TABLE provisioning.slot_claims (
    node_id       uuid NOT NULL REFERENCES provisioning.nodes (node_id),
    slot_index    integer NOT NULL CHECK (slot_index BETWEEN 0 AND 63),
    allocation_id uuid NOT NULL REFERENCES provisioning.allocations (id),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, slot_index)
);
CREATE INDEX slot_claims_allocation_idx ON provisioning.slot_claims (allocation_id);
COMMENT ON TABLE provisioning.slot_claims IS 'Slots held by live allocations. The primary key (node_id, slot_index) makes a double booking impossible even if a lock were missed; a claim is deleted when its allocation is released or fails.';
COMMENT ON COLUMN provisioning.slot_claims.node_id IS 'The node.';
COMMENT ON COLUMN provisioning.slot_claims.slot_index IS 'The slot (GPU index) on the node.';
COMMENT ON COLUMN provisioning.slot_claims.allocation_id IS 'The allocation holding it.';
COMMENT ON COLUMN provisioning.slot_claims.claimed_at IS 'When it was claimed.';

-- Operators and tests: every way the placement state could disagree with
-- the claims. Empty when consistent.
CREATE VIEW provisioning.capacity_problems AS
    SELECT 'node ' || n.node_id || ' (' || n.hostname || '): free_slots ' || n.free_slots || ' but '
           || (n.slot_count - coalesce(c.held, 0)) || ' slots unclaimed' AS problem
      FROM provisioning.nodes n
      LEFT JOIN (SELECT node_id, count(*) AS held FROM provisioning.slot_claims GROUP BY node_id) c USING (node_id)
     WHERE n.free_slots <> n.slot_count - coalesce(c.held, 0)
    UNION ALL
    SELECT 'node ' || n.node_id || ': live_allocations ' || n.live_allocations || ' but '
           || coalesce(l.live, 0) || ' allocations hold slots'
      FROM provisioning.nodes n
      LEFT JOIN (SELECT node_id, count(*) AS live FROM provisioning.allocations
                  WHERE state IN ('requested', 'provisioning', 'active', 'releasing') GROUP BY node_id) l USING (node_id)
     WHERE n.live_allocations <> coalesce(l.live, 0)
    UNION ALL
    SELECT 'node ' || a.node_id || ': runs image ' || coalesce(n.current_image, 'none') || ' but allocation '
           || a.id || ' has ' || a.image
      FROM provisioning.allocations a JOIN provisioning.nodes n USING (node_id)
     WHERE a.state IN ('requested', 'provisioning', 'active', 'releasing') AND a.image IS DISTINCT FROM n.current_image
    UNION ALL
    SELECT 'allocation ' || a.id || ' (' || a.state || ') holds ' || coalesce(c.held, 0) || ' slots, not '
           || CASE WHEN a.state IN ('released', 'failed') THEN 0 ELSE a.gpu_count END
      FROM provisioning.allocations a
      LEFT JOIN (SELECT allocation_id, count(*) AS held FROM provisioning.slot_claims GROUP BY allocation_id) c
        ON c.allocation_id = a.id
     WHERE coalesce(c.held, 0) <> CASE WHEN a.state IN ('released', 'failed') THEN 0 ELSE a.gpu_count END
    UNION ALL
    SELECT 'slot ' || c.slot_index || ' of node ' || c.node_id || ' is beyond its ' || n.slot_count || ' slots'
      FROM provisioning.slot_claims c JOIN provisioning.nodes n USING (node_id)
     WHERE c.slot_index >= n.slot_count;
COMMENT ON VIEW provisioning.capacity_problems IS 'Operators and tests: disagreements between the nodes'' placement counters, the allocations and the slot claims (free slots, live allocations, image, slots held by live and ended allocations, slots beyond a node''s count). Empty when consistent.';
COMMENT ON COLUMN provisioning.capacity_problems.problem IS 'What disagrees.';

SELECT pg_catalog.pg_extension_config_dump('provisioning.skus', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.images', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.account_standing', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.ssh_keys', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.slot_claims', '');

-- source: sql/provisioning/30_create.sql
-- Creating an allocation: standing, SSH keys, placement, claims, deploy intent.

CREATE FUNCTION provisioning.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'this call needs a signed-in user (the JWT sub claim)');
    END IF;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION provisioning.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

CREATE FUNCTION provisioning.allocation_json(a provisioning.allocations) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
    SELECT jsonb_build_object('id', a.id, 'state', a.state, 'sku', a.sku, 'image', a.image,
                              'gpu_count', a.gpu_count, 'region', a.region, 'node_hostname', a.node_hostname,
                              'slots', to_jsonb(a.slot_indexes), 'price_per_hour', a.price_per_hour,
                              'currency', a.currency, 'ssh_key_ids', to_jsonb(a.ssh_key_ids), 'reason', a.reason,
                              'released_by', a.released_by, 'requested_at', a.requested_at,
                              'started_at', a.started_at, 'releasing_at', a.releasing_at, 'ended_at', a.ended_at)
$$;
COMMENT ON FUNCTION provisioning.allocation_json(provisioning.allocations) IS 'The API form of an allocation: id, state, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ssh_key_ids, reason, released_by, requested_at, started_at, releasing_at, ended_at.';

-- Whether the account may allocate, from billing's last report.
CREATE FUNCTION provisioning.check_standing(v_user uuid) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    s provisioning.account_standing;
    need bigint;
BEGIN
    SELECT * INTO s FROM provisioning.account_standing x WHERE x.user_id = v_user;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('insufficient_balance',
            'billing has not reported a balance for this account yet; a new account has a balance of 0',
            'Top up your balance; allocations can be created once it covers the minimum.');
    END IF;
    IF s.standing IN ('insufficient', 'exhausted') THEN
        PERFORM pgcloud.raise('insufficient_balance',
            format('billing reports the account as %s (balance %s %s)', s.standing, s.balance, s.currency),
            'Top up your balance.');
    END IF;
    IF s.standing NOT IN ('good', 'low') THEN
        PERFORM pgcloud.raise('account_not_in_good_standing', format('billing reports the account as %s', s.standing),
            'Contact support.');
    END IF;
    need := coalesce(s.min_balance_to_allocate, pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint));
    IF s.balance IS NULL OR s.balance < need THEN
        PERFORM pgcloud.raise('insufficient_balance',
            format('the balance is %s %s; creating an allocation needs at least %s', coalesce(s.balance::text, 'unknown'),
                   s.currency, need),
            'Top up your balance.');
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.check_standing(uuid) IS 'Refuses allocation unless billing''s last report says the account is in good standing (good or low) with a balance of at least min_balance_to_allocate: insufficient_balance (402) for no report, standing insufficient or exhausted, or a low balance; account_not_in_good_standing (403) for any other standing.';

-- The reservation: balance >= minimum + the first interval of every live
-- allocation of the user and of the new one.
CREATE FUNCTION provisioning.check_reservation(v_user uuid, price_per_hour bigint) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    s provisioning.account_standing;
    secs bigint := pgcloud.policy('billing.accrual_interval_seconds', NULL::bigint);
    reserved numeric;
    need numeric;
BEGIN
    SELECT * INTO s FROM provisioning.account_standing x WHERE x.user_id = v_user;
    SELECT coalesce(sum(ceil(a.price_per_hour::numeric * secs / 3600)), 0) INTO reserved
      FROM provisioning.allocations a
     WHERE a.user_id = v_user AND a.state IN ('requested', 'provisioning', 'active', 'releasing');
    need := coalesce(s.min_balance_to_allocate, pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint))
            + reserved + ceil(price_per_hour::numeric * secs / 3600);
    IF s.balance IS NULL OR s.balance < need THEN
        PERFORM pgcloud.raise('insufficient_balance',
            format('the balance is %s %s; with the first interval of your %s live allocation(s) reserved (%s), another needs at least %s',
                   coalesce(s.balance::text, 'unknown'), s.currency,
                   (SELECT count(*) FROM provisioning.allocations a
                     WHERE a.user_id = v_user AND a.state IN ('requested', 'provisioning', 'active', 'releasing')),
                   reserved, need),
            'Top up your balance, or release an allocation.');
    END IF;
END
$$;
COMMENT ON FUNCTION provisioning.check_reservation(uuid, bigint) IS 'Refuses an allocation (insufficient_balance, 402) unless billing''s last reported balance covers the minimum plus the first accrual interval of every live allocation of the user and of the new one (policy provisioning.reserve_first_interval).';

-- The node to claim slots on, locked. See the placement policy at the top
-- of 00_provisioning.sql. Each preference is its own query on an index in
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

CREATE FUNCTION provisioning.create_allocation_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid := provisioning.require_user();
    v_sku text := args ->> 'sku';
    v_image text := args ->> 'image';
    k provisioning.skus;
    img provisioning.images;
    key_ids uuid[];
    keys text[];
    missing text;
    max_keys integer := pgcloud.policy('provisioning.max_ssh_keys_per_allocation', NULL::integer);
    max_live integer := pgcloud.policy('provisioning.max_live_allocations_per_user', NULL::integer);
    n provisioning.nodes;
    a provisioning.allocations;
    v_slots integer[];
BEGIN
    IF v_sku IS NULL OR v_image IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'sku and image are required');
    END IF;
    SELECT * INTO k FROM provisioning.skus s WHERE s.code = v_sku;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('sku_not_found', format('no SKU %s', left(v_sku, 64)), 'See api.list_skus().');
    END IF;
    SELECT * INTO img FROM provisioning.images i WHERE i.code = v_image;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('image_not_found', format('no image %s', left(v_image, 64)), 'See api.list_images().');
    END IF;
    PERFORM provisioning.check_standing(v_user);

    -- SSH keys: the caller's own, in the order given, each once.
    IF jsonb_typeof(args -> 'ssh_key_ids') NOT IN ('array', 'null') THEN
        PERFORM pgcloud.raise('invalid_argument', 'ssh_key_ids must be an array of key ids');
    END IF;
    key_ids := ARRAY(SELECT u.id FROM (SELECT (e #>> '{}')::uuid AS id, min(o) AS o
                                         FROM jsonb_array_elements(coalesce(args -> 'ssh_key_ids', '[]')) WITH ORDINALITY x (e, o)
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

    -- One user's creations are serialised so the limit holds.
    PERFORM pg_advisory_xact_lock(hashtextextended('provisioning.allocations/' || v_user::text, 0));
    IF (SELECT count(*) FROM provisioning.allocations x
         WHERE x.user_id = v_user AND x.state IN ('requested', 'provisioning', 'active', 'releasing')) >= max_live THEN
        PERFORM pgcloud.raise('allocation_limit_reached', format('at most %s live allocations per user', max_live),
            'Release an allocation you no longer use.');
    END IF;

    -- The balance check is a reservation: every live allocation of the user,
    -- and this one, holds its first accrual interval against the balance
    -- (under the per-user lock above, so concurrent creations cannot
    -- overdraw it).
    IF pgcloud.policy('provisioning.reserve_first_interval', NULL::boolean) THEN
        PERFORM provisioning.check_reservation(v_user, k.price_per_hour);
    END IF;

    n := provisioning.claim_node(k, v_image, v_user);
    INSERT INTO provisioning.allocations (id, user_id, sku, image, distro_series, gpu_count, region, price_per_hour,
                                          currency, node_id, node_hostname, maas_system_id, ssh_key_ids,
                                          ssh_public_keys, state)
    VALUES (gen_random_uuid(), v_user, k.code, img.code, img.distro_series, k.gpu_count, k.region, k.price_per_hour,
            k.currency, n.node_id, n.hostname, n.maas_system_id, key_ids, keys, 'requested')
    RETURNING * INTO a;
    -- The lowest free slots. The primary key is the last line: a slot taken
    -- by a transaction we did not wait for is skipped here, and then the
    -- count is short and the request refused, never double booked.
    WITH c AS (
        INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id)
        SELECT n.node_id, i, a.id FROM generate_series(0, n.slot_count - 1) i
         WHERE NOT EXISTS (SELECT 1 FROM provisioning.slot_claims x WHERE x.node_id = n.node_id AND x.slot_index = i)
         ORDER BY i LIMIT k.gpu_count
        ON CONFLICT DO NOTHING
        RETURNING slot_index)
    SELECT array_agg(c.slot_index ORDER BY c.slot_index) INTO v_slots FROM c;
    IF coalesce(cardinality(v_slots), 0) <> k.gpu_count THEN
        PERFORM pgcloud.raise('capacity_conflict',
            format('node %s had %s of %s slots free', n.hostname, coalesce(cardinality(v_slots), 0), k.gpu_count));
    END IF;
    UPDATE provisioning.nodes x
       SET free_slots = x.free_slots - k.gpu_count, live_allocations = x.live_allocations + 1, current_image = img.code,
           current_user_id = coalesce(x.current_user_id, v_user)
     WHERE x.node_id = n.node_id;

    -- requested -> provisioning: placed, and the deploy intent is written
    -- below. maas deploys the node (or joins the deployment it already has)
    -- and answers with maas.machine_deployed or maas.deploy_failed.
    UPDATE provisioning.allocations x
       SET slot_indexes = v_slots, state = 'provisioning', provisioning_at = now(), updated_at = now()
     WHERE x.id = a.id RETURNING * INTO a;
    PERFORM pgcloud.emit('allocation.requested', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'image', a.image,
                           'gpu_count', a.gpu_count, 'region', a.region, 'node_id', a.node_id,
                           'node_hostname', a.node_hostname, 'slots', to_jsonb(a.slot_indexes),
                           'price_per_hour', a.price_per_hour, 'currency', a.currency, 'requested_at', a.requested_at));
    PERFORM pgcloud.emit('deploy.requested', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'node_id', a.node_id,
                           'maas_system_id', a.maas_system_id, 'node_hostname', a.node_hostname,
                           'image', a.image, 'distro_series', a.distro_series,
                           'ssh_public_keys', to_jsonb(a.ssh_public_keys)));
    PERFORM pgcloud.emit('allocation.provisioning', 'allocation', a.id::text,
        jsonb_build_object('allocation_id', a.id, 'user_id', a.user_id, 'sku', a.sku, 'node_id', a.node_id,
                           'node_hostname', a.node_hostname, 'provisioning_at', a.provisioning_at));
    PERFORM pgcloud.audit('allocation.created', 'allocation', a.id::text, 'ok',
        jsonb_build_object('sku', a.sku, 'image', a.image, 'node', a.node_hostname, 'slots', to_jsonb(a.slot_indexes),
                           'price_per_hour', a.price_per_hour, 'currency', a.currency));
    RETURN provisioning.allocation_json(a);
END
$$;
COMMENT ON FUNCTION provisioning.create_allocation_apply(jsonb) IS 'Internal to api.create_allocation(): checks standing and keys, places {sku, image, ssh_key_ids} onto free slots and claims them, and writes the deploy intent (deploy.requested), all in the caller''s transaction. Audited as allocation.created.';

CREATE FUNCTION api.create_allocation(sku text, image text, ssh_key_ids uuid[] DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('provisioning.create_allocation',
        jsonb_build_object('sku', sku, 'image', image, 'ssh_key_ids', to_jsonb(ssh_key_ids)),
        'provisioning.create_allocation_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.create_allocation(text, text, uuid[]) IS 'Creates an allocation of a SKU running an OS image, with your SSH keys (ids from api.list_ssh_keys()) in its user data: places it onto free GPU slots (never double booked) and asks MAAS to deploy it. Returns the allocation ({id, state: provisioning, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ...}); it becomes active when the node is deployed (poll api.get_allocation(id)), and is billed from then. Refused: 402 insufficient_balance (billing reports too low a balance, or none yet), 403 account_not_in_good_standing, 404 sku_not_found / image_not_found / allocation_ssh_key_not_found, 409 capacity_unavailable, allocation_limit_reached. Safe to retry with X-Idempotency-Key.';

-- source: sql/provisioning/40_lifecycle.sql
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
                           'ip_addresses', coalesce(deployed -> 'ip_addresses', '[]'::jsonb)));
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.activate(provisioning.allocations, jsonb) IS 'Makes a provisioning allocation active and emits allocation.activated {allocation_id, user_id, sku, price_per_hour, currency, started_at, node_hostname, ...}: billing starts here.';

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

CREATE FUNCTION provisioning.release_allocation_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid := provisioning.require_user();
    v_id uuid := (args ->> 'id')::uuid;
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
COMMENT ON FUNCTION provisioning.release_allocation_apply(jsonb) IS 'Internal to api.release_allocation(): {id}; a live allocation goes to releasing (release.requested), an allocation already releasing or ended is returned as it is.';

CREATE FUNCTION api.release_allocation(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('provisioning.release_allocation', jsonb_build_object('id', id),
                              'provisioning.release_allocation_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.release_allocation(id uuid) IS 'Releases one of your allocations: it goes to releasing at once (no new access is minted from then) and to released when MAAS has released the machine; billing stops then. A release MAAS cannot complete keeps the allocation releasing (and billed) until an operator decides (api.admin_end_stuck_release). Releasing an allocation that is already releasing, released or failed changes nothing. Returns the allocation; another user''s or an unknown id is 404 allocation_not_found. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.get_allocation(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid;
    a provisioning.allocations;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := provisioning.require_user();
    SELECT * INTO a FROM provisioning.allocations x
     WHERE x.id = get_allocation.id AND (x.user_id = v_user OR pgcloud.request_role() = 'pgcloud_admin');
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', get_allocation.id));
    END IF;
    RETURN provisioning.allocation_json(a);
END
$$;
COMMENT ON FUNCTION api.get_allocation(id uuid) IS 'One of your allocations: {id, state, sku, image, gpu_count, region, node_hostname, slots, price_per_hour, currency, ssh_key_ids, reason, released_by, requested_at, started_at, releasing_at, ended_at}. state is provisioning while MAAS deploys, active once deployed, releasing, released, or failed (reason says why). Another user''s or an unknown id is 404 allocation_not_found.';

CREATE FUNCTION api.list_allocations() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := provisioning.require_user();
    RETURN coalesce((SELECT jsonb_agg(provisioning.allocation_json(a) ORDER BY a.requested_at DESC, a.id)
                       FROM (SELECT * FROM provisioning.allocations x WHERE x.user_id = v_user
                              ORDER BY x.requested_at DESC, x.id
                              LIMIT pgcloud.policy('provisioning.list_limit', NULL::integer)) a), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_allocations() IS 'Your allocations, newest first (at most provisioning.list_limit), in the form of api.get_allocation().';

-- source: sql/provisioning/50_events.sql
-- Events in: catalogue and nodes (inventory), standing and force release
-- (billing), force release (admin), deployment outcomes (maas), SSH keys
-- (releases).

CREATE FUNCTION provisioning.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, provisioning
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
COMMENT ON FUNCTION provisioning.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

CREATE FUNCTION provisioning.payload_text(payload jsonb, field text, pattern text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
BEGIN
    IF jsonb_typeof(payload -> field) IS DISTINCT FROM 'string' OR (payload ->> field) !~ pattern THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a string matching %s', field, pattern));
    END IF;
    RETURN payload ->> field;
END
$$;
COMMENT ON FUNCTION provisioning.payload_text(jsonb, text, text) IS 'A required string field of an event payload matching pattern; raises invalid_event otherwise.';

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
     WHERE x.id = provisioning.payload_uuid(payload, 'allocation_id', aggregate_id) FOR UPDATE;
    RETURN a;
END
$$;
COMMENT ON FUNCTION provisioning.lock_allocation(jsonb, text) IS 'The allocation named by an event''s allocation_id, locked for update; NULL when it is not known here.';

CREATE FUNCTION provisioning.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                      payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, provisioning
AS $$
DECLARE
    a provisioning.allocations;
    v_user uuid;
    v_state text;
    v_as_of timestamptz;
    ids uuid[];
    why text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'sku.upserted' THEN
        INSERT INTO provisioning.skus AS s (code, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region,
                                            price_per_hour, currency, updated_at)
        VALUES (provisioning.payload_text(payload, 'code', '^[a-z0-9][a-z0-9._-]{0,62}$'),
                provisioning.payload_text(payload, 'gpu_model', '^.{1,64}$'),
                provisioning.payload_int(payload, 'gpu_count', 1, 64),
                provisioning.payload_int(payload, 'vcpus', 0, 1000000, false),
                provisioning.payload_int(payload, 'memory_gb', 0, 100000000, false),
                provisioning.payload_int(payload, 'disk_gb', 0, 100000000, false),
                provisioning.payload_text(payload, 'region', '^[a-z0-9][a-z0-9-]{0,31}$'),
                provisioning.payload_int(payload, 'price_per_hour', 0, 100000000000),
                provisioning.payload_text(payload, 'currency', '^[a-z]{3}$'), now())
        ON CONFLICT (code) DO UPDATE
            SET gpu_model = excluded.gpu_model, gpu_count = excluded.gpu_count, vcpus = excluded.vcpus,
                memory_gb = excluded.memory_gb, disk_gb = excluded.disk_gb, region = excluded.region,
                price_per_hour = excluded.price_per_hour, currency = excluded.currency, updated_at = excluded.updated_at;
    WHEN 'image.upserted' THEN
        INSERT INTO provisioning.images AS i (code, distro_series, updated_at)
        VALUES (provisioning.payload_text(payload, 'code', '^[a-z0-9][a-z0-9._-]{0,62}$'),
                provisioning.payload_text(payload, 'distro_series', '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$'),
                now())
        ON CONFLICT (code) DO UPDATE SET distro_series = excluded.distro_series, updated_at = excluded.updated_at;
    WHEN 'node.registered', 'node.state_changed' THEN
        v_state := provisioning.payload_text(payload, 'state', '^[a-z_]{1,32}$');
        IF jsonb_typeof(payload -> 'cached_images') NOT IN ('array', 'null') THEN
            PERFORM pgcloud.raise('invalid_event', 'payload field cached_images must be an array');
        END IF;
        -- Waits for a placement holding the node: a node leaves placement
        -- after the placements already working on it, never during one.
        INSERT INTO provisioning.nodes AS n (node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count,
                                             state, cached_images, free_slots, updated_at)
        VALUES (provisioning.payload_uuid(payload, 'node_id', aggregate_id),
                provisioning.payload_text(payload, 'hostname', '^[a-z0-9.-]{1,253}$'),
                provisioning.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
                payload ->> 'sku',
                provisioning.payload_text(payload, 'region', '^[a-z0-9][a-z0-9-]{0,31}$'),
                provisioning.payload_text(payload, 'gpu_model', '^.{1,64}$'),
                provisioning.payload_int(payload, 'slot_count', 1, 64),
                v_state,
                ARRAY(SELECT jsonb_array_elements_text(coalesce(payload -> 'cached_images', '[]'))),
                provisioning.payload_int(payload, 'slot_count', 1, 64),
                now())
        ON CONFLICT (node_id) DO UPDATE
            SET hostname = excluded.hostname, maas_system_id = excluded.maas_system_id, sku = excluded.sku,
                region = excluded.region, gpu_model = excluded.gpu_model, state = excluded.state,
                cached_images = excluded.cached_images, updated_at = excluded.updated_at;
    WHEN 'account.standing_changed' THEN
        v_user := provisioning.payload_uuid(payload, 'user_id', aggregate_id);
        v_as_of := CASE WHEN payload ->> 'as_of' ~ '^\d{4}-\d{2}-\d{2}[T ][0-9:.]+(Z|[+-][0-9:]+)?$'
                        THEN (payload ->> 'as_of')::timestamptz END;
        INSERT INTO provisioning.account_standing AS s (user_id, standing, balance, currency, min_balance_to_allocate,
                                                        as_of, updated_at)
        VALUES (v_user, provisioning.payload_text(payload, 'standing', '^[a-z_]{1,32}$'),
                provisioning.payload_int(payload, 'balance', -9000000000000000000, 9000000000000000000, false),
                payload ->> 'currency',
                provisioning.payload_int(payload, 'min_balance_to_allocate', -9000000000000000000, 9000000000000000000, false),
                v_as_of, now())
        ON CONFLICT (user_id) DO UPDATE
            SET standing = excluded.standing, balance = excluded.balance, currency = excluded.currency,
                min_balance_to_allocate = excluded.min_balance_to_allocate, as_of = excluded.as_of,
                updated_at = excluded.updated_at
            WHERE s.as_of IS NULL OR excluded.as_of IS NULL OR excluded.as_of >= s.as_of;
    WHEN 'ssh_key.added' THEN
        INSERT INTO provisioning.ssh_keys AS k (key_id, user_id, public_key, fingerprint)
        VALUES (provisioning.payload_uuid(payload, CASE WHEN payload ? 'key_id' THEN 'key_id' ELSE 'id' END, aggregate_id),
                provisioning.payload_uuid(payload, 'user_id'),
                provisioning.payload_text(payload, 'public_key',
                    '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$'),
                payload ->> 'fingerprint')
        ON CONFLICT (key_id) DO NOTHING;
    WHEN 'ssh_key.deleted' THEN
        DELETE FROM provisioning.ssh_keys k
         WHERE k.key_id = provisioning.payload_uuid(payload, CASE WHEN payload ? 'key_id' THEN 'key_id' ELSE 'id' END,
                                                    aggregate_id);
    WHEN 'billing.force_release_requested' THEN
        v_user := provisioning.payload_uuid(payload, 'user_id', aggregate_id);
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
    WHEN 'admin.force_release_requested' THEN
        a := provisioning.lock_allocation(payload, aggregate_id);
        IF a.state IN ('requested', 'provisioning', 'active') THEN
            PERFORM provisioning.begin_release(a, 'admin: ' || coalesce(left(payload ->> 'reason', 400), 'force release'),
                                               'admin');
        END IF;
    WHEN 'maas.machine_deployed' THEN
        a := provisioning.lock_allocation(payload, aggregate_id);
        IF a.state = 'provisioning' THEN
            PERFORM provisioning.activate(a, payload);
        END IF;
    WHEN 'maas.deploy_failed' THEN
        a := provisioning.lock_allocation(payload, aggregate_id);
        why := coalesce(left(payload ->> 'reason', 450), 'deployment failed');
        IF a.state IN ('requested', 'provisioning') THEN
            PERFORM provisioning.finish(a, 'failed', why);
        ELSIF a.state = 'releasing' THEN
            -- Released while deploying, and the deployment failed: nothing left to release.
            PERFORM provisioning.finish(a, 'released', a.reason || ' (deployment failed: ' || why || ')');
        END IF;
    WHEN 'maas.machine_released' THEN
        a := provisioning.lock_allocation(payload, aggregate_id);
        IF a.state = 'releasing' THEN
            PERFORM provisioning.finish(a, 'released',
                a.reason || CASE WHEN payload ->> 'reason' IS NOT NULL
                                 THEN ' (' || left(payload ->> 'reason', 300) || ')' ELSE '' END);
        ELSIF a.state IN ('requested', 'provisioning') THEN
            PERFORM provisioning.finish(a, 'failed',
                'MAAS released the machine before it was deployed'
                || CASE WHEN payload ->> 'reason' IS NOT NULL THEN ': ' || left(payload ->> 'reason', 300) ELSE '' END);
        END IF;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION provisioning.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): sku.upserted, image.upserted, node.registered, node.state_changed, account.standing_changed and ssh_key.added / deleted keep the read models; billing.force_release_requested {user_id, allocation_ids, reason} and admin.force_release_requested {allocation_id, reason} release live allocations; maas.machine_deployed activates, maas.deploy_failed fails, maas.machine_released releases. Late or repeated outcomes change nothing. Other types are ignored.';

-- source: sql/provisioning/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_allocation(text, text, uuid[]), api.release_allocation(uuid),
    api.get_allocation(uuid), api.list_allocations()
    TO pgcloud_user, pgcloud_admin;

SELECT pgcloud.service_end('provisioning');
