-- Events in: users, allocations, payments and refunds. One handler per
-- subscribed event type, billing.on_<type>(pgcloud.event_envelope), called by
-- the core's delivery with the inbox row in the same transaction.

-- Money in events: JSON integers only (a float or a string is refused).
CREATE FUNCTION billing.payload_amount(payload jsonb, field text) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v jsonb := payload -> field;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' OR (v #>> '{}') !~ '^-?[0-9]{1,18}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be an integer amount in minor units', field));
    END IF;
    RETURN (v #>> '{}')::bigint;
END
$$;
COMMENT ON FUNCTION billing.payload_amount(jsonb, text) IS 'A required integer amount (minor units) of an event payload; raises invalid_event for anything else (floats included).';

CREATE FUNCTION billing.payload_currency(payload jsonb) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    c text := lower(payload ->> 'currency');
BEGIN
    IF c IS NULL OR c !~ '^[a-z]{3}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field currency must be an ISO 4217 code');
    END IF;
    RETURN c;
END
$$;
COMMENT ON FUNCTION billing.payload_currency(jsonb) IS 'The currency of an event payload in lower case; raises invalid_event when missing or malformed.';

CREATE FUNCTION billing.open_account(account uuid, currency text DEFAULT NULL, email text DEFAULT NULL)
RETURNS billing.accounts
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.accounts;
BEGIN
    INSERT INTO billing.accounts AS x (account_id, currency, email)
    VALUES (account, coalesce(open_account.currency, pgcloud.policy('billing.currency', NULL::text)), open_account.email)
    ON CONFLICT (account_id) DO UPDATE SET email = coalesce(excluded.email, x.email)
    RETURNING * INTO a;
    RETURN a;
END
$$;
COMMENT ON FUNCTION billing.open_account(uuid, text, text) IS 'Opens an account (currency: the given one, else policy billing.currency) or returns the existing one (updating its e-mail when given).';

CREATE FUNCTION billing.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
BEGIN
    -- Opened, not announced: with nothing posted there is no change of
    -- standing to report (provisioning reads "no report" as balance 0, and
    -- notification would tell a new user their balance is exhausted).
    PERFORM billing.open_account(pgcloud.payload_uuid(event.payload, 'user_id', event.aggregate_id), NULL,
                                 event.payload ->> 'email');
END
$$;
COMMENT ON FUNCTION billing.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: opens the account (its standing is first announced with its first posting).';

CREATE FUNCTION billing.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    payload jsonb := event.payload;
    v_alloc uuid := pgcloud.payload_uuid(payload, 'allocation_id', event.aggregate_id);
    v_user uuid := pgcloud.payload_uuid(payload, 'user_id');
    price bigint := billing.payload_amount(payload, 'price_per_hour');
    v_currency text;
    acct billing.accounts;
BEGIN
    IF price < 0 THEN
        PERFORM pgcloud.raise('invalid_event', 'price_per_hour must not be negative');
    END IF;
    v_currency := billing.payload_currency(payload);
    -- The first activation wins; a replay or a late duplicate changes nothing.
    INSERT INTO billing.allocations AS x (allocation_id, account_id, sku, node_hostname, price_per_hour, currency,
                                          interval_seconds, started_at)
    VALUES (v_alloc, v_user, payload ->> 'sku', payload ->> 'node_hostname', price, v_currency,
            pgcloud.policy('billing.accrual_interval_seconds', NULL::integer),
            -- Policy: bill the provisioning phase too (from the request).
            CASE WHEN pgcloud.policy('billing.bill_provisioning', NULL::boolean)
                 THEN coalesce(pgcloud.payload_time(payload, 'requested_at'), pgcloud.payload_time(payload, 'started_at'), now())
                 ELSE coalesce(pgcloud.payload_time(payload, 'started_at'), now()) END)
    ON CONFLICT (allocation_id) DO UPDATE
       SET account_id = excluded.account_id, sku = excluded.sku, node_hostname = excluded.node_hostname,
           price_per_hour = excluded.price_per_hour, currency = excluded.currency,
           interval_seconds = excluded.interval_seconds, started_at = excluded.started_at, updated_at = now()
     WHERE x.started_at IS NULL;
    acct := billing.open_account(v_user, v_currency);
    -- Already ended (the end arrived first) or started in the past: charge what is due now.
    PERFORM billing.accrue_allocation(v_alloc);
    IF billing.evaluate_standing(v_user) = 'exhausted'
       AND EXISTS (SELECT 1 FROM billing.allocations a WHERE a.allocation_id = v_alloc AND a.ended_at IS NULL) THEN
        -- Provisioning's read model lagged: an exhausted account may not run allocations.
        PERFORM billing.request_force_release(v_user);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: the allocation read model (the first activation wins) and what is due now; an exhausted account''s allocation is force-released.';

-- The end of an allocation (released or failed): the last, partial interval.
CREATE FUNCTION billing.end_allocation(event pgcloud.event_envelope, end_reason text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    payload jsonb := event.payload;
    v_alloc uuid := pgcloud.payload_uuid(payload, 'allocation_id', event.aggregate_id);
    v_user uuid;
BEGIN
    IF payload ? 'user_id' THEN
        v_user := pgcloud.payload_uuid(payload, 'user_id');
    END IF;
    INSERT INTO billing.allocations AS x (allocation_id, account_id, ended_at, end_reason)
    VALUES (v_alloc, v_user, coalesce(pgcloud.payload_time(payload, 'ended_at'), now()), end_allocation.end_reason)
    ON CONFLICT (allocation_id) DO UPDATE
       SET ended_at = coalesce(x.ended_at, excluded.ended_at),
           end_reason = coalesce(x.end_reason, excluded.end_reason),
           account_id = coalesce(x.account_id, excluded.account_id), updated_at = now();
    -- The last, partial interval (or a correction) now; never before activation.
    PERFORM billing.accrue_allocation(v_alloc);
END
$$;
COMMENT ON FUNCTION billing.end_allocation(pgcloud.event_envelope, text) IS 'allocation.released / allocation.failed: ends the allocation in the read model (the first end wins) and charges the last, partial interval.';

CREATE FUNCTION billing.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$ SELECT billing.end_allocation(event, 'released') $$;
COMMENT ON FUNCTION billing.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: ends the allocation and charges what is due (billing.end_allocation).';

CREATE FUNCTION billing.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$ SELECT billing.end_allocation(event, coalesce(left(event.payload ->> 'reason', 200), 'failed')) $$;
COMMENT ON FUNCTION billing.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: ends the allocation with its reason and charges what is due (billing.end_allocation).';

CREATE FUNCTION billing.on_payment_succeeded(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    payload jsonb := event.payload;
    v_user uuid := pgcloud.payload_uuid(payload, 'user_id');
    v_amount bigint := billing.payload_amount(payload, 'amount');
    v_currency text := billing.payload_currency(payload);
    v_cause text := payload ->> 'checkout_session_id';
    acct billing.accounts;
    booked record;
BEGIN
    IF v_amount <= 0 THEN
        PERFORM pgcloud.raise('invalid_event', 'a payment amount must be positive');
    END IF;
    IF v_cause IS NULL OR length(v_cause) NOT BETWEEN 1 AND 255 THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field checkout_session_id is required');
    END IF;
    acct := billing.open_account(v_user, v_currency);
    IF acct.currency <> v_currency THEN
        -- Not a transient failure: retrying would not help. Kept for an operator, not booked.
        INSERT INTO billing.refused_credits (account_id, amount, currency, account_currency, checkout_session_id,
                                             payment_id)
        VALUES (v_user, v_amount, v_currency, acct.currency, v_cause, payload ->> 'payment_id')
        ON CONFLICT (checkout_session_id) DO NOTHING;
        IF FOUND THEN
            PERFORM pgcloud.audit('ledger.credit_refused', 'account', v_user::text, 'failed',
                jsonb_build_object('reason', 'currency_mismatch', 'amount', v_amount, 'currency', v_currency,
                                   'account_currency', acct.currency, 'checkout_session_id', v_cause,
                                   'payment_id', payload ->> 'payment_id'));
        END IF;
        RETURN;
    END IF;
    SELECT * INTO booked FROM billing.book(v_user, 'credit', v_amount, v_currency, 'payment', v_cause,
                                           left('payment ' || coalesce(payload ->> 'payment_id', ''), 500));
    IF NOT booked.duplicate THEN
        PERFORM pgcloud.audit('ledger.credited', 'account', v_user::text, 'ok',
            jsonb_build_object('entry_id', booked.entry_id, 'amount', v_amount, 'currency', v_currency,
                               'checkout_session_id', v_cause, 'payment_id', payload ->> 'payment_id',
                               'balance_after', booked.balance_after));
        PERFORM billing.evaluate_standing(v_user);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_payment_succeeded(pgcloud.event_envelope) IS 'Event handler of payment.succeeded: credits once per Checkout Session; a payment in another currency than the account''s is kept in billing.refused_credits, not booked.';

CREATE FUNCTION billing.on_refund_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    payload jsonb := event.payload;
    v_refund uuid := pgcloud.payload_uuid(payload, 'refund_id');
    v_user uuid := pgcloud.payload_uuid(payload, 'user_id');
    v_amount bigint := billing.payload_amount(payload, 'amount');
    v_currency text := billing.payload_currency(payload);
    acct billing.accounts;
    bal bigint;
    booked record;
    decline text;
BEGIN
    IF v_amount <= 0 THEN
        PERFORM pgcloud.raise('invalid_event', 'a refund amount must be positive');
    END IF;
    IF EXISTS (SELECT 1 FROM billing.ledger_entries l WHERE l.kind = 'refund_debit' AND l.cause_id = v_refund::text) THEN
        RETURN;     -- already debited
    END IF;
    -- The balance is decided here, under the account's lock: not from a read model.
    SELECT * INTO acct FROM billing.accounts x WHERE x.account_id = v_user FOR NO KEY UPDATE;
    IF FOUND THEN
        SELECT b.balance INTO bal FROM billing.balances b WHERE b.account_id = v_user;
    END IF;
    IF acct.account_id IS NULL THEN
        decline := 'no_account';
    ELSIF acct.currency <> v_currency THEN
        decline := 'currency_mismatch';
    ELSIF bal - v_amount < 0 AND NOT coalesce((payload ->> 'allow_negative_balance')::boolean, false) THEN
        decline := 'insufficient_balance';
    END IF;
    IF decline IS NOT NULL THEN
        PERFORM pgcloud.emit('billing.refund_declined', 'account', v_user::text,
            jsonb_build_object('refund_id', v_refund, 'payment_id', payload ->> 'payment_id', 'user_id', v_user,
                               'amount', v_amount, 'currency', v_currency, 'balance', bal,
                               'reason', decline));
        PERFORM pgcloud.audit('ledger.refund_declined', 'refund', v_refund::text, 'rejected',
            jsonb_build_object('reason', decline, 'amount', v_amount, 'balance', bal));
        RETURN;
    END IF;
    SELECT * INTO booked FROM billing.book(v_user, 'refund_debit', -v_amount, v_currency, 'refund', v_refund::text,
                                           left(payload ->> 'reason', 500));
    IF NOT booked.duplicate THEN
        PERFORM pgcloud.audit('ledger.refund_debited', 'refund', v_refund::text, 'ok',
            jsonb_build_object('entry_id', booked.entry_id, 'amount', v_amount, 'currency', v_currency,
                               'payment_id', payload ->> 'payment_id', 'balance_after', booked.balance_after));
        PERFORM billing.evaluate_standing(v_user);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_refund_requested(pgcloud.event_envelope) IS 'Event handler of refund.requested: debits the refund under the account lock, or declines it (billing.refund_declined) for no account, another currency or a balance that would go negative.';

CREATE FUNCTION billing.on_refund_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_refund uuid := pgcloud.payload_uuid(event.payload, 'refund_id');
    debit billing.ledger_entries;
    booked record;
BEGIN
    SELECT * INTO debit FROM billing.ledger_entries l WHERE l.kind = 'refund_debit' AND l.cause_id = v_refund::text;
    IF NOT FOUND THEN
        RETURN;     -- never debited (declined): nothing to give back
    END IF;
    -- Give back exactly what was debited, whatever the event says.
    SELECT * INTO booked FROM billing.book(debit.account_id, 'refund_reversal', -debit.amount, debit.currency,
                                           'refund', v_refund::text, 'refund failed at Stripe');
    IF NOT booked.duplicate THEN
        PERFORM pgcloud.audit('ledger.refund_reversed', 'refund', v_refund::text, 'ok',
            jsonb_build_object('entry_id', booked.entry_id, 'amount', -debit.amount,
                               'reason', event.payload ->> 'failure_reason', 'balance_after', booked.balance_after));
        PERFORM billing.evaluate_standing(debit.account_id);
    END IF;
END
$$;
COMMENT ON FUNCTION billing.on_refund_failed(pgcloud.event_envelope) IS 'Event handler of refund.failed: reverses the refund''s debit once (nothing when it was declined).';
