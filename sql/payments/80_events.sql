-- Events in: users, ledger entries (balance read model, refund debits), refund
-- declines. One handler per subscribed event type,
-- payments.on_<type>(pgcloud.event_envelope), called by the core's delivery
-- with the inbox row in the same transaction.

CREATE FUNCTION payments.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
BEGIN
    IF coalesce(payload ->> 'user_id', aggregate_id) !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field user_id must be a uuid');
    END IF;
    v_user := coalesce(payload ->> 'user_id', aggregate_id)::uuid;
    INSERT INTO payments.users AS u (user_id, email, updated_at) VALUES (v_user, payload ->> 'email', now())
    ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, u.email), updated_at = now();
END
$$;
COMMENT ON FUNCTION payments.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: fills payments.users.';

CREATE FUNCTION payments.on_ledger_entry_posted(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_user uuid;
    v_entry bigint;
BEGIN
    IF coalesce(payload ->> 'user_id', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
       OR payments.json_integer(payload -> 'entry_id') IS NULL
       OR payments.json_integer(payload -> 'balance_after') IS NULL
       OR coalesce(payload ->> 'currency', '') !~ '^[a-z]{3}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'ledger.entry_posted needs user_id, entry_id, balance_after and currency');
    END IF;
    v_user := (payload ->> 'user_id')::uuid;
    v_entry := payments.json_integer(payload -> 'entry_id');
    -- Newest entry wins (events of one account arrive in order; a replay is older).
    INSERT INTO payments.accounts AS a (user_id, balance, currency, last_entry_id, updated_at)
    VALUES (v_user, payments.json_integer(payload -> 'balance_after'), payload ->> 'currency', v_entry, now())
    ON CONFLICT (user_id) DO UPDATE
       SET balance = excluded.balance, currency = excluded.currency, last_entry_id = excluded.last_entry_id,
           updated_at = now()
     WHERE a.last_entry_id < excluded.last_entry_id;
    IF payload ->> 'kind' = 'refund_debit' AND payload ->> 'cause_type' = 'refund'
       AND coalesce(payload ->> 'cause_id', '') ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM payments.submit_refund((payload ->> 'cause_id')::uuid, v_entry);
    END IF;
END
$$;
COMMENT ON FUNCTION payments.on_ledger_entry_posted(pgcloud.event_envelope) IS 'Event handler of ledger.entry_posted: the balance read model (the newest entry wins) and, for a refund''s debit, the Stripe refund intent.';

CREATE FUNCTION payments.on_billing_refund_declined(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v_refund uuid;
    r payments.refunds;
BEGIN
    IF coalesce(payload ->> 'refund_id', '') !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field refund_id must be a uuid');
    END IF;
    v_refund := (payload ->> 'refund_id')::uuid;
    UPDATE payments.refunds x SET status = 'declined', failure_reason = left(coalesce(payload ->> 'reason', 'declined'), 500),
           updated_at = now()
     WHERE x.id = v_refund AND x.status = 'requested'
    RETURNING * INTO r;
    IF FOUND THEN
        PERFORM pgcloud.audit('payment.refund_declined', 'refund', r.id::text, 'rejected',
            jsonb_build_object('reason', payload ->> 'reason', 'balance', payload -> 'balance', 'amount', r.amount));
    END IF;
END
$$;
COMMENT ON FUNCTION payments.on_billing_refund_declined(pgcloud.event_envelope) IS 'Event handler of billing.refund_declined: declines the refund (audited).';
