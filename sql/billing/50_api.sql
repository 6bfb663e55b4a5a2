-- The public API: balance, ledger pages, usage; operators' adjustment and check.

CREATE FUNCTION api.balance() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    a billing.balances;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    SELECT * INTO a FROM billing.balances x WHERE x.account_id = v_user;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('balance', 0, 'currency', pgcloud.policy('billing.currency', NULL::text),
                                  'standing', 'exhausted', 'can_allocate', false, 'as_of_entry_id', NULL);
    END IF;
    RETURN jsonb_build_object('balance', a.balance, 'currency', a.currency,
                              'standing', coalesce(a.standing, billing.standing_of(a.balance)),
                              'can_allocate', a.balance >= pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint),
                              'as_of_entry_id', a.last_entry_id);
END
$$;
COMMENT ON FUNCTION api.balance() IS 'Your balance: {balance (minor units), currency, standing (good, low or exhausted), can_allocate, as_of_entry_id}. Read in constant time at any ledger size (one index descent): the running balance carried by your newest ledger entry, which equals the sum of your entries.';
SELECT pgcloud.expose('api.balance()', 'user', 'admin');

CREATE FUNCTION api.ledger(before bigint DEFAULT NULL, "limit" integer DEFAULT 50) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    max_page integer := pgcloud.policy('billing.ledger_page_max', NULL::integer);
    page jsonb;
    n integer;
    last_id bigint;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    IF "limit" IS NULL OR "limit" < 1 OR "limit" > max_page THEN
        PERFORM pgcloud.raise('invalid_argument', format('limit must be between 1 and %s', max_page));
    END IF;
    IF before IS NOT NULL AND before < 1 THEN
        PERFORM pgcloud.raise('invalid_argument', 'before must be an entry id (a positive integer)');
    END IF;
    SELECT coalesce(jsonb_agg(billing.entry_json(e) ORDER BY e.id DESC), '[]'::jsonb), count(*), min(e.id)
      INTO page, n, last_id
      FROM (SELECT * FROM billing.ledger_entries l
             WHERE l.account_id = v_user AND (ledger.before IS NULL OR l.id < ledger.before)
             ORDER BY l.id DESC LIMIT "limit") e;
    RETURN jsonb_build_object('entries', page,
        'next_before', CASE WHEN n = "limit" AND EXISTS (SELECT 1 FROM billing.ledger_entries l
                                                         WHERE l.account_id = v_user AND l.id < last_id)
                            THEN last_id END);
END
$$;
COMMENT ON FUNCTION api.ledger(bigint, integer) IS 'Your ledger entries, newest first, keyset-paginated: {entries: [{id, kind, amount, currency, balance_after, cause_type, cause_id, memo, created_at}], next_before}. Pass next_before as before for the next page (NULL when there is none); limit is 1 to billing.ledger_page_max.';
SELECT pgcloud.expose('api.ledger(bigint, integer)', 'user', 'admin');

CREATE FUNCTION api.usage(allocation_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    role text;
    v_user uuid;
    a billing.allocations;
    max_records integer := pgcloud.policy('billing.usage_records_max', NULL::integer);
    recs jsonb;
    totals record;
BEGIN
    role := pgcloud.authorize('user');
    IF role <> 'pgcloud_admin' THEN
        v_user := pgcloud.require_user();
    END IF;
    SELECT * INTO a FROM billing.allocations x WHERE x.allocation_id = usage.allocation_id;
    -- Someone else's allocation is "not found" too.
    IF NOT FOUND OR (v_user IS NOT NULL AND a.account_id IS DISTINCT FROM v_user) THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', usage.allocation_id));
    END IF;
    SELECT count(*) AS n, coalesce(sum(u.seconds), 0)::bigint AS seconds, coalesce(sum(u.amount), 0)::bigint AS amount
      INTO totals FROM billing.usage_records u WHERE u.allocation_id = a.allocation_id;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'kind', r.kind, 'interval', r.interval_no,
                                                 'period_start', r.period_start, 'period_end', r.period_end,
                                                 'seconds', r.seconds, 'amount', r.amount) ORDER BY r.id), '[]'::jsonb)
      INTO recs
      FROM (SELECT * FROM billing.usage_records u WHERE u.allocation_id = a.allocation_id
             ORDER BY u.id DESC LIMIT max_records) r;
    RETURN jsonb_build_object(
        'allocation_id', a.allocation_id, 'sku', a.sku, 'price_per_hour', a.price_per_hour, 'currency', a.currency,
        'state', CASE WHEN a.started_at IS NULL THEN 'never_active' WHEN a.ended_at IS NULL THEN 'active' ELSE 'ended' END,
        'started_at', a.started_at, 'ended_at', a.ended_at, 'settled', a.settled,
        'seconds', totals.seconds, 'amount', totals.amount, 'records_total', totals.n,
        'records', recs, 'records_truncated', totals.n > max_records);
END
$$;
COMMENT ON FUNCTION api.usage(uuid) IS 'Usage of one of your allocations (admins: any): {allocation_id, sku, price_per_hour, currency, state, started_at, ended_at, settled, seconds, amount, records_total, records: [{id, kind, interval, period_start, period_end, seconds, amount}], records_truncated}. seconds and amount cover every record; the list holds the most recent billing.usage_records_max. Another user''s allocation is 404 allocation_not_found.';
SELECT pgcloud.expose('api.usage(uuid)', 'user', 'admin');

CREATE FUNCTION billing.adjust_balance_apply(p_user_id uuid, p_amount bigint, p_reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid := p_user_id;
    amount bigint := p_amount;
    reason text := btrim(p_reason);
    a billing.accounts;
    e billing.ledger_entries;
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'user_id is required');
    END IF;
    IF amount IS NULL OR amount = 0 THEN
        PERFORM pgcloud.raise('invalid_argument', 'amount must be a non-zero integer (minor units)');
    END IF;
    IF reason IS NULL OR reason = '' OR length(reason) > 500 THEN
        PERFORM pgcloud.raise('invalid_argument', 'reason must be 1 to 500 characters');
    END IF;
    a := billing.open_account(v_user);
    e := billing.post_entry(v_user, 'adjustment', amount, a.currency, 'adjustment', gen_random_uuid()::text, reason);
    PERFORM pgcloud.audit('ledger.adjusted', 'account', v_user::text, 'ok',
        jsonb_build_object('entry_id', e.id, 'amount', amount, 'currency', e.currency, 'reason', reason,
                           'balance_after', e.balance_after));
    PERFORM billing.evaluate_standing(v_user);
    RETURN billing.entry_json(e);
END
$$;
COMMENT ON FUNCTION billing.adjust_balance_apply(uuid, bigint, text) IS 'Internal to api.admin_adjust_balance() (which authorizes): posts amount for the user as an adjustment entry with reason; audited as ledger.adjusted.';

CREATE FUNCTION api.admin_adjust_balance(user_id uuid, amount bigint, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('billing.adjust_balance',
                           jsonb_build_object('user_id', user_id, 'amount', amount, 'reason', reason)),
        pgcloud.idempotent_done('billing.adjust_balance', billing.adjust_balance_apply(user_id, amount, reason)));
END
$$;
COMMENT ON FUNCTION api.admin_adjust_balance(uuid, bigint, text) IS 'Operators: corrects a balance with a new adjustment entry (amount in minor units, positive or negative; the ledger is never edited). Returns the entry. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_adjust_balance(uuid, bigint, text)', 'admin');

CREATE FUNCTION api.admin_verify_ledger(user_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    problems jsonb;
BEGIN
    PERFORM pgcloud.authorize('admin');
    SELECT coalesce(jsonb_agg(to_jsonb(v) ORDER BY v.account_id, v.entry_id), '[]'::jsonb) INTO problems
      FROM billing.verify_ledger(admin_verify_ledger.user_id) v;
    RETURN jsonb_build_object('consistent', jsonb_array_length(problems) = 0, 'problems', problems,
        'accounts', (SELECT count(*) FROM billing.accounts a
                      WHERE admin_verify_ledger.user_id IS NULL OR a.account_id = admin_verify_ledger.user_id));
END
$$;
COMMENT ON FUNCTION api.admin_verify_ledger(uuid) IS 'Operators: checks the ledger invariant (balance = sum of entries = last balance_after, unbroken chain) for one user or all: {consistent, problems: [{account_id, problem, entry_id, expected, actual}], accounts}.';
SELECT pgcloud.expose('api.admin_verify_ledger(uuid)', 'admin');
