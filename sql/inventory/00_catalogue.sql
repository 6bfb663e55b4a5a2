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

-- Error catalogue. sku_not_found and image_not_found, shared with
-- provisioning, are the core's.
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('node_not_found',          404, 'The node does not exist.', 'inventory'),
    ('node_already_registered', 409, 'A node with this hostname or MAAS system id is already registered.', 'inventory'),
    ('node_in_use',             409, 'The node still holds allocations.', 'inventory'),
    ('sku_in_use',              409, 'The SKU''s GPU model, GPU count and region cannot change while nodes are registered with it.', 'inventory');
