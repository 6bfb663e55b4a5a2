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
-- api.create_allocation() writes an allocation once, placed and with its
-- deploy intent: requested -> provisioning within its own transaction, which
-- no other transaction sees.
INSERT INTO provisioning.allocation_transitions (from_state, to_state) VALUES (NULL, 'provisioning');

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
-- No index by node: no query looks allocations up by node (a node's counts
-- are kept on the node; capacity_problems aggregates them all), and each
-- index is one more entry and relation lock per placement.
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
     WHERE c.slot_index >= n.slot_count
    UNION ALL
    SELECT 'node ' || coalesce(n.node_id, x.node_id) || ': placement''s index of idle nodes by cached image '
           || CASE WHEN x.node_id IS NULL THEN 'lacks ' ELSE 'wrongly has ' END || coalesce(n.image, x.image)
      FROM (SELECT DISTINCT n.node_id, i AS image, n.gpu_model, n.region, n.free_slots
              FROM provisioning.nodes n, unnest(n.cached_images) i
             WHERE n.state = 'ready' AND n.current_image IS NULL AND i IS NOT NULL) n
      FULL JOIN provisioning.idle_node_images x USING (node_id, image, gpu_model, region, free_slots)
     WHERE n.node_id IS NULL OR x.node_id IS NULL;
COMMENT ON VIEW provisioning.capacity_problems IS 'Operators and tests: disagreements between the nodes'' placement counters, the allocations and the slot claims (free slots, live allocations, image, slots held by live and ended allocations, slots beyond a node''s count, the index of idle nodes by cached image). Empty when consistent.';
COMMENT ON COLUMN provisioning.capacity_problems.problem IS 'What disagrees.';

SELECT pg_catalog.pg_extension_config_dump('provisioning.skus', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.images', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.account_standing', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.ssh_keys', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.slot_claims', '');
SELECT pg_catalog.pg_extension_config_dump('provisioning.idle_node_images', '');
