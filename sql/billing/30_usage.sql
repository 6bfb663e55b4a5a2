-- Usage accrual: each interval of each active allocation charged exactly once.
--
-- Interval k of an allocation is [started_at + k*I, started_at + (k+1)*I) with
-- I its interval_seconds. A run charges every complete interval not charged
-- yet (catching up after a late or missed run), and for an allocation that has
-- ended, every interval up to ended_at, the last one prorated to the second.
-- With e(k) the whole seconds elapsed at an interval's bounds, interval k
-- costs floor(p * e(k+1) / 3600) - floor(p * e(k) / 3600): the amounts
-- telescope, so an allocation's records add up to floor(p * active seconds /
-- 3600), never a unit more or less. When the end arrives after intervals
-- past it were charged (a late event), one correction record gives the
-- difference back. Concurrent runs lock each allocation (FOR NO KEY UPDATE
-- SKIP LOCKED) and re-read its cursor; the unique (allocation_id, interval_no)
-- is the last line.

CREATE FUNCTION billing.prorate(price_per_hour bigint, seconds bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT floor(price_per_hour::numeric * seconds / 3600)::bigint $$;
COMMENT ON FUNCTION billing.prorate(bigint, bigint) IS 'Cost in minor units of seconds at price_per_hour, floored (exact integer arithmetic, no floating point).';

CREATE FUNCTION billing.accrue_allocation(allocation uuid, as_of timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.allocations;
    t timestamptz := least(coalesce(as_of, now()), now());
    ended boolean;
    total_seconds bigint;
    n_end integer;
    v_charged_seconds bigint;
    v_charged_amount bigint;
    records integer := 0;
    r record;
    correction billing.usage_records;
BEGIN
    SELECT * INTO a FROM billing.allocations x WHERE x.allocation_id = allocation FOR NO KEY UPDATE;
    IF NOT FOUND OR a.started_at IS NULL OR a.settled THEN
        RETURN 0;
    END IF;
    v_charged_seconds := a.charged_seconds;
    v_charged_amount := a.charged_amount;
    ended := a.ended_at IS NOT NULL AND a.ended_at <= t;
    IF ended THEN
        total_seconds := greatest(floor(extract(epoch FROM a.ended_at - a.started_at)), 0)::bigint;
        n_end := ceil(total_seconds::numeric / a.interval_seconds)::integer;
    ELSIF t > a.started_at THEN
        n_end := floor(extract(epoch FROM t - a.started_at) / a.interval_seconds)::integer;
    ELSE
        n_end := 0;
    END IF;

    IF n_end > a.next_interval THEN
        FOR r IN
            WITH recs AS (
                INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start,
                                                   period_end, seconds, price_per_hour, amount, currency)
                SELECT a.allocation_id, a.account_id, 'interval', s.k,
                       a.started_at + make_interval(secs => s.e0), a.started_at + make_interval(secs => s.e1),
                       s.e1 - s.e0, a.price_per_hour,
                       billing.prorate(a.price_per_hour, s.e1) - billing.prorate(a.price_per_hour, s.e0), a.currency
                  FROM (SELECT k, k::bigint * a.interval_seconds AS e0,
                               CASE WHEN ended THEN least((k + 1)::bigint * a.interval_seconds, total_seconds)
                                    ELSE (k + 1)::bigint * a.interval_seconds END AS e1
                          FROM generate_series(a.next_interval, n_end - 1) AS k) s
                 ORDER BY s.k
                RETURNING id, interval_no, seconds, amount, period_end)
            SELECT * FROM recs ORDER BY interval_no
        LOOP
            records := records + 1;
            v_charged_seconds := v_charged_seconds + r.seconds;
            v_charged_amount := v_charged_amount + r.amount;
            IF r.amount > 0 THEN
                PERFORM billing.post_entry(a.account_id, 'usage_debit', -r.amount, a.currency, 'usage_record',
                                           r.id::text, NULL);
            END IF;
        END LOOP;
    END IF;

    -- The end came after intervals past it were charged: give the difference back.
    IF ended AND v_charged_seconds > total_seconds THEN
        INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start, period_end,
                                           seconds, price_per_hour, amount, currency)
        VALUES (a.allocation_id, a.account_id, 'correction', NULL,
                a.started_at + make_interval(secs => total_seconds), a.started_at + make_interval(secs => v_charged_seconds),
                total_seconds - v_charged_seconds, a.price_per_hour,
                billing.prorate(a.price_per_hour, total_seconds) - v_charged_amount, a.currency)
        RETURNING * INTO correction;
        records := records + 1;
        IF correction.amount < 0 THEN
            PERFORM billing.post_entry(a.account_id, 'usage_correction', -correction.amount, a.currency,
                                       'usage_record', correction.id::text, 'usage charged past the allocation''s end');
        END IF;
        v_charged_seconds := total_seconds;
        v_charged_amount := v_charged_amount + correction.amount;
    END IF;

    UPDATE billing.allocations x
       SET next_interval = greatest(x.next_interval, n_end), charged_seconds = v_charged_seconds,
           charged_amount = v_charged_amount, settled = ended, last_error = NULL, updated_at = now()
     WHERE x.allocation_id = a.allocation_id;
    IF records > 0 THEN
        PERFORM billing.evaluate_standing(a.account_id);
    END IF;
    RETURN records;
END
$$;
COMMENT ON FUNCTION billing.accrue_allocation(uuid, timestamptz) IS 'Charges one allocation up to as_of (default and at most now()): every complete interval not yet charged, and once it has ended everything up to ended_at (the last interval prorated to the second, or a correction when more was charged). One usage record and one usage_debit entry per interval, under the allocation''s row lock. Returns the number of usage records written.';

-- Posting many usage records at once: one INSERT for all their ledger
-- entries (the billing.ledger_post trigger still computes each running
-- balance under its account's lock, this statement's earlier rows counted),
-- in account order, and their ledger.entry_posted events.
CREATE FUNCTION billing.post_usage(record_ids bigint[]) RETURNS integer
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    WITH e AS (
        INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id, memo)
        SELECT r.account_id, 'usage_debit', -r.amount, r.currency, 0, 'usage_record', r.id::text, NULL
          FROM billing.usage_records r
         WHERE r.id = ANY (record_ids) AND r.kind = 'interval' AND r.amount > 0
         ORDER BY r.account_id, r.id
        RETURNING *)
    SELECT count(pgcloud.emit('ledger.entry_posted', 'account', e.account_id::text,
        jsonb_build_object('entry_id', e.id, 'user_id', e.account_id, 'kind', e.kind, 'amount', e.amount,
                           'balance_after', e.balance_after, 'currency', e.currency,
                           'cause_type', e.cause_type, 'cause_id', e.cause_id, 'created_at', e.created_at))
                 ORDER BY e.id)::integer
      FROM e
$$;
COMMENT ON FUNCTION billing.post_usage(bigint[]) IS 'Posts the usage_debit ledger entries of many interval usage records (those with an amount) in one statement, in account order, each running balance computed under its account''s lock by billing.ledger_post as for a single posting, and emits their ledger.entry_posted events. Returns the number of entries posted. A record posted already raises unique_violation (ledger_entries_one_booking).';

-- The accrual's batch: every due allocation that has not ended, charged in
-- one statement (its intervals' usage records and cursors), then posted in
-- one (billing.post_usage), then each account's standing evaluated once.
-- The amounts are those billing.accrue_allocation() computes for such an
-- allocation. Raises on any failure: billing.accrue() then undoes the batch
-- and charges each allocation on its own.
CREATE FUNCTION billing.accrue_batch(t timestamptz, OUT allocations integer, OUT usage_records integer)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    ids bigint[];
    acct uuid;
BEGIN
    WITH due AS (
        SELECT a.allocation_id, a.account_id, a.started_at, a.price_per_hour, a.currency, a.interval_seconds,
               a.next_interval,
               floor(extract(epoch FROM t - a.started_at) / a.interval_seconds)::integer AS n_end
          FROM billing.allocations a
         WHERE a.started_at IS NOT NULL AND NOT a.settled
           AND NOT (a.ended_at IS NOT NULL AND a.ended_at <= t)
           AND a.started_at + make_interval(secs => (a.next_interval + 1)::bigint * a.interval_seconds) <= t
         ORDER BY a.account_id, a.allocation_id
         FOR NO KEY UPDATE SKIP LOCKED
    ), recs AS (
        INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start,
                                           period_end, seconds, price_per_hour, amount, currency)
        SELECT d.allocation_id, d.account_id, 'interval', k,
               d.started_at + make_interval(secs => k::bigint * d.interval_seconds),
               d.started_at + make_interval(secs => (k + 1)::bigint * d.interval_seconds),
               d.interval_seconds, d.price_per_hour,
               billing.prorate(d.price_per_hour, (k + 1)::bigint * d.interval_seconds)
                 - billing.prorate(d.price_per_hour, k::bigint * d.interval_seconds), d.currency
          FROM due d, generate_series(d.next_interval, d.n_end - 1) AS k
         ORDER BY d.account_id, d.allocation_id, k
        RETURNING id, allocation_id, seconds, amount
    ), sums AS (
        SELECT r.allocation_id, sum(r.seconds)::bigint AS seconds, sum(r.amount)::bigint AS amount,
               array_agg(r.id) AS ids
          FROM recs r GROUP BY r.allocation_id
    ), upd AS (
        UPDATE billing.allocations x
           SET next_interval = greatest(x.next_interval, d.n_end), charged_seconds = x.charged_seconds + s.seconds,
               charged_amount = x.charged_amount + s.amount, last_error = NULL, updated_at = now()
          FROM due d JOIN sums s USING (allocation_id)
         WHERE x.allocation_id = d.allocation_id
        RETURNING x.allocation_id
    )
    SELECT (SELECT count(*) FROM upd), coalesce((SELECT array_agg(i) FROM sums, unnest(sums.ids) i), '{}')
      INTO allocations, ids;
    usage_records := cardinality(ids);
    IF usage_records = 0 THEN
        RETURN;
    END IF;
    PERFORM billing.post_usage(ids);
    FOR acct IN SELECT DISTINCT r.account_id FROM billing.usage_records r WHERE r.id = ANY (ids) ORDER BY 1 LOOP
        PERFORM billing.evaluate_standing(acct);
    END LOOP;
END
$$;
COMMENT ON FUNCTION billing.accrue_batch(timestamptz) IS 'Internal to billing.accrue(): charges every due allocation that has not ended up to t in one statement (usage records and cursors; rows held by another run are skipped), posts their ledger entries in one (billing.post_usage()), evaluates each account''s standing once. Returns the allocations charged and the usage records written; raises on any failure.';

CREATE FUNCTION billing.accrue(as_of timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    t timestamptz := least(coalesce(as_of, now()), now());
    x record;
    n integer;
    n_allocations integer := 0;
    records integer := 0;
    failed integer := 0;
    reminders integer := 0;
    err text;
    repeat_after integer := pgcloud.policy('billing.force_release_repeat_seconds', NULL::integer);
BEGIN
    -- The allocations that have not ended: in one batch. Should it fail, it
    -- is undone and the loop below charges each allocation on its own.
    BEGIN
        SELECT b.allocations, b.usage_records INTO n_allocations, records FROM billing.accrue_batch(t) b;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        RAISE LOG 'billing.accrue: the batch was undone (%); charging allocation by allocation',
            left(pgcloud.sanitize(err), 500);
        n_allocations := 0;
        records := 0;
    END;
    -- The rest (ended allocations, or all when the batch failed), one by one,
    -- in account order, so concurrent runs take account locks in one order.
    FOR x IN
        SELECT a.allocation_id FROM billing.allocations a
         WHERE a.started_at IS NOT NULL AND NOT a.settled
           AND ((a.ended_at IS NOT NULL AND a.ended_at <= t)
                OR a.started_at + make_interval(secs => (a.next_interval + 1)::bigint * a.interval_seconds) <= t)
         ORDER BY a.account_id, a.allocation_id
         FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        BEGIN
            n := billing.accrue_allocation(x.allocation_id, t);
            n_allocations := n_allocations + 1;
            records := records + n;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            failed := failed + 1;
            UPDATE billing.allocations a SET last_error = left(pgcloud.sanitize(err), 500), updated_at = now()
             WHERE a.allocation_id = x.allocation_id;
            PERFORM pgcloud.audit('billing.accrual_failed', 'allocation', x.allocation_id::text, 'failed',
                jsonb_build_object('error', left(err, 500)));
        END;
    END LOOP;

    -- Exhausted accounts whose allocations are still running: ask again.
    FOR x IN
        SELECT c.account_id FROM billing.accounts c
         WHERE c.standing = 'exhausted'
           AND (c.force_release_requested_at IS NULL
                OR c.force_release_requested_at <= now() - make_interval(secs => repeat_after))
           AND EXISTS (SELECT 1 FROM billing.allocations a
                        WHERE a.account_id = c.account_id AND a.started_at IS NOT NULL AND a.ended_at IS NULL)
         ORDER BY c.account_id
         FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        IF billing.request_force_release(x.account_id) THEN
            reminders := reminders + 1;
        END IF;
    END LOOP;

    IF records > 0 OR failed > 0 OR reminders > 0 THEN
        PERFORM pgcloud.audit('billing.accrual_run', 'billing', NULL, CASE WHEN failed > 0 THEN 'failed' ELSE 'ok' END,
            jsonb_build_object('as_of', t, 'allocations', n_allocations, 'usage_records', records, 'failed', failed,
                               'force_release_requests', reminders));
    END IF;
    RETURN jsonb_build_object('as_of', t, 'allocations', n_allocations, 'usage_records', records, 'failed', failed,
                              'force_release_requests', reminders);
END
$$;
COMMENT ON FUNCTION billing.accrue(timestamptz) IS 'The accrual (the job billing.accrue, every billing.accrual_interval_seconds): charges every allocation with a complete uncharged interval or an unsettled end, up to as_of (default and at most now()); safe to run twice, late or concurrently (allocations locked with SKIP LOCKED, cursors re-read, intervals unique). One failing allocation does not stop the others (its last_error is set and audited). Re-sends billing.force_release_requested for exhausted accounts still running allocations after billing.force_release_repeat_seconds. Returns {as_of, allocations, usage_records, failed, force_release_requests}.';
