-- SKUs, images, nodes and their lifecycle, slots, per-node image cache.

CREATE TABLE inventory.skus (
    code           text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    gpu_model      text NOT NULL CHECK (gpu_model ~ '^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$'),
    gpu_count      integer NOT NULL CHECK (gpu_count BETWEEN 1 AND 64),
    vcpus          integer NOT NULL CHECK (vcpus BETWEEN 1 AND 4096),
    memory_gb      integer NOT NULL CHECK (memory_gb BETWEEN 1 AND 1048576),
    disk_gb        integer NOT NULL CHECK (disk_gb BETWEEN 0 AND 1048576),
    region         text NOT NULL CHECK (region ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    price_per_hour bigint NOT NULL CHECK (price_per_hour BETWEEN 0 AND 100000000000),
    currency       text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE inventory.skus IS 'The SKU catalogue: allocation shapes with their hourly price. A node is registered with the SKU of the whole machine; SKUs of the same GPU model and region with fewer GPUs are fractional shapes.';
COMMENT ON COLUMN inventory.skus.code IS 'SKU code, e.g. h100x8 (lower case, digits, . _ -).';
COMMENT ON COLUMN inventory.skus.gpu_model IS 'GPU model, e.g. H100-SXM; placement matches it exactly.';
COMMENT ON COLUMN inventory.skus.gpu_count IS 'GPUs (resource slots) an allocation of this SKU holds; for a node''s SKU, the node''s slots.';
COMMENT ON COLUMN inventory.skus.vcpus IS 'Virtual CPUs.';
COMMENT ON COLUMN inventory.skus.memory_gb IS 'Memory (GB).';
COMMENT ON COLUMN inventory.skus.disk_gb IS 'Local disk (GB).';
COMMENT ON COLUMN inventory.skus.region IS 'Region the SKU is offered in.';
COMMENT ON COLUMN inventory.skus.price_per_hour IS 'Price per hour in integer minor units of currency (e.g. cents).';
COMMENT ON COLUMN inventory.skus.currency IS 'ISO 4217 currency code, lower case.';
COMMENT ON COLUMN inventory.skus.created_at IS 'When the SKU was first defined.';
COMMENT ON COLUMN inventory.skus.updated_at IS 'When it was last changed.';

CREATE TABLE inventory.images (
    code          text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    distro_series text NOT NULL CHECK (distro_series ~ '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE inventory.images IS 'OS images users may deploy, each a MAAS distro series.';
COMMENT ON COLUMN inventory.images.code IS 'Image code users pass to api.create_allocation(), e.g. ubuntu-22.04.';
COMMENT ON COLUMN inventory.images.distro_series IS 'The MAAS distro_series deployed, e.g. jammy or ubuntu/jammy.';
COMMENT ON COLUMN inventory.images.created_at IS 'When the image was first defined.';
COMMENT ON COLUMN inventory.images.updated_at IS 'When it was last changed.';

CREATE TABLE inventory.node_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE inventory.node_transitions IS 'Allowed changes of inventory.nodes.state (from_state NULL: initial state).';
COMMENT ON COLUMN inventory.node_transitions.from_state IS 'State before, NULL for a new node.';
COMMENT ON COLUMN inventory.node_transitions.to_state IS 'State after.';
INSERT INTO inventory.node_transitions (from_state, to_state) VALUES
    (NULL, 'commissioning'),
    ('commissioning', 'ready'), ('commissioning', 'failed'), ('commissioning', 'broken'),
    ('failed', 'commissioning'), ('failed', 'broken'), ('failed', 'maintenance'),
    ('ready', 'maintenance'), ('ready', 'broken'),
    ('broken', 'ready'), ('broken', 'commissioning'), ('broken', 'maintenance'),
    ('maintenance', 'ready'),
    ('commissioning', 'retired'), ('failed', 'retired'), ('ready', 'retired'), ('broken', 'retired'),
    ('maintenance', 'retired');

CREATE TABLE inventory.nodes (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostname       text NOT NULL CHECK (length(hostname) <= 253
                       AND hostname ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'),
    maas_system_id text NOT NULL CHECK (maas_system_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    sku            text NOT NULL REFERENCES inventory.skus (code),
    region         text NOT NULL,
    gpu_model      text NOT NULL,
    slot_count     integer NOT NULL CHECK (slot_count BETWEEN 1 AND 64),
    state          text NOT NULL CHECK (state IN ('commissioning', 'ready', 'failed', 'broken', 'maintenance', 'retired')),
    state_reason   text,
    maas_status    text,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz
);
CREATE UNIQUE INDEX nodes_hostname_live ON inventory.nodes (hostname) WHERE state <> 'retired';
CREATE UNIQUE INDEX nodes_system_id_live ON inventory.nodes (maas_system_id) WHERE state <> 'retired';
CREATE INDEX nodes_sku_idx ON inventory.nodes (sku);
CREATE TRIGGER nodes_state BEFORE INSERT OR UPDATE OF state ON inventory.nodes
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'inventory.node_transitions');
COMMENT ON TABLE inventory.nodes IS 'Bare-metal nodes (MAAS machines) and their lifecycle: commissioning -> ready; failed, broken, maintenance; retired (terminal). Hostname and system id are unique among nodes not retired.';
COMMENT ON COLUMN inventory.nodes.id IS 'Node id.';
COMMENT ON COLUMN inventory.nodes.hostname IS 'Hostname (RFC 1123, lower case).';
COMMENT ON COLUMN inventory.nodes.maas_system_id IS 'The MAAS system id of the machine.';
COMMENT ON COLUMN inventory.nodes.sku IS 'The SKU describing the whole machine.';
COMMENT ON COLUMN inventory.nodes.region IS 'Region (the SKU''s, fixed at registration).';
COMMENT ON COLUMN inventory.nodes.gpu_model IS 'GPU model (the SKU''s, fixed at registration).';
COMMENT ON COLUMN inventory.nodes.slot_count IS 'Resource slots: one per GPU (the SKU''s GPU count at registration).';
COMMENT ON COLUMN inventory.nodes.state IS 'commissioning, ready, failed, broken, maintenance or retired; only ready nodes take new allocations.';
COMMENT ON COLUMN inventory.nodes.state_reason IS 'Why the node is in its state (operator''s or MAAS''s words).';
COMMENT ON COLUMN inventory.nodes.maas_status IS 'The last MAAS status name reported for the machine.';
COMMENT ON COLUMN inventory.nodes.registered_at IS 'When the node was registered.';
COMMENT ON COLUMN inventory.nodes.updated_at IS 'When it last changed.';
COMMENT ON COLUMN inventory.nodes.retired_at IS 'When it was retired.';

CREATE TABLE inventory.slots (
    node_id       uuid NOT NULL REFERENCES inventory.nodes (id),
    slot_index    integer NOT NULL CHECK (slot_index BETWEEN 0 AND 63),
    allocation_id uuid,
    claimed_at    timestamptz,
    PRIMARY KEY (node_id, slot_index),
    CHECK ((allocation_id IS NULL) = (claimed_at IS NULL))
);
CREATE INDEX slots_allocation_idx ON inventory.slots (allocation_id) WHERE allocation_id IS NOT NULL;
COMMENT ON TABLE inventory.slots IS 'Resource slots (one per GPU) of each node, and which allocation holds each: a read model of provisioning''s claims (allocation.requested / released / failed), from which the marketplace is computed.';
COMMENT ON COLUMN inventory.slots.node_id IS 'The node.';
COMMENT ON COLUMN inventory.slots.slot_index IS 'Slot number on the node, 0 to slot_count - 1 (the GPU index).';
COMMENT ON COLUMN inventory.slots.allocation_id IS 'The allocation holding the slot, NULL when free.';
COMMENT ON COLUMN inventory.slots.claimed_at IS 'When the holding allocation was placed, NULL when free.';

CREATE TABLE inventory.node_image_cache (
    node_id   uuid NOT NULL REFERENCES inventory.nodes (id),
    image     text NOT NULL REFERENCES inventory.images (code),
    cached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, image)
);
COMMENT ON TABLE inventory.node_image_cache IS 'OS images present on a node''s local cache (recorded when MAAS reports the node deployed with the image); placement prefers such nodes.';
COMMENT ON COLUMN inventory.node_image_cache.node_id IS 'The node.';
COMMENT ON COLUMN inventory.node_image_cache.image IS 'The cached image.';
COMMENT ON COLUMN inventory.node_image_cache.cached_at IS 'When the node was last deployed with it.';

SELECT pg_catalog.pg_extension_config_dump('inventory.skus', '');
SELECT pg_catalog.pg_extension_config_dump('inventory.images', '');
SELECT pg_catalog.pg_extension_config_dump('inventory.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('inventory.slots', '');
SELECT pg_catalog.pg_extension_config_dump('inventory.node_image_cache', '');
