-- pgcloud_inventory install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_inventory" to load this file. \quit

SELECT pgcloud.service_begin('inventory');
-- source: sql/inventory/00_inventory.sql
-- pgcloud_inventory: the capacity catalogue. Schema inventory, owned by
-- pgcloud_svc_inventory (created by pgcloud.service_begin).
--
-- Decisions (see also src/inventory/README.md):
--   * A SKU is an allocation shape: GPU model and count, vCPUs, memory, disk,
--     region and an hourly price in integer minor units. A node is
--     registered with the SKU that describes the whole machine; its GPU count
--     is the node's number of resource slots. SKUs of the same GPU model and
--     region with fewer GPUs are fractional shapes placed onto those slots.
--   * A SKU's shape (GPU model, GPU count, region) cannot change while nodes
--     are registered with it (the slots were cut from it); its price and the
--     other figures can.
--   * Node lifecycle: commissioning (registered; MAAS commissions it) ->
--     ready; failed (commissioning failed), broken (MAAS says so),
--     maintenance (operator), retired (terminal). Guarded by
--     pgcloud.transition(). MAAS statuses reach it as maas.* events.
--   * Slot claims are provisioning's: it owns them with a unique key. The
--     slots table here is the read model of those claims (allocation.requested
--     / released / failed) from which the marketplace is computed.

-- Error catalogue. sku_not_found and image_not_found are shared with
-- provisioning (the first install wins; the meaning is the same).
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('node_not_found',          404, 'The node does not exist.', 'inventory'),
    ('node_already_registered', 409, 'A node with this hostname or MAAS system id is already registered.', 'inventory'),
    ('node_in_use',             409, 'The node still holds allocations.', 'inventory'),
    ('sku_in_use',              409, 'The SKU''s GPU model, GPU count and region cannot change while nodes are registered with it.', 'inventory');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('sku_not_found',           404, 'The SKU does not exist.', 'inventory'),
    ('image_not_found',         404, 'The OS image does not exist.', 'inventory')
ON CONFLICT (code) DO NOTHING;

-- source: sql/inventory/10_tables.sql
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

-- source: sql/inventory/20_admin.sql
-- Operators: define SKUs and images, register nodes, maintenance, retirement.

CREATE FUNCTION inventory.require(ok boolean, details text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        PERFORM pgcloud.raise('invalid_argument', details);
    END IF;
END
$$;
COMMENT ON FUNCTION inventory.require(boolean, text) IS 'Raises invalid_argument with details unless ok is true (NULL counts as false).';

CREATE FUNCTION inventory.int_arg(args jsonb, field text, lo bigint, hi bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v jsonb := args -> field;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' OR (v #>> '{}') !~ '^-?[0-9]{1,18}$'
       OR (v #>> '{}')::bigint NOT BETWEEN lo AND hi THEN
        PERFORM pgcloud.raise('invalid_argument', format('%s must be a whole number from %s to %s', field, lo, hi));
    END IF;
    RETURN (v #>> '{}')::bigint;
END
$$;
COMMENT ON FUNCTION inventory.int_arg(jsonb, text, bigint, bigint) IS 'A required whole-number argument within [lo, hi]; raises invalid_argument otherwise.';

CREATE FUNCTION inventory.sku_json(s inventory.skus) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
    SELECT jsonb_build_object('code', s.code, 'gpu_model', s.gpu_model, 'gpu_count', s.gpu_count, 'vcpus', s.vcpus,
                              'memory_gb', s.memory_gb, 'disk_gb', s.disk_gb, 'region', s.region,
                              'price_per_hour', s.price_per_hour, 'currency', s.currency,
                              'updated_at', s.updated_at)
$$;
COMMENT ON FUNCTION inventory.sku_json(inventory.skus) IS 'The API and event form of a SKU.';

CREATE FUNCTION inventory.node_json(n inventory.nodes) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
    SELECT jsonb_build_object('node_id', n.id, 'hostname', n.hostname, 'maas_system_id', n.maas_system_id,
                              'sku', n.sku, 'region', n.region, 'gpu_model', n.gpu_model, 'slot_count', n.slot_count,
                              'state', n.state, 'reason', n.state_reason, 'maas_status', n.maas_status,
                              'cached_images', coalesce((SELECT jsonb_agg(c.image ORDER BY c.image)
                                                           FROM inventory.node_image_cache c WHERE c.node_id = n.id), '[]'),
                              'registered_at', n.registered_at, 'updated_at', n.updated_at)
$$;
COMMENT ON FUNCTION inventory.node_json(inventory.nodes) IS 'The event form of a node: node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count, state, reason, maas_status, cached_images, registered_at, updated_at.';

CREATE FUNCTION inventory.announce_node(n inventory.nodes, event_type text, previous_state text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
    SELECT NULL::void FROM pgcloud.emit(event_type, 'node', n.id::text,
        inventory.node_json(n) || jsonb_build_object('previous_state', previous_state, 'changed_at', now()))
$$;
COMMENT ON FUNCTION inventory.announce_node(inventory.nodes, text, text) IS 'Emits node.registered or node.state_changed carrying the whole node (event-carried state) and its previous state.';

-- ---- SKUs ------------------------------------------------------------------

CREATE FUNCTION inventory.upsert_sku_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_code text := args ->> 'code';
    v_model text := btrim(args ->> 'gpu_model');
    v_gpus integer := inventory.int_arg(args, 'gpu_count', 1, 64);
    v_vcpus integer := inventory.int_arg(args, 'vcpus', 1, 4096);
    v_mem integer := inventory.int_arg(args, 'memory_gb', 1, 1048576);
    v_disk integer := inventory.int_arg(args, 'disk_gb', 0, 1048576);
    v_region text := args ->> 'region';
    v_price bigint := inventory.int_arg(args, 'price_per_hour', 0, 100000000000);
    v_currency text := lower(args ->> 'currency');
    old inventory.skus;
    s inventory.skus;
BEGIN
    PERFORM inventory.require(v_code ~ '^[a-z0-9][a-z0-9._-]{0,62}$',
        'code must be 1 to 63 characters: lower-case letters, digits, . _ - (starting with a letter or digit)');
    PERFORM inventory.require(v_model ~ '^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$',
        'gpu_model must be 1 to 64 characters: letters, digits, space, . _ + -');
    PERFORM inventory.require(v_region ~ '^[a-z0-9][a-z0-9-]{0,31}$',
        'region must be 1 to 32 characters: lower-case letters, digits, -');
    PERFORM inventory.require(v_currency ~ '^[a-z]{3}$', 'currency must be a three-letter ISO 4217 code');

    SELECT * INTO old FROM inventory.skus k WHERE k.code = v_code FOR UPDATE;
    IF FOUND AND (old.gpu_model, old.gpu_count, old.region) IS DISTINCT FROM (v_model, v_gpus, v_region)
       AND EXISTS (SELECT 1 FROM inventory.nodes n WHERE n.sku = v_code AND n.state <> 'retired') THEN
        PERFORM pgcloud.raise('sku_in_use',
            format('SKU %s describes registered nodes: its GPU model, GPU count and region are fixed', v_code),
            'Define a new SKU, or retire the nodes first.');
    END IF;
    INSERT INTO inventory.skus AS k (code, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region, price_per_hour, currency)
    VALUES (v_code, v_model, v_gpus, v_vcpus, v_mem, v_disk, v_region, v_price, v_currency)
    ON CONFLICT (code) DO UPDATE
        SET gpu_model = excluded.gpu_model, gpu_count = excluded.gpu_count, vcpus = excluded.vcpus,
            memory_gb = excluded.memory_gb, disk_gb = excluded.disk_gb, region = excluded.region,
            price_per_hour = excluded.price_per_hour, currency = excluded.currency, updated_at = now()
    RETURNING * INTO s;
    PERFORM pgcloud.audit('sku.upserted', 'sku', s.code, 'ok',
        jsonb_build_object('old', CASE WHEN old.code IS NOT NULL THEN inventory.sku_json(old) END,
                           'new', inventory.sku_json(s)));
    PERFORM pgcloud.emit('sku.upserted', 'sku', s.code, inventory.sku_json(s));
    RETURN inventory.sku_json(s) || jsonb_build_object('created', old.code IS NULL);
END
$$;
COMMENT ON FUNCTION inventory.upsert_sku_apply(jsonb) IS 'Internal to api.admin_upsert_sku(): validates and creates or updates a SKU; audited and announced as sku.upserted.';

CREATE FUNCTION api.admin_upsert_sku(code text, gpu_model text, gpu_count int, vcpus int, memory_gb int, disk_gb int,
                                     region text, price_per_hour bigint, currency text DEFAULT 'usd')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('inventory.upsert_sku',
        jsonb_build_object('code', code, 'gpu_model', gpu_model, 'gpu_count', gpu_count, 'vcpus', vcpus,
                           'memory_gb', memory_gb, 'disk_gb', disk_gb, 'region', region,
                           'price_per_hour', price_per_hour, 'currency', currency),
        'inventory.upsert_sku_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text) IS 'Operators: defines or updates a SKU (an allocation shape and its price per hour in integer minor units, e.g. cents). Returns the SKU and created (true for a new one). The GPU model, GPU count and region of a SKU that nodes are registered with cannot change (409 sku_in_use). Audited; announced as sku.upserted; safe to retry with X-Idempotency-Key.';

-- ---- images ----------------------------------------------------------------

CREATE FUNCTION inventory.upsert_image_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_code text := args ->> 'code';
    v_series text := args ->> 'distro_series';
    old inventory.images;
    i inventory.images;
BEGIN
    PERFORM inventory.require(v_code ~ '^[a-z0-9][a-z0-9._-]{0,62}$',
        'code must be 1 to 63 characters: lower-case letters, digits, . _ - (starting with a letter or digit)');
    PERFORM inventory.require(v_series ~ '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$',
        'distro_series must be a MAAS distro series such as jammy or ubuntu/jammy');
    SELECT * INTO old FROM inventory.images m WHERE m.code = v_code FOR UPDATE;
    INSERT INTO inventory.images AS m (code, distro_series) VALUES (v_code, v_series)
    ON CONFLICT (code) DO UPDATE SET distro_series = excluded.distro_series, updated_at = now()
    RETURNING * INTO i;
    PERFORM pgcloud.audit('image.upserted', 'image', i.code, 'ok',
        jsonb_build_object('old_distro_series', old.distro_series, 'distro_series', i.distro_series));
    PERFORM pgcloud.emit('image.upserted', 'image', i.code,
        jsonb_build_object('code', i.code, 'distro_series', i.distro_series, 'updated_at', i.updated_at));
    RETURN jsonb_build_object('code', i.code, 'distro_series', i.distro_series, 'updated_at', i.updated_at,
                              'created', old.code IS NULL);
END
$$;
COMMENT ON FUNCTION inventory.upsert_image_apply(jsonb) IS 'Internal to api.admin_upsert_image(): validates and creates or updates an OS image; audited and announced as image.upserted.';

CREATE FUNCTION api.admin_upsert_image(code text, distro_series text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('inventory.upsert_image',
        jsonb_build_object('code', code, 'distro_series', distro_series), 'inventory.upsert_image_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_upsert_image(text, text) IS 'Operators: defines or updates an OS image users may deploy (code -> MAAS distro_series, e.g. jammy). Returns {code, distro_series, updated_at, created}. Audited; announced as image.upserted; safe to retry with X-Idempotency-Key.';

-- ---- nodes -----------------------------------------------------------------

CREATE FUNCTION inventory.register_node_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_host text := lower(btrim(args ->> 'hostname'));
    v_system text := btrim(args ->> 'maas_system_id');
    v_sku text := args ->> 'sku';
    s inventory.skus;
    n inventory.nodes;
    taken inventory.nodes;
BEGIN
    PERFORM inventory.require(length(v_host) <= 253
        AND v_host ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$',
        'hostname must be an RFC 1123 host name (letters, digits, - and dots; at most 253 characters)');
    PERFORM inventory.require(v_system ~ '^[a-z0-9][a-z0-9-]{0,63}$',
        'maas_system_id must be a MAAS system id (lower-case letters, digits, -)');
    PERFORM inventory.require(v_sku IS NOT NULL, 'sku is required');
    SELECT * INTO s FROM inventory.skus k WHERE k.code = v_sku FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('sku_not_found', format('no SKU %s', v_sku), 'Define it with api.admin_upsert_sku().');
    END IF;
    INSERT INTO inventory.nodes (hostname, maas_system_id, sku, region, gpu_model, slot_count, state, state_reason)
    VALUES (v_host, v_system, s.code, s.region, s.gpu_model, s.gpu_count, 'commissioning', 'registered; commissioning through MAAS')
    ON CONFLICT DO NOTHING
    RETURNING * INTO n;
    IF n.id IS NULL THEN
        SELECT * INTO taken FROM inventory.nodes x
         WHERE x.state <> 'retired' AND (x.hostname = v_host OR x.maas_system_id = v_system) LIMIT 1;
        PERFORM pgcloud.raise('node_already_registered',
            format('%s (MAAS system id %s) is already registered', taken.hostname, taken.maas_system_id),
            'Retire the old node first to register the machine again.');
    END IF;
    INSERT INTO inventory.slots (node_id, slot_index)
    SELECT n.id, i FROM generate_series(0, n.slot_count - 1) i;
    PERFORM pgcloud.audit('node.registered', 'node', n.id::text, 'ok',
        jsonb_build_object('hostname', n.hostname, 'maas_system_id', n.maas_system_id, 'sku', n.sku));
    PERFORM inventory.announce_node(n, 'node.registered', NULL);
    RETURN jsonb_build_object('id', n.id, 'hostname', n.hostname, 'maas_system_id', n.maas_system_id, 'sku', n.sku,
                              'region', n.region, 'gpu_model', n.gpu_model, 'slots', n.slot_count, 'state', n.state,
                              'registered_at', n.registered_at);
END
$$;
COMMENT ON FUNCTION inventory.register_node_apply(jsonb) IS 'Internal to api.admin_register_node(): registers a node in state commissioning with one slot per GPU of its SKU; audited and announced as node.registered (maas commissions it, then it becomes ready).';

CREATE FUNCTION api.admin_register_node(hostname text, maas_system_id text, sku text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('inventory.register_node',
        jsonb_build_object('hostname', hostname, 'maas_system_id', maas_system_id, 'sku', sku),
        'inventory.register_node_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_register_node(text, text, text) IS 'Operators: registers a MAAS machine as a node of a SKU (the SKU of the whole machine: its GPU count is the node''s number of slots). The node starts in state commissioning; MAAS commissions it and it becomes ready. Returns {id, hostname, maas_system_id, sku, region, gpu_model, slots, state, registered_at}. 409 node_already_registered for a hostname or system id in use. Audited; safe to retry with X-Idempotency-Key.';

CREATE FUNCTION inventory.lock_node(node_id uuid) RETURNS inventory.nodes
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
BEGIN
    PERFORM inventory.require(node_id IS NOT NULL, 'node_id is required');
    SELECT * INTO n FROM inventory.nodes x WHERE x.id = lock_node.node_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('node_not_found', format('no node %s', node_id));
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION inventory.lock_node(uuid) IS 'The node, locked for update; raises node_not_found.';

CREATE FUNCTION inventory.set_node_maintenance_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
    v_on boolean;
    prev text;
BEGIN
    PERFORM inventory.require(jsonb_typeof(args -> 'on') = 'boolean', 'on must be true or false');
    v_on := (args ->> 'on')::boolean;
    n := inventory.lock_node((args ->> 'node_id')::uuid);
    prev := n.state;
    IF v_on AND n.state = 'maintenance' OR NOT v_on AND n.state = 'ready' THEN
        RETURN jsonb_build_object('id', n.id, 'state', n.state, 'changed', false);
    END IF;
    IF NOT v_on AND n.state <> 'maintenance' THEN
        PERFORM pgcloud.raise('invalid_state_transition', format('node %s is %s, not in maintenance', n.hostname, n.state));
    END IF;
    UPDATE inventory.nodes x
       SET state = CASE WHEN v_on THEN 'maintenance' ELSE 'ready' END,
           state_reason = CASE WHEN v_on THEN 'maintenance (operator)' ELSE 'back from maintenance (operator)' END,
           updated_at = now()
     WHERE x.id = n.id
    RETURNING * INTO n;
    PERFORM pgcloud.audit(CASE WHEN v_on THEN 'node.maintenance_on' ELSE 'node.maintenance_off' END, 'node', n.id::text,
        'ok', jsonb_build_object('hostname', n.hostname, 'previous_state', prev, 'state', n.state));
    PERFORM inventory.announce_node(n, 'node.state_changed', prev);
    RETURN jsonb_build_object('id', n.id, 'state', n.state, 'previous_state', prev, 'changed', true);
END
$$;
COMMENT ON FUNCTION inventory.set_node_maintenance_apply(jsonb) IS 'Internal to api.admin_set_node_maintenance(): {node_id, on}; audited as node.maintenance_on / node.maintenance_off and announced as node.state_changed.';

CREATE FUNCTION api.admin_set_node_maintenance(node_id uuid, "on" boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('inventory.set_node_maintenance',
        jsonb_build_object('node_id', node_id, 'on', "on"), 'inventory.set_node_maintenance_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_set_node_maintenance(uuid, boolean) IS 'Operators: on = true takes a ready, broken or failed node out of placement (allocations on it keep running); on = false returns a node in maintenance to ready. Returns {id, state, previous_state, changed}; asking for the state the node is already in changes nothing. Other states: 409 invalid_state_transition. Audited; safe to retry with X-Idempotency-Key.';

CREATE FUNCTION inventory.retire_node_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
    prev text;
    held integer;
BEGIN
    n := inventory.lock_node((args ->> 'node_id')::uuid);
    prev := n.state;
    IF n.state = 'retired' THEN
        RETURN jsonb_build_object('id', n.id, 'state', n.state, 'changed', false);
    END IF;
    SELECT count(*) INTO held FROM inventory.slots s WHERE s.node_id = n.id AND s.allocation_id IS NOT NULL;
    IF held > 0 THEN
        PERFORM pgcloud.raise('node_in_use', format('%s of the slots of %s are held by allocations', held, n.hostname),
            'Put the node in maintenance, wait for its allocations to end, then retire it.');
    END IF;
    UPDATE inventory.nodes x SET state = 'retired', state_reason = 'retired (operator)', retired_at = now(), updated_at = now()
     WHERE x.id = n.id
    RETURNING * INTO n;
    PERFORM pgcloud.audit('node.retired', 'node', n.id::text, 'ok',
        jsonb_build_object('hostname', n.hostname, 'maas_system_id', n.maas_system_id, 'previous_state', prev));
    PERFORM inventory.announce_node(n, 'node.state_changed', prev);
    RETURN jsonb_build_object('id', n.id, 'state', n.state, 'previous_state', prev, 'changed', true);
END
$$;
COMMENT ON FUNCTION inventory.retire_node_apply(jsonb) IS 'Internal to api.admin_retire_node(): retires a node that holds no allocation; audited as node.retired and announced as node.state_changed.';

CREATE FUNCTION api.admin_retire_node(node_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('inventory.retire_node', jsonb_build_object('node_id', node_id),
                              'inventory.retire_node_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_retire_node(uuid) IS 'Operators: retires a node for good (its hostname and system id may then be registered again). Refused with 409 node_in_use while allocations hold its slots: put it in maintenance first and wait. Returns {id, state, previous_state, changed}. Audited; safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.admin_list_nodes() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((
        SELECT jsonb_agg(inventory.node_json(n)
                         || jsonb_build_object('slots_held', (SELECT count(*) FROM inventory.slots s
                                                               WHERE s.node_id = n.id AND s.allocation_id IS NOT NULL))
                         ORDER BY n.region, n.hostname, n.registered_at)
          FROM inventory.nodes n), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_list_nodes() IS 'Operators: every node (retired ones too) with its state, last MAAS status, cached images and slots held: [{node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count, state, reason, maas_status, cached_images, registered_at, updated_at, slots_held}].';

-- source: sql/inventory/30_catalogue.sql
-- The public catalogue: SKUs, images and the marketplace.

CREATE FUNCTION api.list_skus() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN coalesce((SELECT jsonb_agg(inventory.sku_json(s) ORDER BY s.region, s.gpu_model, s.gpu_count, s.code)
                       FROM inventory.skus s), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_skus() IS 'The SKU catalogue: [{code, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region, price_per_hour, currency, updated_at}], by region, GPU model and size. price_per_hour is in integer minor units of currency (e.g. cents). Anyone may call it.';

CREATE FUNCTION api.list_images() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN coalesce((SELECT jsonb_agg(jsonb_build_object('code', i.code, 'distro_series', i.distro_series,
                                                         'updated_at', i.updated_at) ORDER BY i.code)
                       FROM inventory.images i), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_images() IS 'OS images that may be deployed: [{code, distro_series, updated_at}]. Anyone may call it.';

-- Free capacity per SKU: on every ready node of the SKU's GPU model and
-- region, how many allocations of the SKU its free slots would take.
CREATE VIEW inventory.marketplace AS
    WITH node_free AS (
        SELECT n.id, n.region, n.gpu_model, n.slot_count,
               count(*) FILTER (WHERE s.allocation_id IS NULL)::integer AS free_slots
          FROM inventory.nodes n JOIN inventory.slots s ON s.node_id = n.id
         WHERE n.state = 'ready'
         GROUP BY n.id)
    SELECT k.code AS sku, k.gpu_model, k.gpu_count, k.vcpus, k.memory_gb, k.disk_gb, k.region,
           k.price_per_hour, k.currency,
           coalesce(sum(f.free_slots / k.gpu_count), 0)::bigint AS available,
           coalesce(sum(f.free_slots), 0)::bigint AS free_gpus,
           coalesce(sum(f.slot_count), 0)::bigint AS total_gpus,
           count(f.id) AS nodes
      FROM inventory.skus k
      LEFT JOIN node_free f ON f.gpu_model = k.gpu_model AND f.region = k.region AND f.slot_count >= k.gpu_count
     GROUP BY k.code;
COMMENT ON VIEW inventory.marketplace IS 'Free capacity and price per SKU and region, from the slots of ready nodes (the slot claims are a read model of provisioning''s, up to the event relay''s lag).';
COMMENT ON COLUMN inventory.marketplace.sku IS 'SKU code.';
COMMENT ON COLUMN inventory.marketplace.gpu_model IS 'GPU model.';
COMMENT ON COLUMN inventory.marketplace.gpu_count IS 'GPUs per allocation.';
COMMENT ON COLUMN inventory.marketplace.vcpus IS 'Virtual CPUs.';
COMMENT ON COLUMN inventory.marketplace.memory_gb IS 'Memory (GB).';
COMMENT ON COLUMN inventory.marketplace.disk_gb IS 'Local disk (GB).';
COMMENT ON COLUMN inventory.marketplace.region IS 'Region.';
COMMENT ON COLUMN inventory.marketplace.price_per_hour IS 'Price per hour, integer minor units.';
COMMENT ON COLUMN inventory.marketplace.currency IS 'Currency.';
COMMENT ON COLUMN inventory.marketplace.available IS 'Allocations of this SKU that free slots would take now (per node: free slots divided by the SKU''s GPU count, rounded down).';
COMMENT ON COLUMN inventory.marketplace.free_gpus IS 'Free slots on ready nodes of this GPU model and region.';
COMMENT ON COLUMN inventory.marketplace.total_gpus IS 'All slots on ready nodes of this GPU model and region.';
COMMENT ON COLUMN inventory.marketplace.nodes IS 'Ready nodes of this GPU model and region big enough for the SKU.';

CREATE FUNCTION api.marketplace() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN coalesce((SELECT jsonb_agg(to_jsonb(m) ORDER BY m.region, m.price_per_hour, m.sku)
                       FROM inventory.marketplace m), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.marketplace() IS 'Available capacity and price per SKU and region: [{sku, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region, price_per_hour, currency, available, free_gpus, total_gpus, nodes}], by region and price. available counts the allocations of the SKU that free slots on ready nodes would take now. Anyone may call it.';

-- source: sql/inventory/40_events.sql
-- Events in: MAAS statuses (maas.machine_commissioned, maas.machine_status_changed)
-- and slot claims (allocation.requested / released / failed).

CREATE FUNCTION inventory.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, inventory
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
COMMENT ON FUNCTION inventory.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

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
         WHERE x.id = inventory.payload_uuid(payload, 'node_id') AND x.state <> 'retired' FOR UPDATE;
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

CREATE FUNCTION inventory.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                   payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
    target text;
    v_alloc uuid;
    v_image text;
    cached boolean := false;
    why text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'maas.machine_commissioned' THEN
        n := inventory.node_of_machine(payload);
        IF n.id IS NULL THEN
            RETURN;
        END IF;
        UPDATE inventory.nodes x SET maas_status = coalesce(left(payload ->> 'status_name', 64), x.maas_status)
         WHERE x.id = n.id RETURNING * INTO n;
        IF n.state IN ('commissioning', 'failed', 'broken') THEN
            PERFORM inventory.set_node_state(n, 'ready', 'commissioned by MAAS');
        END IF;
    WHEN 'maas.machine_status_changed' THEN
        n := inventory.node_of_machine(payload);
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
    WHEN 'allocation.requested' THEN
        v_alloc := inventory.payload_uuid(payload, 'allocation_id', aggregate_id);
        IF jsonb_typeof(payload -> 'slots') IS DISTINCT FROM 'array' THEN
            PERFORM pgcloud.raise('invalid_event', 'payload field slots must be an array of slot numbers');
        END IF;
        UPDATE inventory.slots s SET allocation_id = v_alloc, claimed_at = now()
         WHERE s.node_id = inventory.payload_uuid(payload, 'node_id')
           AND s.slot_index IN (SELECT (e #>> '{}')::integer FROM jsonb_array_elements(payload -> 'slots') e
                                 WHERE jsonb_typeof(e) = 'number');
    WHEN 'allocation.released', 'allocation.failed' THEN
        v_alloc := inventory.payload_uuid(payload, 'allocation_id', aggregate_id);
        UPDATE inventory.slots s SET allocation_id = NULL, claimed_at = NULL WHERE s.allocation_id = v_alloc;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION inventory.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): maas.machine_commissioned makes a commissioning node ready; maas.machine_status_changed applies the node_state MAAS''s status maps to (failed, broken, ready, commissioning; never over maintenance or retired) and records deployed images in the node''s cache; allocation.requested / released / failed keep the slots'' claims. Other types are ignored.';

-- source: sql/inventory/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.list_skus(), api.list_images(), api.marketplace()
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION
    api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text),
    api.admin_upsert_image(text, text),
    api.admin_register_node(text, text, text),
    api.admin_set_node_maintenance(uuid, boolean),
    api.admin_retire_node(uuid),
    api.admin_list_nodes()
    TO pgcloud_admin;

SELECT pgcloud.service_end('inventory');
