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
SELECT pgcloud.expose('api.list_skus()', 'anon', 'user', 'admin', 'service');

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
SELECT pgcloud.expose('api.list_images()', 'anon', 'user', 'admin', 'service');

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
SELECT pgcloud.expose('api.marketplace()', 'anon', 'user', 'admin', 'service');
