-- Operator views (psql) over the read models; the api functions read them.

CREATE VIEW admin.user_overview AS
    SELECT u.user_id, u.email, u.posix_username, u.created_at, u.last_sign_in_at, u.sign_ins,
           u.balance, u.currency, u.standing, u.can_allocate,
           count(a.allocation_id) FILTER (WHERE a.state IN ('requested', 'provisioning', 'active', 'releasing')) AS live_allocations,
           count(a.allocation_id) FILTER (WHERE a.state = 'active') AS active_allocations,
           count(a.allocation_id) AS total_allocations,
           coalesce((SELECT sum(p.amount) FROM admin.payments p WHERE p.user_id = u.user_id), 0)::bigint AS paid,
           coalesce((SELECT sum(p.amount_refunded) FROM admin.payments p WHERE p.user_id = u.user_id), 0)::bigint AS refunded
      FROM admin.users u
      LEFT JOIN admin.allocations a ON a.user_id = u.user_id
     GROUP BY u.user_id;
COMMENT ON VIEW admin.user_overview IS 'Operators: every user with balance, standing, allocation counts, last sign-in, paid and refunded.';
COMMENT ON COLUMN admin.user_overview.user_id IS 'The user.';
COMMENT ON COLUMN admin.user_overview.email IS 'E-mail address.';
COMMENT ON COLUMN admin.user_overview.posix_username IS 'POSIX user name.';
COMMENT ON COLUMN admin.user_overview.created_at IS 'Account created.';
COMMENT ON COLUMN admin.user_overview.last_sign_in_at IS 'Last sign-in.';
COMMENT ON COLUMN admin.user_overview.sign_ins IS 'Sign-ins seen.';
COMMENT ON COLUMN admin.user_overview.balance IS 'Balance (minor units).';
COMMENT ON COLUMN admin.user_overview.currency IS 'Currency.';
COMMENT ON COLUMN admin.user_overview.standing IS 'Billing standing.';
COMMENT ON COLUMN admin.user_overview.can_allocate IS 'Whether billing lets the user allocate.';
COMMENT ON COLUMN admin.user_overview.live_allocations IS 'Allocations requested, provisioning, active or releasing.';
COMMENT ON COLUMN admin.user_overview.active_allocations IS 'Allocations active.';
COMMENT ON COLUMN admin.user_overview.total_allocations IS 'Allocations ever.';
COMMENT ON COLUMN admin.user_overview.paid IS 'Sum of payments.';
COMMENT ON COLUMN admin.user_overview.refunded IS 'Sum refunded.';

CREATE VIEW admin.node_overview AS
    SELECT n.node_id, n.hostname, n.maas_system_id, n.sku, n.region, n.gpu_model, n.slot_count, n.state, n.reason,
           n.maas_status, n.registered_at, n.updated_at,
           count(a.allocation_id) FILTER (WHERE a.state IN ('requested', 'provisioning', 'active', 'releasing')) AS live_allocations,
           coalesce(sum(a.gpu_count) FILTER (WHERE a.state IN ('requested', 'provisioning', 'active', 'releasing')), 0)::integer AS slots_in_use
      FROM admin.nodes n
      LEFT JOIN admin.allocations a ON a.node_id = n.node_id
     GROUP BY n.node_id;
COMMENT ON VIEW admin.node_overview IS 'Operators: every node with its state and the allocations on it.';
COMMENT ON COLUMN admin.node_overview.node_id IS 'The node.';
COMMENT ON COLUMN admin.node_overview.hostname IS 'Host name.';
COMMENT ON COLUMN admin.node_overview.maas_system_id IS 'MAAS system id.';
COMMENT ON COLUMN admin.node_overview.sku IS 'SKU.';
COMMENT ON COLUMN admin.node_overview.region IS 'Region.';
COMMENT ON COLUMN admin.node_overview.gpu_model IS 'GPU model.';
COMMENT ON COLUMN admin.node_overview.slot_count IS 'Slots.';
COMMENT ON COLUMN admin.node_overview.state IS 'Inventory state.';
COMMENT ON COLUMN admin.node_overview.reason IS 'Why.';
COMMENT ON COLUMN admin.node_overview.maas_status IS 'MAAS status.';
COMMENT ON COLUMN admin.node_overview.registered_at IS 'Registered.';
COMMENT ON COLUMN admin.node_overview.updated_at IS 'Last update.';
COMMENT ON COLUMN admin.node_overview.live_allocations IS 'Live allocations on it.';
COMMENT ON COLUMN admin.node_overview.slots_in_use IS 'GPU slots those hold.';
