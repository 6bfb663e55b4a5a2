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

CREATE FUNCTION inventory.int_arg(v bigint, field text, lo bigint, hi bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    IF v IS NULL OR v NOT BETWEEN lo AND hi THEN
        PERFORM pgcloud.raise('invalid_argument', format('%s must be a whole number from %s to %s', field, lo, hi));
    END IF;
    RETURN v;
END
$$;
COMMENT ON FUNCTION inventory.int_arg(bigint, text, bigint, bigint) IS 'A required whole-number argument (named field) within [lo, hi]; raises invalid_argument otherwise.';

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

CREATE FUNCTION inventory.upsert_sku_apply(p_code text, p_gpu_model text, p_gpu_count integer, p_vcpus integer,
                                           p_memory_gb integer, p_disk_gb integer, p_region text,
                                           p_price_per_hour bigint, p_currency text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_code text := p_code;
    v_model text := btrim(p_gpu_model);
    v_gpus integer := inventory.int_arg(p_gpu_count, 'gpu_count', 1, 64);
    v_vcpus integer := inventory.int_arg(p_vcpus, 'vcpus', 1, 4096);
    v_mem integer := inventory.int_arg(p_memory_gb, 'memory_gb', 1, 1048576);
    v_disk integer := inventory.int_arg(p_disk_gb, 'disk_gb', 0, 1048576);
    v_region text := p_region;
    v_price bigint := inventory.int_arg(p_price_per_hour, 'price_per_hour', 0, 100000000000);
    v_currency text := lower(p_currency);
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
COMMENT ON FUNCTION inventory.upsert_sku_apply(text, text, integer, integer, integer, integer, text, bigint, text) IS 'Internal to api.admin_upsert_sku() (which authorizes): validates and creates or updates a SKU; audited and announced as sku.upserted.';

CREATE FUNCTION api.admin_upsert_sku(code text, gpu_model text, gpu_count int, vcpus int, memory_gb int, disk_gb int,
                                     region text, price_per_hour bigint, currency text DEFAULT 'usd')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('inventory.upsert_sku',
            jsonb_build_object('code', code, 'gpu_model', gpu_model, 'gpu_count', gpu_count, 'vcpus', vcpus,
                               'memory_gb', memory_gb, 'disk_gb', disk_gb, 'region', region,
                               'price_per_hour', price_per_hour, 'currency', currency)),
        pgcloud.idempotent_done('inventory.upsert_sku',
            inventory.upsert_sku_apply(code, gpu_model, gpu_count, vcpus, memory_gb, disk_gb, region, price_per_hour,
                                       currency)));
END
$$;
COMMENT ON FUNCTION api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text) IS 'Operators: defines or updates a SKU (an allocation shape and its price per hour in integer minor units, e.g. cents). Returns the SKU and created (true for a new one). The GPU model, GPU count and region of a SKU that nodes are registered with cannot change (409 sku_in_use). Audited; announced as sku.upserted; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text)', 'admin');

-- ---- images ----------------------------------------------------------------

CREATE FUNCTION inventory.upsert_image_apply(p_code text, p_distro_series text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_code text := p_code;
    v_series text := p_distro_series;
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
COMMENT ON FUNCTION inventory.upsert_image_apply(text, text) IS 'Internal to api.admin_upsert_image() (which authorizes): validates and creates or updates an OS image; audited and announced as image.upserted.';

CREATE FUNCTION api.admin_upsert_image(code text, distro_series text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('inventory.upsert_image', jsonb_build_object('code', code, 'distro_series', distro_series)),
        pgcloud.idempotent_done('inventory.upsert_image', inventory.upsert_image_apply(code, distro_series)));
END
$$;
COMMENT ON FUNCTION api.admin_upsert_image(text, text) IS 'Operators: defines or updates an OS image users may deploy (code -> MAAS distro_series, e.g. jammy). Returns {code, distro_series, updated_at, created}. Audited; announced as image.upserted; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_upsert_image(text, text)', 'admin');

-- ---- nodes -----------------------------------------------------------------

CREATE FUNCTION inventory.register_node_apply(p_hostname text, p_maas_system_id text, p_sku text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    v_host text := lower(btrim(p_hostname));
    v_system text := btrim(p_maas_system_id);
    v_sku text := p_sku;
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
COMMENT ON FUNCTION inventory.register_node_apply(text, text, text) IS 'Internal to api.admin_register_node() (which authorizes): registers a node in state commissioning with one slot per GPU of its SKU; audited and announced as node.registered (maas commissions it, then it becomes ready).';

CREATE FUNCTION api.admin_register_node(hostname text, maas_system_id text, sku text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('inventory.register_node',
                           jsonb_build_object('hostname', hostname, 'maas_system_id', maas_system_id, 'sku', sku)),
        pgcloud.idempotent_done('inventory.register_node', inventory.register_node_apply(hostname, maas_system_id, sku)));
END
$$;
COMMENT ON FUNCTION api.admin_register_node(text, text, text) IS 'Operators: registers a MAAS machine as a node of a SKU (the SKU of the whole machine: its GPU count is the node''s number of slots). The node starts in state commissioning; MAAS commissions it and it becomes ready. Returns {id, hostname, maas_system_id, sku, region, gpu_model, slots, state, registered_at}. 409 node_already_registered for a hostname or system id in use. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_register_node(text, text, text)', 'admin');

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

CREATE FUNCTION inventory.set_node_maintenance_apply(p_node_id uuid, p_on boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
    v_on boolean := p_on;
    prev text;
BEGIN
    PERFORM inventory.require(v_on IS NOT NULL, 'on must be true or false');
    n := inventory.lock_node(p_node_id);
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
COMMENT ON FUNCTION inventory.set_node_maintenance_apply(uuid, boolean) IS 'Internal to api.admin_set_node_maintenance() (which authorizes): puts the node in maintenance (on) or back to ready; audited as node.maintenance_on / node.maintenance_off and announced as node.state_changed.';

CREATE FUNCTION api.admin_set_node_maintenance(node_id uuid, "on" boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('inventory.set_node_maintenance', jsonb_build_object('node_id', node_id, 'on', "on")),
        pgcloud.idempotent_done('inventory.set_node_maintenance', inventory.set_node_maintenance_apply(node_id, "on")));
END
$$;
COMMENT ON FUNCTION api.admin_set_node_maintenance(uuid, boolean) IS 'Operators: on = true takes a ready, broken or failed node out of placement (allocations on it keep running); on = false returns a node in maintenance to ready. Returns {id, state, previous_state, changed}; asking for the state the node is already in changes nothing. Other states: 409 invalid_state_transition. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_set_node_maintenance(uuid, boolean)', 'admin');

CREATE FUNCTION inventory.retire_node_apply(p_node_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, inventory
AS $$
DECLARE
    n inventory.nodes;
    prev text;
    held integer;
BEGIN
    n := inventory.lock_node(p_node_id);
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
COMMENT ON FUNCTION inventory.retire_node_apply(uuid) IS 'Internal to api.admin_retire_node() (which authorizes): retires a node that holds no allocation; audited as node.retired and announced as node.state_changed.';

CREATE FUNCTION api.admin_retire_node(node_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, inventory
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(pgcloud.idempotent('inventory.retire_node', jsonb_build_object('node_id', node_id)),
                    pgcloud.idempotent_done('inventory.retire_node', inventory.retire_node_apply(node_id)));
END
$$;
COMMENT ON FUNCTION api.admin_retire_node(uuid) IS 'Operators: retires a node for good (its hostname and system id may then be registered again). Refused with 409 node_in_use while allocations hold its slots: put it in maintenance first and wait. Returns {id, state, previous_state, changed}. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_retire_node(uuid)', 'admin');

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
SELECT pgcloud.expose('api.admin_list_nodes()', 'admin');
