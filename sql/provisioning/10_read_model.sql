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
-- Placement's three preferences, each in the order wanted (see
-- create_allocation_apply): the user's own nodes running the image, idle
-- nodes with the image cached (provisioning.idle_node_images below), idle
-- nodes. Each preference has exactly one index that serves it, so a plan
-- made against tables nearly empty (a new deployment, or early in a session)
-- cannot pick one that reads every running node.
CREATE INDEX nodes_user_idx ON provisioning.nodes (current_user_id, current_image, gpu_model, region, free_slots, node_id)
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

-- Placement's second preference (an idle node with the image in its cache)
-- by index: one row per (idle ready node, cached image), kept by the trigger
-- below in the transaction that changes the node, so a placement reads a few
-- index entries instead of testing every idle node's cache.
CREATE TABLE provisioning.idle_node_images (
    node_id    uuid NOT NULL,
    image      text NOT NULL,
    gpu_model  text NOT NULL,
    region     text NOT NULL,
    free_slots integer NOT NULL,
    PRIMARY KEY (node_id, image)
);
CREATE INDEX idle_node_images_place_idx ON provisioning.idle_node_images (image, gpu_model, region, free_slots, node_id);
COMMENT ON TABLE provisioning.idle_node_images IS 'Index of the ready nodes that run nothing, by image in their cache (kept from provisioning.nodes by a trigger; provisioning.capacity_problems checks it): placement''s second preference.';
COMMENT ON COLUMN provisioning.idle_node_images.node_id IS 'The idle ready node.';
COMMENT ON COLUMN provisioning.idle_node_images.image IS 'An image in its cache.';
COMMENT ON COLUMN provisioning.idle_node_images.gpu_model IS 'The node''s GPU model.';
COMMENT ON COLUMN provisioning.idle_node_images.region IS 'The node''s region.';
COMMENT ON COLUMN provisioning.idle_node_images.free_slots IS 'The node''s free slots.';

-- A node contributes rows while it is ready, runs nothing and has a cache.
CREATE FUNCTION provisioning.nodes_idle_images() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, provisioning
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM provisioning.idle_node_images c WHERE c.node_id = OLD.node_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state = 'ready' AND NEW.current_image IS NULL THEN
        INSERT INTO provisioning.idle_node_images (node_id, image, gpu_model, region, free_slots)
        SELECT DISTINCT NEW.node_id, i, NEW.gpu_model, NEW.region, NEW.free_slots
          FROM unnest(NEW.cached_images) i WHERE i IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION provisioning.nodes_idle_images() IS 'Trigger: keeps provisioning.idle_node_images in step with a node row (its rows are replaced whenever the node was or becomes an idle ready node with cached images).';
CREATE TRIGGER nodes_idle_images_ins AFTER INSERT ON provisioning.nodes FOR EACH ROW
    WHEN (NEW.state = 'ready' AND NEW.current_image IS NULL AND NEW.cached_images <> '{}')
    EXECUTE FUNCTION provisioning.nodes_idle_images();
CREATE TRIGGER nodes_idle_images_upd AFTER UPDATE ON provisioning.nodes FOR EACH ROW
    WHEN ((OLD.state = 'ready' AND OLD.current_image IS NULL AND OLD.cached_images <> '{}')
       OR (NEW.state = 'ready' AND NEW.current_image IS NULL AND NEW.cached_images <> '{}'))
    EXECUTE FUNCTION provisioning.nodes_idle_images();
CREATE TRIGGER nodes_idle_images_del AFTER DELETE ON provisioning.nodes FOR EACH ROW
    WHEN (OLD.state = 'ready' AND OLD.current_image IS NULL AND OLD.cached_images <> '{}')
    EXECUTE FUNCTION provisioning.nodes_idle_images();
COMMENT ON TRIGGER nodes_idle_images_ins ON provisioning.nodes IS 'Keeps provisioning.idle_node_images.';
COMMENT ON TRIGGER nodes_idle_images_upd ON provisioning.nodes IS 'Keeps provisioning.idle_node_images.';
COMMENT ON TRIGGER nodes_idle_images_del ON provisioning.nodes IS 'Keeps provisioning.idle_node_images.';
-- (an upgrade from a version without the table fills it once)
INSERT INTO provisioning.idle_node_images (node_id, image, gpu_model, region, free_slots)
SELECT DISTINCT n.node_id, i, n.gpu_model, n.region, n.free_slots
  FROM provisioning.nodes n, unnest(n.cached_images) i
 WHERE n.state = 'ready' AND n.current_image IS NULL AND i IS NOT NULL
ON CONFLICT DO NOTHING;

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
