-- pgcloud_admin install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_admin" to load this file. \quit

SELECT pgcloud.service_begin('admin');
-- source: sql/admin/00_catalogue.sql
-- pgcloud_admin: operator views, force-release, audit query and export.
-- Schema admin, owned by pgcloud_svc_admin (created by pgcloud.service_begin).
--
-- Decisions:
--   * Admin never reads another service's tables: everything it shows comes
--     from events into its own read models (admin.users, admin.allocations,
--     admin.nodes, admin.payments, admin.refunds, admin.audit), so it works
--     the same with one database or one database per service.
--   * The audit of every service reaches it as audit.recorded events (core's
--     pgcloud.audit() announces each row), keyed by (database, audit_id):
--     one query sees all services, and a redelivered event changes nothing.
--   * api.admin_audit() returns a table (not JSON), so PostgREST serves it as
--     CSV when asked with Accept: text/csv, and psql exports it with \copy.
--     It is keyset-paginated: pass the last row's seq as after.
--   * api.admin_force_release() only announces admin.force_release_requested
--     {allocation_id, reason}; provisioning honours it. The request is audited
--     with the reason.
--   * Read models are ordered by what the events carry: an allocation never
--     goes back to an earlier state, a node or account keeps its newest
--     update (updated_at, as_of, the ledger entry id).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_live', 409, 'The allocation is not live (it is released, failed or being released).', 'admin'),
    ('audit_range_invalid', 400, 'The audit time range is not valid.', 'admin');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_found', 404, 'The allocation does not exist.', 'admin')
ON CONFLICT (code) DO NOTHING;

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('admin.audit_page_max', '10000', 'Most audit rows api.admin_audit() returns in one page.'),
    ('admin.audit_range_max_days', '366', 'Longest time range api.admin_audit() covers in one call (days).');

-- source: sql/admin/10_tables.sql
-- Read models, fed by events only.

CREATE TABLE admin.users (
    user_id         uuid PRIMARY KEY,
    email           text,
    posix_username  text,
    created_at      timestamptz,
    last_sign_in_at timestamptz,
    sign_ins        bigint NOT NULL DEFAULT 0,
    balance         bigint,
    currency        text,
    last_entry_id   bigint,
    standing        text,
    can_allocate    boolean,
    standing_as_of  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.users IS 'Read model of users: user.created, user.signed_in, ledger.entry_posted (balance), account.standing_changed (standing).';
COMMENT ON COLUMN admin.users.user_id IS 'The user.';
COMMENT ON COLUMN admin.users.email IS 'E-mail address.';
COMMENT ON COLUMN admin.users.posix_username IS 'POSIX user name.';
COMMENT ON COLUMN admin.users.created_at IS 'When the account was created.';
COMMENT ON COLUMN admin.users.last_sign_in_at IS 'Last sign-in.';
COMMENT ON COLUMN admin.users.sign_ins IS 'Sign-ins seen.';
COMMENT ON COLUMN admin.users.balance IS 'Balance after the newest ledger entry seen (minor units).';
COMMENT ON COLUMN admin.users.currency IS 'Account currency.';
COMMENT ON COLUMN admin.users.last_entry_id IS 'The newest ledger entry seen (older events do not overwrite the balance).';
COMMENT ON COLUMN admin.users.standing IS 'Billing standing (e.g. good, low, exhausted).';
COMMENT ON COLUMN admin.users.can_allocate IS 'Whether billing lets the user allocate.';
COMMENT ON COLUMN admin.users.standing_as_of IS 'When billing decided the standing (older events do not overwrite it).';
COMMENT ON COLUMN admin.users.updated_at IS 'When an event last changed the row.';

CREATE TABLE admin.allocations (
    allocation_id  uuid PRIMARY KEY,
    user_id        uuid,
    sku            text,
    region         text,
    node_id        uuid,
    node_hostname  text,
    gpu_count      integer,
    price_per_hour bigint,
    currency       text,
    state          text NOT NULL CHECK (state IN ('requested', 'provisioning', 'active', 'releasing', 'released', 'failed')),
    reason         text,
    requested_at   timestamptz,
    started_at     timestamptz,
    ended_at       timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_allocations_state_idx ON admin.allocations (state);
CREATE INDEX admin_allocations_user_idx ON admin.allocations (user_id);
COMMENT ON TABLE admin.allocations IS 'Read model of allocations from allocation.* events; the state only moves forward.';
COMMENT ON COLUMN admin.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN admin.allocations.user_id IS 'Its user.';
COMMENT ON COLUMN admin.allocations.sku IS 'SKU.';
COMMENT ON COLUMN admin.allocations.region IS 'Region.';
COMMENT ON COLUMN admin.allocations.node_id IS 'Node it runs on.';
COMMENT ON COLUMN admin.allocations.node_hostname IS 'Node host name.';
COMMENT ON COLUMN admin.allocations.gpu_count IS 'GPUs.';
COMMENT ON COLUMN admin.allocations.price_per_hour IS 'Price per hour (minor units).';
COMMENT ON COLUMN admin.allocations.currency IS 'Currency.';
COMMENT ON COLUMN admin.allocations.state IS 'requested, provisioning, active, releasing, released or failed.';
COMMENT ON COLUMN admin.allocations.reason IS 'Why it is being released or ended.';
COMMENT ON COLUMN admin.allocations.requested_at IS 'Requested.';
COMMENT ON COLUMN admin.allocations.started_at IS 'Became active.';
COMMENT ON COLUMN admin.allocations.ended_at IS 'Released or failed.';
COMMENT ON COLUMN admin.allocations.updated_at IS 'Last event applied.';

CREATE TABLE admin.nodes (
    node_id        uuid PRIMARY KEY,
    hostname       text,
    maas_system_id text,
    sku            text,
    region         text,
    gpu_model      text,
    slot_count     integer,
    state          text,
    reason         text,
    maas_status    text,
    registered_at  timestamptz,
    updated_at     timestamptz
);
COMMENT ON TABLE admin.nodes IS 'Read model of nodes from node.registered and node.state_changed (the newest updated_at wins).';
COMMENT ON COLUMN admin.nodes.node_id IS 'The node.';
COMMENT ON COLUMN admin.nodes.hostname IS 'Host name.';
COMMENT ON COLUMN admin.nodes.maas_system_id IS 'MAAS system id.';
COMMENT ON COLUMN admin.nodes.sku IS 'SKU.';
COMMENT ON COLUMN admin.nodes.region IS 'Region.';
COMMENT ON COLUMN admin.nodes.gpu_model IS 'GPU model.';
COMMENT ON COLUMN admin.nodes.slot_count IS 'Slots.';
COMMENT ON COLUMN admin.nodes.state IS 'Inventory state.';
COMMENT ON COLUMN admin.nodes.reason IS 'Why it is in that state.';
COMMENT ON COLUMN admin.nodes.maas_status IS 'MAAS status name.';
COMMENT ON COLUMN admin.nodes.registered_at IS 'Registered.';
COMMENT ON COLUMN admin.nodes.updated_at IS 'Inventory''s last update.';

CREATE TABLE admin.payments (
    payment_id      uuid PRIMARY KEY,
    user_id         uuid,
    amount          bigint,
    currency        text,
    amount_refunded bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.payments IS 'Read model of payments (payment.succeeded) and what was refunded of them (payment.refunded).';
COMMENT ON COLUMN admin.payments.payment_id IS 'Payment id (what api.admin_refund() takes).';
COMMENT ON COLUMN admin.payments.user_id IS 'Payer.';
COMMENT ON COLUMN admin.payments.amount IS 'Amount (minor units).';
COMMENT ON COLUMN admin.payments.currency IS 'Currency.';
COMMENT ON COLUMN admin.payments.amount_refunded IS 'Refunded so far.';
COMMENT ON COLUMN admin.payments.created_at IS 'When admin learnt of it.';

CREATE TABLE admin.refunds (
    refund_id  uuid PRIMARY KEY,
    payment_id uuid,
    user_id    uuid,
    amount     bigint,
    currency   text,
    reason     text,
    status     text NOT NULL CHECK (status IN ('requested', 'refunded', 'failed')),
    failure    text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.refunds IS 'Read model of refunds: refund.requested, payment.refunded, refund.failed.';
COMMENT ON COLUMN admin.refunds.refund_id IS 'Refund id.';
COMMENT ON COLUMN admin.refunds.payment_id IS 'Payment refunded.';
COMMENT ON COLUMN admin.refunds.user_id IS 'Payer.';
COMMENT ON COLUMN admin.refunds.amount IS 'Amount.';
COMMENT ON COLUMN admin.refunds.currency IS 'Currency.';
COMMENT ON COLUMN admin.refunds.reason IS 'Why (from the operator).';
COMMENT ON COLUMN admin.refunds.status IS 'requested, refunded or failed.';
COMMENT ON COLUMN admin.refunds.failure IS 'Why it failed.';
COMMENT ON COLUMN admin.refunds.updated_at IS 'Last event applied.';

CREATE TABLE admin.audit (
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    database       text NOT NULL,
    audit_id       bigint NOT NULL,
    at             timestamptz NOT NULL,
    actor          uuid,
    role           text,
    action         text NOT NULL,
    target_type    text,
    target_id      text,
    result         text,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    correlation_id text,
    event_id       uuid NOT NULL,
    PRIMARY KEY (database, audit_id)
);
CREATE INDEX admin_audit_at_idx ON admin.audit (at, database, audit_id);
CREATE INDEX admin_audit_actor_idx ON admin.audit (actor, at) WHERE actor IS NOT NULL;
CREATE INDEX admin_audit_action_idx ON admin.audit (action, at);
CREATE TRIGGER admin_audit_immutable BEFORE UPDATE OR DELETE ON admin.audit
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin.audit
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE admin.audit IS 'The audit of every service and database, from audit.recorded events; append-only like pgcloud.audit_logs.';
COMMENT ON COLUMN admin.audit.seq IS 'Arrival number here: the pagination cursor of api.admin_audit().';
COMMENT ON COLUMN admin.audit.database IS 'Database the entry was written in.';
COMMENT ON COLUMN admin.audit.audit_id IS 'Its id in that database''s pgcloud.audit_logs.';
COMMENT ON COLUMN admin.audit.at IS 'When it was written.';
COMMENT ON COLUMN admin.audit.actor IS 'Acting user or service account, NULL for operators and anonymous callers.';
COMMENT ON COLUMN admin.audit.role IS 'Role the actor used.';
COMMENT ON COLUMN admin.audit.action IS 'Dotted action name.';
COMMENT ON COLUMN admin.audit.target_type IS 'Kind of object acted on.';
COMMENT ON COLUMN admin.audit.target_id IS 'Object acted on.';
COMMENT ON COLUMN admin.audit.result IS 'ok, denied, rejected or failed.';
COMMENT ON COLUMN admin.audit.details IS 'Further facts (scrubbed at the source).';
COMMENT ON COLUMN admin.audit.correlation_id IS 'Correlation id of the request.';
COMMENT ON COLUMN admin.audit.event_id IS 'The audit.recorded event that brought it.';

SELECT pg_catalog.pg_extension_config_dump('admin.users', '');
SELECT pg_catalog.pg_extension_config_dump('admin.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('admin.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('admin.payments', '');
SELECT pg_catalog.pg_extension_config_dump('admin.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('admin.audit', '');

-- source: sql/admin/20_views.sql
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

-- source: sql/admin/30_api.sql
-- The admin API: cross-user views, force-release, audit query.

CREATE FUNCTION api.admin_users() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((SELECT jsonb_agg(to_jsonb(u) ORDER BY u.created_at NULLS LAST, u.user_id)
                       FROM admin.user_overview u), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_users() IS 'Admins: every user with {user_id, email, posix_username, created_at, last_sign_in_at, sign_ins, balance, currency, standing, can_allocate, live_allocations, active_allocations, total_allocations, paid, refunded}, oldest first.';

CREATE FUNCTION api.admin_allocations(state text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF state IS NOT NULL AND state NOT IN ('requested', 'provisioning', 'active', 'releasing', 'released', 'failed') THEN
        PERFORM pgcloud.raise('invalid_argument',
            format('state "%s" is not requested, provisioning, active, releasing, released or failed', left(state, 32)));
    END IF;
    RETURN coalesce((SELECT jsonb_agg(to_jsonb(a) || jsonb_build_object('email', u.email)
                                      ORDER BY a.requested_at DESC NULLS LAST, a.allocation_id)
                       FROM admin.allocations a LEFT JOIN admin.users u ON u.user_id = a.user_id
                      WHERE admin_allocations.state IS NULL OR a.state = admin_allocations.state), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_allocations(text) IS 'Admins: every allocation (or those in state: requested, provisioning, active, releasing, released, failed), newest first, with its user''s e-mail.';

CREATE FUNCTION api.admin_nodes() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((SELECT jsonb_agg(to_jsonb(n) ORDER BY n.hostname, n.node_id) FROM admin.node_overview n), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_nodes() IS 'Admins: every node with its state, MAAS status and the live allocations and GPU slots on it, by host name.';

CREATE FUNCTION api.admin_payments(user_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((SELECT jsonb_agg(to_jsonb(p) || jsonb_build_object('refunds',
                                coalesce((SELECT jsonb_agg(to_jsonb(r) ORDER BY r.updated_at) FROM admin.refunds r
                                           WHERE r.payment_id = p.payment_id), '[]'::jsonb))
                                      ORDER BY p.created_at DESC)
                       FROM admin.payments p
                      WHERE admin_payments.user_id IS NULL OR p.user_id = admin_payments.user_id), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_payments(uuid) IS 'Admins: payments (of one user, or all), newest first, each with its refunds. Refunds are made with api.admin_refund() (payments).';

CREATE FUNCTION admin.force_release_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    v_id uuid := (args ->> 'allocation_id')::uuid;
    v_reason text := btrim(args ->> 'reason');
    a admin.allocations;
    ev uuid;
BEGIN
    IF v_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'allocation_id is required');
    END IF;
    IF v_reason IS NULL OR v_reason = '' OR length(v_reason) > 500 OR v_reason ~ '[[:cntrl:]]' THEN
        PERFORM pgcloud.raise('invalid_argument', 'reason must be 1 to 500 characters without control characters');
    END IF;
    SELECT * INTO a FROM admin.allocations x WHERE x.allocation_id = v_id;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', v_id));
    END IF;
    IF a.state NOT IN ('requested', 'provisioning', 'active') THEN
        PERFORM pgcloud.raise('allocation_not_live', format('allocation %s is %s', v_id, a.state));
    END IF;
    ev := pgcloud.emit('admin.force_release_requested', 'allocation', v_id::text,
        jsonb_build_object('allocation_id', v_id, 'user_id', a.user_id, 'reason', v_reason,
                           'requested_by', pgcloud.user_id()));
    PERFORM pgcloud.audit('admin.force_release', 'allocation', v_id::text, 'ok',
        jsonb_build_object('reason', v_reason, 'user_id', a.user_id, 'state', a.state, 'event_id', ev));
    RETURN jsonb_build_object('allocation_id', v_id, 'state', a.state, 'reason', v_reason, 'event_id', ev);
END
$$;
COMMENT ON FUNCTION admin.force_release_apply(jsonb) IS 'Internal to api.admin_force_release(): checks the allocation is live in the read model, announces admin.force_release_requested {allocation_id, user_id, reason, requested_by} and audits admin.force_release with the reason.';

CREATE FUNCTION api.admin_force_release(allocation_id uuid, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('admin.force_release', jsonb_build_object('allocation_id', allocation_id, 'reason', reason),
                              'admin.force_release_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_force_release(uuid, text) IS 'Admins: releases a live allocation (requested, provisioning or active) whatever its user does; provisioning carries it out on admin.force_release_requested. reason (1 to 500 characters) is audited. Returns {allocation_id, state, reason, event_id}. Safe to retry with X-Idempotency-Key.';

CREATE TYPE admin.audit_row AS (seq bigint, at timestamptz, database text, audit_id bigint, actor uuid, role text,
                                action text, target_type text, target_id text, result text, correlation_id text,
                                details jsonb);
COMMENT ON TYPE admin.audit_row IS 'A row of api.admin_audit() (and a column of its CSV export).';

CREATE FUNCTION api.admin_audit(since timestamptz, until timestamptz, actor uuid DEFAULT NULL, action text DEFAULT NULL,
                                after bigint DEFAULT NULL, "limit" int DEFAULT 1000)
RETURNS SETOF admin.audit_row
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    cur admin.audit;
    lim integer := pgcloud.policy('admin.audit_page_max', NULL::integer);
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF since IS NULL OR until IS NULL OR until < since THEN
        PERFORM pgcloud.raise('audit_range_invalid', 'since and until are required and until must not be before since');
    END IF;
    IF until - since > make_interval(days => pgcloud.policy('admin.audit_range_max_days', NULL::integer)) THEN
        PERFORM pgcloud.raise('audit_range_invalid',
            format('at most %s days per call', pgcloud.policy('admin.audit_range_max_days', NULL::integer)));
    END IF;
    IF "limit" IS NULL OR "limit" < 1 OR "limit" > lim THEN
        PERFORM pgcloud.raise('invalid_argument', format('limit must be between 1 and %s', lim));
    END IF;
    IF action IS NOT NULL AND action !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'action must be a dotted lower-case action name, e.g. allocation.created');
    END IF;
    IF after IS NOT NULL THEN
        SELECT * INTO cur FROM admin.audit x WHERE x.seq = after;
        IF NOT FOUND THEN
            PERFORM pgcloud.raise('invalid_argument', 'after must be the seq of a row returned before');
        END IF;
    END IF;
    -- Keyset pagination in (at, database, audit_id) order; after = the last row's seq.
    RETURN QUERY
    SELECT x.seq, x.at, x.database, x.audit_id, x.actor, x.role, x.action, x.target_type, x.target_id, x.result,
           x.correlation_id, x.details
      FROM admin.audit x
     WHERE x.at >= since AND x.at < until
       AND (admin_audit.actor IS NULL OR x.actor = admin_audit.actor)
       AND (admin_audit.action IS NULL OR x.action = admin_audit.action)
       AND (after IS NULL OR (x.at, x.database, x.audit_id) > (cur.at, cur.database, cur.audit_id))
     ORDER BY x.at, x.database, x.audit_id
     LIMIT "limit";
END
$$;
COMMENT ON FUNCTION api.admin_audit(timestamptz, timestamptz, uuid, text, bigint, int) IS 'Admins: the audit of every service in [since, until), oldest first, optionally of one actor and one action, at most "limit" rows (up to admin.audit_page_max); pass the last row''s seq as after for the next page. A table: PostgREST serves it as CSV with Accept: text/csv, psql exports it with \copy (SELECT * FROM api.admin_audit(...)) TO ''audit.csv'' CSV HEADER.';

-- source: sql/admin/80_events.sql
-- Event handlers: one per event type, dispatched by admin.on_event().

CREATE FUNCTION admin.uuid_of(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, admin
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
COMMENT ON FUNCTION admin.uuid_of(jsonb, text, text) IS 'A required uuid field of an event payload (or the fallback); raises invalid_event when missing or malformed.';

CREATE FUNCTION admin.opt_uuid(payload jsonb, field text) RETURNS uuid
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    SELECT CASE WHEN payload ->> field ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN (payload ->> field)::uuid END
$$;
COMMENT ON FUNCTION admin.opt_uuid(jsonb, text) IS 'An optional uuid field of an event payload, NULL when absent or malformed.';

CREATE FUNCTION admin.opt_time(payload jsonb, field text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    RETURN (payload ->> field)::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION admin.opt_time(jsonb, text) IS 'An optional timestamp field of an event payload, NULL when absent or malformed.';

CREATE FUNCTION admin.opt_bigint(payload jsonb, field text) RETURNS bigint
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    SELECT CASE WHEN jsonb_typeof(payload -> field) = 'number' AND (payload ->> field) ~ '^-?[0-9]{1,18}$'
                THEN (payload ->> field)::bigint END
$$;
COMMENT ON FUNCTION admin.opt_bigint(jsonb, text) IS 'An optional integer field of an event payload, NULL when absent or not an integer.';

CREATE FUNCTION admin.on_user_created(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, email, posix_username, created_at)
    VALUES (admin.uuid_of(payload, 'user_id', aggregate_id), payload ->> 'email', payload ->> 'posix_username',
            coalesce(admin.opt_time(payload, 'created_at'), now()))
    ON CONFLICT (user_id) DO UPDATE
        SET email = coalesce(excluded.email, u.email), posix_username = coalesce(excluded.posix_username, u.posix_username),
            created_at = coalesce(u.created_at, excluded.created_at), updated_at = now()
$$;
COMMENT ON FUNCTION admin.on_user_created(text, jsonb) IS 'user.created: the user row (e-mail, POSIX name, created_at).';

CREATE FUNCTION admin.on_user_signed_in(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, last_sign_in_at, sign_ins)
    VALUES (admin.uuid_of(payload, 'user_id', aggregate_id), coalesce(admin.opt_time(payload, 'signed_in_at'), now()), 1)
    ON CONFLICT (user_id) DO UPDATE
        SET last_sign_in_at = greatest(u.last_sign_in_at, excluded.last_sign_in_at), sign_ins = u.sign_ins + 1,
            updated_at = now()
$$;
COMMENT ON FUNCTION admin.on_user_signed_in(text, jsonb) IS 'user.signed_in: last sign-in (the newest wins) and the count.';

CREATE FUNCTION admin.on_ledger_entry_posted(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, balance, currency, last_entry_id)
    VALUES (admin.uuid_of(payload, 'user_id', aggregate_id), admin.opt_bigint(payload, 'balance_after'),
            payload ->> 'currency', admin.opt_bigint(payload, 'entry_id'))
    ON CONFLICT (user_id) DO UPDATE
        SET balance = excluded.balance, currency = excluded.currency, last_entry_id = excluded.last_entry_id,
            updated_at = now()
        WHERE u.last_entry_id IS NULL OR excluded.last_entry_id > u.last_entry_id
$$;
COMMENT ON FUNCTION admin.on_ledger_entry_posted(text, jsonb) IS 'ledger.entry_posted: the balance after the newest entry (an older entry''s event changes nothing).';

CREATE FUNCTION admin.on_account_standing_changed(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, standing, can_allocate, standing_as_of)
    VALUES (admin.uuid_of(payload, 'user_id', aggregate_id), payload ->> 'standing',
            (payload ->> 'can_allocate')::boolean, coalesce(admin.opt_time(payload, 'as_of'), now()))
    ON CONFLICT (user_id) DO UPDATE
        SET standing = excluded.standing, can_allocate = excluded.can_allocate, standing_as_of = excluded.standing_as_of,
            updated_at = now()
        WHERE u.standing_as_of IS NULL OR excluded.standing_as_of >= u.standing_as_of
$$;
COMMENT ON FUNCTION admin.on_account_standing_changed(text, jsonb) IS 'account.standing_changed: standing and can_allocate (ordered by as_of).';

-- Order of allocation states: an event never moves one back.
CREATE FUNCTION admin.state_rank(state text) RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    SELECT CASE state WHEN 'requested' THEN 1 WHEN 'provisioning' THEN 2 WHEN 'active' THEN 3
                      WHEN 'releasing' THEN 4 WHEN 'released' THEN 5 WHEN 'failed' THEN 5 END
$$;
COMMENT ON FUNCTION admin.state_rank(text) IS 'Rank of an allocation state (requested 1 ... released/failed 5).';

CREATE FUNCTION admin.on_allocation(event_type text, aggregate_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    v_state text := CASE event_type
        WHEN 'allocation.requested' THEN 'requested' WHEN 'allocation.provisioning' THEN 'provisioning'
        WHEN 'allocation.activated' THEN 'active' WHEN 'allocation.releasing' THEN 'releasing'
        WHEN 'allocation.released' THEN 'released' WHEN 'allocation.failed' THEN 'failed' END;
BEGIN
    IF v_state IS NULL THEN
        RETURN;     -- an allocation.* type admin does not know
    END IF;
    INSERT INTO admin.allocations AS a (allocation_id, user_id, sku, region, node_id, node_hostname, gpu_count,
                                        price_per_hour, currency, state, reason, requested_at, started_at, ended_at)
    VALUES (admin.uuid_of(payload, 'allocation_id', aggregate_id), admin.opt_uuid(payload, 'user_id'),
            payload ->> 'sku', payload ->> 'region', admin.opt_uuid(payload, 'node_id'),
            coalesce(payload ->> 'node_hostname', payload ->> 'hostname'),
            admin.opt_bigint(payload, 'gpu_count')::integer, admin.opt_bigint(payload, 'price_per_hour'),
            payload ->> 'currency', v_state, left(payload ->> 'reason', 500),
            admin.opt_time(payload, 'requested_at'), admin.opt_time(payload, 'started_at'),
            CASE WHEN v_state IN ('released', 'failed') THEN coalesce(admin.opt_time(payload, 'ended_at'), now()) END)
    ON CONFLICT (allocation_id) DO UPDATE
        SET user_id = coalesce(excluded.user_id, a.user_id), sku = coalesce(excluded.sku, a.sku),
            region = coalesce(excluded.region, a.region), node_id = coalesce(excluded.node_id, a.node_id),
            node_hostname = coalesce(excluded.node_hostname, a.node_hostname),
            gpu_count = coalesce(excluded.gpu_count, a.gpu_count),
            price_per_hour = coalesce(excluded.price_per_hour, a.price_per_hour),
            currency = coalesce(excluded.currency, a.currency),
            state = CASE WHEN admin.state_rank(excluded.state) >= admin.state_rank(a.state) THEN excluded.state ELSE a.state END,
            reason = coalesce(excluded.reason, a.reason),
            requested_at = coalesce(a.requested_at, excluded.requested_at),
            started_at = coalesce(a.started_at, excluded.started_at),
            ended_at = coalesce(a.ended_at, excluded.ended_at),
            updated_at = now();
END
$$;
COMMENT ON FUNCTION admin.on_allocation(text, text, jsonb) IS 'allocation.requested / provisioning / activated / releasing / released / failed: the allocation row; its state only moves forward, known facts are kept.';

CREATE FUNCTION admin.on_node(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.nodes AS n (node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count, state, reason,
                                  maas_status, registered_at, updated_at)
    VALUES (admin.uuid_of(payload, 'node_id', aggregate_id), payload ->> 'hostname', payload ->> 'maas_system_id',
            payload ->> 'sku', payload ->> 'region', payload ->> 'gpu_model',
            admin.opt_bigint(payload, 'slot_count')::integer, payload ->> 'state', payload ->> 'reason',
            payload ->> 'maas_status', admin.opt_time(payload, 'registered_at'),
            coalesce(admin.opt_time(payload, 'updated_at'), now()))
    ON CONFLICT (node_id) DO UPDATE
        SET hostname = excluded.hostname, maas_system_id = excluded.maas_system_id, sku = excluded.sku,
            region = excluded.region, gpu_model = excluded.gpu_model, slot_count = excluded.slot_count,
            state = excluded.state, reason = excluded.reason, maas_status = excluded.maas_status,
            registered_at = coalesce(n.registered_at, excluded.registered_at), updated_at = excluded.updated_at
        WHERE n.updated_at IS NULL OR excluded.updated_at >= n.updated_at
$$;
COMMENT ON FUNCTION admin.on_node(text, jsonb) IS 'node.registered / node.state_changed: the node row (the newest updated_at wins).';

CREATE FUNCTION admin.on_payment_succeeded(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.payments (payment_id, user_id, amount, currency)
    VALUES (admin.uuid_of(payload, 'payment_id', aggregate_id), admin.opt_uuid(payload, 'user_id'),
            admin.opt_bigint(payload, 'amount'), payload ->> 'currency')
    ON CONFLICT (payment_id) DO NOTHING
$$;
COMMENT ON FUNCTION admin.on_payment_succeeded(text, jsonb) IS 'payment.succeeded: the payment row.';

CREATE FUNCTION admin.on_refund(event_type text, aggregate_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    v_refund uuid := admin.uuid_of(payload, 'refund_id', CASE WHEN event_type <> 'payment.refunded' THEN aggregate_id END);
    v_status text := CASE event_type WHEN 'refund.requested' THEN 'requested' WHEN 'payment.refunded' THEN 'refunded'
                                     ELSE 'failed' END;
    prev text;
BEGIN
    SELECT r.status INTO prev FROM admin.refunds r WHERE r.refund_id = v_refund FOR UPDATE;
    INSERT INTO admin.refunds AS r (refund_id, payment_id, user_id, amount, currency, reason, status, failure)
    VALUES (v_refund, admin.opt_uuid(payload, 'payment_id'), admin.opt_uuid(payload, 'user_id'),
            admin.opt_bigint(payload, 'amount'), payload ->> 'currency', left(payload ->> 'reason', 500), v_status,
            left(payload ->> 'failure_reason', 500))
    ON CONFLICT (refund_id) DO UPDATE
        SET payment_id = coalesce(r.payment_id, excluded.payment_id), user_id = coalesce(r.user_id, excluded.user_id),
            amount = coalesce(r.amount, excluded.amount), currency = coalesce(r.currency, excluded.currency),
            reason = coalesce(r.reason, excluded.reason),
            -- requested < refunded / failed; a refund that succeeded may still fail later (Stripe).
            status = CASE WHEN excluded.status = 'requested' THEN r.status ELSE excluded.status END,
            failure = coalesce(excluded.failure, r.failure), updated_at = now();
    -- What was refunded of the payment, counted once per refund.
    IF v_status = 'refunded' AND prev IS DISTINCT FROM 'refunded' THEN
        UPDATE admin.payments p SET amount_refunded = p.amount_refunded + coalesce(admin.opt_bigint(payload, 'amount'), 0)
         WHERE p.payment_id = admin.opt_uuid(payload, 'payment_id');
    ELSIF v_status = 'failed' AND prev = 'refunded' THEN
        UPDATE admin.payments p SET amount_refunded = p.amount_refunded - coalesce(admin.opt_bigint(payload, 'amount'), 0)
         WHERE p.payment_id = admin.opt_uuid(payload, 'payment_id');
    END IF;
END
$$;
COMMENT ON FUNCTION admin.on_refund(text, text, jsonb) IS 'refund.requested / payment.refunded / refund.failed: the refund row and the payment''s refunded amount.';

CREATE FUNCTION admin.on_audit_recorded(event_id uuid, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    IF payload ->> 'database' IS NULL OR admin.opt_bigint(payload, 'audit_id') IS NULL
       OR admin.opt_time(payload, 'at') IS NULL OR payload ->> 'action' IS NULL THEN
        PERFORM pgcloud.raise('invalid_event', 'audit.recorded needs database, audit_id, at and action');
    END IF;
    INSERT INTO admin.audit (database, audit_id, at, actor, role, action, target_type, target_id, result, details,
                             correlation_id, event_id)
    VALUES (left(payload ->> 'database', 63), admin.opt_bigint(payload, 'audit_id'), admin.opt_time(payload, 'at'),
            admin.opt_uuid(payload, 'actor'), payload ->> 'role', left(payload ->> 'action', 200),
            payload ->> 'target_type', payload ->> 'target_id', payload ->> 'result',
            CASE WHEN jsonb_typeof(payload -> 'details') = 'object' THEN payload -> 'details' ELSE '{}'::jsonb END,
            payload ->> 'correlation_id', event_id)
    ON CONFLICT (database, audit_id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION admin.on_audit_recorded(uuid, jsonb) IS 'audit.recorded: one row of admin.audit per (database, audit_id), whatever the number of deliveries.';

CREATE FUNCTION admin.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                               payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    IF event_type = 'audit.recorded' THEN
        PERFORM admin.on_audit_recorded(event_id, payload);
    ELSIF event_type = 'user.created' THEN
        PERFORM admin.on_user_created(aggregate_id, payload);
    ELSIF event_type = 'user.signed_in' THEN
        PERFORM admin.on_user_signed_in(aggregate_id, payload);
    ELSIF event_type = 'ledger.entry_posted' THEN
        PERFORM admin.on_ledger_entry_posted(aggregate_id, payload);
    ELSIF event_type = 'account.standing_changed' THEN
        PERFORM admin.on_account_standing_changed(aggregate_id, payload);
    ELSIF event_type LIKE 'allocation.%' THEN
        PERFORM admin.on_allocation(event_type, aggregate_id, payload);
    ELSIF event_type IN ('node.registered', 'node.state_changed') THEN
        PERFORM admin.on_node(aggregate_id, payload);
    ELSIF event_type = 'payment.succeeded' THEN
        PERFORM admin.on_payment_succeeded(aggregate_id, payload);
    ELSIF event_type IN ('refund.requested', 'payment.refunded', 'refund.failed') THEN
        PERFORM admin.on_refund(event_type, aggregate_id, payload);
    END IF;
END
$$;
COMMENT ON FUNCTION admin.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): hands each subscribed type to its admin.on_<type>() function. Other types are ignored.';

-- source: sql/admin/90_grants.sql
-- Who may call what: admins only (and each function checks the request's role too).
GRANT EXECUTE ON FUNCTION api.admin_users(), api.admin_allocations(text), api.admin_nodes(), api.admin_payments(uuid),
    api.admin_force_release(uuid, text), api.admin_audit(timestamptz, timestamptz, uuid, text, bigint, int)
    TO pgcloud_admin;

SELECT pgcloud.service_end('admin');
