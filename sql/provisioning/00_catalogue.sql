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

-- Error catalogue (codes shared with other services are the core's).
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('capacity_unavailable',         409, 'There is no free capacity for this SKU and image right now.', 'provisioning'),
    ('capacity_conflict',            409, 'The placement collided with a concurrent one; retry the request.', 'provisioning'),
    ('allocation_limit_reached',     409, 'You have reached the maximum number of live allocations.', 'provisioning'),
    ('allocation_ssh_key_not_found', 404, 'An SSH key given is not one of your keys.', 'provisioning'),
    ('insufficient_balance',         402, 'Your balance is too low to create an allocation; top up first.', 'provisioning'),
    ('account_not_in_good_standing', 403, 'Your account is not in good standing.', 'provisioning');
-- sku_not_found, image_not_found and allocation_not_found are the core's (shared).

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('provisioning.max_live_allocations_per_user', '32', 'Allocations one user may hold at once (requested, provisioning, active or releasing).'),
    ('provisioning.max_ssh_keys_per_allocation', '10', 'SSH keys one allocation may be deployed with.'),
    ('provisioning.placement_attempts', '20', 'Times a placement looks for a node again when the node it waited for filled up, before it gives up with capacity_unavailable.'),
    ('provisioning.list_limit', '500', 'Most allocations api.list_allocations() returns (newest first).'),
    ('provisioning.node_tenancy', '"single"', 'single: a node holds the allocations of one user at a time (they share its deployment and its SSH keys); shared: any users'' allocations are packed onto one node.'),
    ('provisioning.reserve_first_interval', 'true', 'Whether each live allocation reserves its first accrual interval (price x billing.accrual_interval_seconds) against the balance, so concurrent allocations cannot overdraw it.');
