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
SELECT pgcloud.expose('api.admin_users()', 'admin');

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
SELECT pgcloud.expose('api.admin_allocations(text)', 'admin');

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
SELECT pgcloud.expose('api.admin_nodes()', 'admin');

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
SELECT pgcloud.expose('api.admin_payments(uuid)', 'admin');

CREATE FUNCTION admin.force_release_apply(p_allocation_id uuid, p_reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, admin
AS $$
DECLARE
    v_id uuid := p_allocation_id;
    v_reason text := btrim(p_reason);
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
COMMENT ON FUNCTION admin.force_release_apply(uuid, text) IS 'Internal to api.admin_force_release() (which authorizes): checks the allocation is live in the read model, announces admin.force_release_requested {allocation_id, user_id, reason, requested_by} and audits admin.force_release with the reason.';

CREATE FUNCTION api.admin_force_release(allocation_id uuid, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, admin
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('admin.force_release', jsonb_build_object('allocation_id', allocation_id, 'reason', reason)),
        pgcloud.idempotent_done('admin.force_release', admin.force_release_apply(allocation_id, reason)));
END
$$;
COMMENT ON FUNCTION api.admin_force_release(uuid, text) IS 'Admins: releases a live allocation (requested, provisioning or active) whatever its user does; provisioning carries it out on admin.force_release_requested. reason (1 to 500 characters) is audited. Returns {allocation_id, state, reason, event_id}. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_force_release(uuid, text)', 'admin');

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
SELECT pgcloud.expose('api.admin_audit(timestamptz, timestamptz, uuid, text, bigint, int)', 'admin');
