-- Posting, booking a cause once, standing, and the ledger check.

CREATE FUNCTION billing.entry_json(e billing.ledger_entries) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT jsonb_build_object('id', e.id, 'kind', e.kind, 'amount', e.amount, 'currency', e.currency,
                              'balance_after', e.balance_after, 'cause_type', e.cause_type,
                              'cause_id', e.cause_id, 'memo', e.memo, 'created_at', e.created_at)
$$;
COMMENT ON FUNCTION billing.entry_json(billing.ledger_entries) IS 'The API form of a ledger entry.';

-- One entry: the trigger computes its id and balance; the event follows.
CREATE FUNCTION billing.post_entry(account_id uuid, kind text, amount bigint, currency text, cause_type text,
                                   cause_id text, memo text DEFAULT NULL) RETURNS billing.ledger_entries
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    e billing.ledger_entries;
BEGIN
    INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id, memo)
    VALUES (post_entry.account_id, post_entry.kind, post_entry.amount, post_entry.currency, 0,
            post_entry.cause_type, post_entry.cause_id, post_entry.memo)
    RETURNING * INTO e;
    PERFORM pgcloud.emit('ledger.entry_posted', 'account', e.account_id::text,
        jsonb_build_object('entry_id', e.id, 'user_id', e.account_id, 'kind', e.kind, 'amount', e.amount,
                           'balance_after', e.balance_after, 'currency', e.currency,
                           'cause_type', e.cause_type, 'cause_id', e.cause_id, 'created_at', e.created_at));
    RETURN e;
END
$$;
COMMENT ON FUNCTION billing.post_entry(uuid, text, bigint, text, text, text, text) IS 'Posts one ledger entry (its balance is computed under the account''s lock by the billing.ledger_post trigger) and emits ledger.entry_posted. A cause already booked for this kind raises unique_violation: use billing.book() to book a cause once.';

-- A cause booked at most once, whatever the number or order of requests.
CREATE FUNCTION billing.book(account_id uuid, kind text, amount bigint, currency text, cause_type text,
                             cause_id text, memo text DEFAULT NULL,
                             OUT entry_id bigint, OUT balance_after bigint, OUT duplicate boolean)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    e billing.ledger_entries;
    c text;
BEGIN
    SELECT * INTO e FROM billing.ledger_entries l WHERE l.kind = book.kind AND l.cause_id = book.cause_id;
    IF NOT FOUND THEN
        BEGIN
            e := billing.post_entry(book.account_id, book.kind, book.amount, book.currency, book.cause_type,
                                    book.cause_id, book.memo);
            entry_id := e.id;
            balance_after := e.balance_after;
            duplicate := false;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            -- A concurrent booking of the same cause committed while we waited for the account.
            GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME;
            IF c IS DISTINCT FROM 'ledger_entries_one_booking' THEN
                RAISE;
            END IF;
            SELECT * INTO e FROM billing.ledger_entries l WHERE l.kind = book.kind AND l.cause_id = book.cause_id;
        END;
    END IF;
    IF e.account_id IS DISTINCT FROM book.account_id OR e.amount IS DISTINCT FROM book.amount
       OR e.currency IS DISTINCT FROM book.currency THEN
        PERFORM pgcloud.audit('ledger.booking_conflict', 'ledger_entry', e.id::text, 'rejected',
            jsonb_build_object('kind', book.kind, 'cause_id', book.cause_id,
                               'booked', jsonb_build_object('account_id', e.account_id, 'amount', e.amount, 'currency', e.currency),
                               'requested', jsonb_build_object('account_id', book.account_id, 'amount', book.amount,
                                                               'currency', book.currency)));
    END IF;
    entry_id := e.id;
    balance_after := e.balance_after;
    duplicate := true;
END
$$;
COMMENT ON FUNCTION billing.book(uuid, text, bigint, text, text, text, text) IS 'Books a cause once: when (kind, cause_id) is already in the ledger (or is booked concurrently) nothing is posted and the existing entry is returned with duplicate = true (a request that differs from the booking is audited as ledger.booking_conflict).';

-- Standing: good / low / exhausted and "may allocate", announced on change.
CREATE FUNCTION billing.standing_of(balance bigint) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT CASE WHEN balance <= 0 THEN 'exhausted'
                WHEN balance < pgcloud.policy('billing.low_balance_threshold', NULL::bigint) THEN 'low'
                ELSE 'good' END
$$;
COMMENT ON FUNCTION billing.standing_of(bigint) IS 'The standing of a balance: exhausted (<= 0), low (under billing.low_balance_threshold) or good.';

CREATE FUNCTION billing.active_allocations(account uuid) RETURNS uuid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT coalesce(array_agg(a.allocation_id ORDER BY a.started_at, a.allocation_id), '{}')
      FROM billing.allocations a
     WHERE a.account_id = account AND a.started_at IS NOT NULL AND a.ended_at IS NULL
$$;
COMMENT ON FUNCTION billing.active_allocations(uuid) IS 'The allocations of an account that are active (activated, not ended), oldest first.';

CREATE FUNCTION billing.request_force_release(account uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    b billing.balances;
    ids uuid[] := billing.active_allocations(account);
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN false;
    END IF;
    UPDATE billing.accounts x SET force_release_requested_at = now() WHERE x.account_id = account;
    SELECT * INTO b FROM billing.balances x WHERE x.account_id = account;
    INSERT INTO billing.force_release_requests (account_id, allocation_ids, balance, reason)
    VALUES (account, ids, b.balance, 'balance_exhausted');
    PERFORM pgcloud.emit('billing.force_release_requested', 'account', account::text,
        jsonb_build_object('user_id', account, 'allocation_ids', to_jsonb(ids), 'reason', 'balance_exhausted',
                           'balance', b.balance, 'currency', b.currency));
    PERFORM pgcloud.audit('billing.force_release_requested', 'account', account::text, 'ok',
        jsonb_build_object('allocation_ids', to_jsonb(ids), 'balance', b.balance));
    RETURN true;
END
$$;
COMMENT ON FUNCTION billing.request_force_release(uuid) IS 'Asks provisioning to release the account''s active allocations (billing.force_release_requested, recorded in billing.force_release_requests, audited); false when it has none.';

CREATE FUNCTION billing.evaluate_standing(account uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.balances;
    threshold bigint := pgcloud.policy('billing.low_balance_threshold', NULL::bigint);
    min_balance bigint := pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint);
    next_standing text;
    may boolean;
BEGIN
    PERFORM FROM billing.accounts x WHERE x.account_id = account FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO a FROM billing.balances x WHERE x.account_id = account;
    next_standing := CASE WHEN a.balance <= 0 THEN 'exhausted' WHEN a.balance < threshold THEN 'low' ELSE 'good' END;
    may := a.balance >= min_balance;
    IF a.standing IS NOT DISTINCT FROM next_standing AND a.can_allocate IS NOT DISTINCT FROM may THEN
        RETURN next_standing;
    END IF;
    UPDATE billing.accounts x SET standing = next_standing, can_allocate = may, standing_changed_at = now()
     WHERE x.account_id = account;
    PERFORM pgcloud.emit('account.standing_changed', 'account', account::text,
        jsonb_build_object('user_id', account, 'standing', next_standing, 'previous_standing', a.standing,
                           'balance', a.balance, 'currency', a.currency, 'can_allocate', may,
                           'min_balance_to_allocate', min_balance, 'low_balance_threshold', threshold,
                           'as_of', clock_timestamp()));
    PERFORM pgcloud.audit('account.standing_changed', 'account', account::text, 'ok',
        jsonb_build_object('from', a.standing, 'to', next_standing, 'balance', a.balance, 'can_allocate', may));
    -- Once per downward crossing of the threshold: only when leaving "good".
    IF a.standing = 'good' AND next_standing IN ('low', 'exhausted') THEN
        INSERT INTO billing.low_balance_events (account_id, balance, threshold, entry_id)
        VALUES (account, a.balance, threshold, a.last_entry_id);
        PERFORM pgcloud.emit('billing.low_balance', 'account', account::text,
            jsonb_build_object('user_id', account, 'balance', a.balance, 'threshold', threshold,
                               'currency', a.currency));
    END IF;
    IF next_standing = 'exhausted' AND a.standing IS DISTINCT FROM 'exhausted' THEN
        PERFORM billing.request_force_release(account);
    END IF;
    RETURN next_standing;
END
$$;
COMMENT ON FUNCTION billing.evaluate_standing(uuid) IS 'Recomputes an account''s standing from its balance and policy; on a change emits account.standing_changed (with balance, can_allocate, min_balance_to_allocate for provisioning, and as_of: the time under the account lock, increasing per account), on leaving good a billing.low_balance event (once per crossing, recorded in billing.low_balance_events), on becoming exhausted billing.force_release_requested for its active allocations. Returns the standing.';

-- The invariant, checkable at any time (one MVCC snapshot).
CREATE FUNCTION billing.verify_ledger(account uuid DEFAULT NULL)
RETURNS TABLE (account_id uuid, problem text, entry_id bigint, expected bigint, actual bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    WITH chain AS (
        SELECT e.account_id, e.id, e.amount, e.balance_after,
               lag(e.balance_after, 1, 0::bigint) OVER (PARTITION BY e.account_id ORDER BY e.id) AS previous
          FROM billing.ledger_entries e
         WHERE account IS NULL OR e.account_id = account
    ), totals AS (
        SELECT c.account_id, sum(c.amount)::bigint AS total, count(*) AS entries
          FROM chain c GROUP BY c.account_id
    )
    SELECT c.account_id, 'chain_broken', c.id, c.previous + c.amount, c.balance_after
      FROM chain c WHERE c.balance_after <> c.previous + c.amount
    UNION ALL
    SELECT b.account_id, 'balance_is_not_sum_of_entries', b.last_entry_id, coalesce(t.total, 0), b.balance
      FROM billing.balances b LEFT JOIN totals t ON t.account_id = b.account_id
     WHERE (account IS NULL OR b.account_id = account) AND b.balance <> coalesce(t.total, 0)
    UNION ALL
    SELECT t.account_id, 'entries_without_account', NULL, NULL, t.entries
      FROM totals t WHERE NOT EXISTS (SELECT 1 FROM billing.accounts a WHERE a.account_id = t.account_id)
$$;
COMMENT ON FUNCTION billing.verify_ledger(uuid) IS 'Checks the ledger invariant for one account or all, in one snapshot: each entry''s balance_after is the previous one''s plus its amount (in id order, which is posting order), the balance (newest balance_after) is the sum of the entries, no entry lacks its account. Returns one row per problem (none when consistent).';
