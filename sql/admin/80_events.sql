-- Event handlers: one per subscribed event type, admin.on_<type>(pgcloud.event_envelope),
-- called by the core's delivery with the inbox row in the same transaction.
-- allocation.> is every allocation.* type provisioning publishes.

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

CREATE FUNCTION admin.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, email, posix_username, created_at)
    VALUES (pgcloud.payload_uuid(event.payload, 'user_id', event.aggregate_id), event.payload ->> 'email', event.payload ->> 'posix_username',
            coalesce(admin.opt_time(event.payload, 'created_at'), now()))
    ON CONFLICT (user_id) DO UPDATE
        SET email = coalesce(excluded.email, u.email), posix_username = coalesce(excluded.posix_username, u.posix_username),
            created_at = coalesce(u.created_at, excluded.created_at), updated_at = now()
$$;
COMMENT ON FUNCTION admin.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: the user row (e-mail, POSIX name, created_at).';

CREATE FUNCTION admin.on_user_signed_in(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, last_sign_in_at, sign_ins)
    VALUES (pgcloud.payload_uuid(event.payload, 'user_id', event.aggregate_id), coalesce(admin.opt_time(event.payload, 'signed_in_at'), now()), 1)
    ON CONFLICT (user_id) DO UPDATE
        SET last_sign_in_at = greatest(u.last_sign_in_at, excluded.last_sign_in_at), sign_ins = u.sign_ins + 1,
            updated_at = now()
$$;
COMMENT ON FUNCTION admin.on_user_signed_in(pgcloud.event_envelope) IS 'Event handler of user.signed_in: last sign-in (the newest wins) and the count.';

CREATE FUNCTION admin.on_ledger_entry_posted(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, balance, currency, last_entry_id)
    VALUES (pgcloud.payload_uuid(event.payload, 'user_id', event.aggregate_id), admin.opt_bigint(event.payload, 'balance_after'),
            event.payload ->> 'currency', admin.opt_bigint(event.payload, 'entry_id'))
    ON CONFLICT (user_id) DO UPDATE
        SET balance = excluded.balance, currency = excluded.currency, last_entry_id = excluded.last_entry_id,
            updated_at = now()
        WHERE u.last_entry_id IS NULL OR excluded.last_entry_id > u.last_entry_id
$$;
COMMENT ON FUNCTION admin.on_ledger_entry_posted(pgcloud.event_envelope) IS 'Event handler of ledger.entry_posted: the balance after the newest entry (an older entry''s event changes nothing).';

CREATE FUNCTION admin.on_account_standing_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.users AS u (user_id, standing, can_allocate, standing_as_of)
    VALUES (pgcloud.payload_uuid(event.payload, 'user_id', event.aggregate_id), event.payload ->> 'standing',
            (event.payload ->> 'can_allocate')::boolean, coalesce(admin.opt_time(event.payload, 'as_of'), now()))
    ON CONFLICT (user_id) DO UPDATE
        SET standing = excluded.standing, can_allocate = excluded.can_allocate, standing_as_of = excluded.standing_as_of,
            updated_at = now()
        WHERE u.standing_as_of IS NULL OR excluded.standing_as_of >= u.standing_as_of
$$;
COMMENT ON FUNCTION admin.on_account_standing_changed(pgcloud.event_envelope) IS 'Event handler of account.standing_changed: standing and can_allocate (ordered by as_of).';

-- Order of allocation states: an event never moves one back.
CREATE FUNCTION admin.state_rank(state text) RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    SELECT CASE state WHEN 'requested' THEN 1 WHEN 'provisioning' THEN 2 WHEN 'active' THEN 3
                      WHEN 'releasing' THEN 4 WHEN 'released' THEN 5 WHEN 'failed' THEN 5 END
$$;
COMMENT ON FUNCTION admin.state_rank(text) IS 'Rank of an allocation state (requested 1 ... released/failed 5).';

CREATE FUNCTION admin.apply_allocation(event_type text, aggregate_id text, payload jsonb) RETURNS void
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
    VALUES (pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id), admin.opt_uuid(payload, 'user_id'),
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
COMMENT ON FUNCTION admin.apply_allocation(text, text, jsonb) IS 'allocation.requested / provisioning / activated / releasing / released / failed: the allocation row; its state only moves forward, known facts are kept.';

CREATE FUNCTION admin.apply_node(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.nodes AS n (node_id, hostname, maas_system_id, sku, region, gpu_model, slot_count, state, reason,
                                  maas_status, registered_at, updated_at)
    VALUES (pgcloud.payload_uuid(payload, 'node_id', aggregate_id), payload ->> 'hostname', payload ->> 'maas_system_id',
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
COMMENT ON FUNCTION admin.apply_node(text, jsonb) IS 'node.registered / node.state_changed: the node row (the newest updated_at wins).';

CREATE FUNCTION admin.on_payment_succeeded(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
    INSERT INTO admin.payments (payment_id, user_id, amount, currency)
    VALUES (pgcloud.payload_uuid(event.payload, 'payment_id', event.aggregate_id), admin.opt_uuid(event.payload, 'user_id'),
            admin.opt_bigint(event.payload, 'amount'), event.payload ->> 'currency')
    ON CONFLICT (payment_id) DO NOTHING
$$;
COMMENT ON FUNCTION admin.on_payment_succeeded(pgcloud.event_envelope) IS 'Event handler of payment.succeeded: the payment row.';

CREATE FUNCTION admin.apply_refund(event_type text, aggregate_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    v_refund uuid := pgcloud.payload_uuid(payload, 'refund_id', CASE WHEN event_type <> 'payment.refunded' THEN aggregate_id END);
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
COMMENT ON FUNCTION admin.apply_refund(text, text, jsonb) IS 'refund.requested / payment.refunded / refund.failed: the refund row and the payment''s refunded amount.';

CREATE FUNCTION admin.on_audit_recorded(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    payload jsonb := event.payload;
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
            payload ->> 'correlation_id', event.event_id)
    ON CONFLICT (database, audit_id) DO NOTHING;
END
$$;
COMMENT ON FUNCTION admin.on_audit_recorded(pgcloud.event_envelope) IS 'Event handler of audit.recorded: one row of admin.audit per (database, audit_id), whatever the number of deliveries.';

CREATE FUNCTION admin.on_allocation_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_requested(pgcloud.event_envelope) IS 'Event handler of allocation.requested: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_allocation_provisioning(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_provisioning(pgcloud.event_envelope) IS 'Event handler of allocation.provisioning: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_allocation_releasing(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_releasing(pgcloud.event_envelope) IS 'Event handler of allocation.releasing: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_allocation(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: the allocation row (admin.apply_allocation).';

CREATE FUNCTION admin.on_node_registered(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_node(event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_node_registered(pgcloud.event_envelope) IS 'Event handler of node.registered: the node row (admin.apply_node).';

CREATE FUNCTION admin.on_node_state_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_node(event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_node_state_changed(pgcloud.event_envelope) IS 'Event handler of node.state_changed: the node row (admin.apply_node).';

CREATE FUNCTION admin.on_refund_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_refund(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_refund_requested(pgcloud.event_envelope) IS 'Event handler of refund.requested: the refund row and the payment''s refunded amount (admin.apply_refund).';

CREATE FUNCTION admin.on_payment_refunded(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_refund(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_payment_refunded(pgcloud.event_envelope) IS 'Event handler of payment.refunded: the refund row and the payment''s refunded amount (admin.apply_refund).';

CREATE FUNCTION admin.on_refund_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$ SELECT admin.apply_refund(event.event_type, event.aggregate_id, event.payload) $$;
COMMENT ON FUNCTION admin.on_refund_failed(pgcloud.event_envelope) IS 'Event handler of refund.failed: the refund row and the payment''s refunded amount (admin.apply_refund).';
