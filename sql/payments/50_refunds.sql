-- Refunds: ledger debit first, Stripe refund intent once the debit is seen.
--
-- The ledger (billing) and the refund (payments) belong to two services that
-- meet only through events delivered after commit, so "the debit and the
-- Stripe intent commit together" is kept as the two guarantees it stands for:
--
--   never refund money the ledger did not debit
--       the Stripe POST /v1/refunds intent is written only by the transaction
--       that applies billing's ledger.entry_posted for the refund's debit
--       (kind refund_debit, cause_id = refund id), i.e. after the debit committed;
--   never debit without a refund intent
--       that event is in billing's outbox in the debit's own transaction and is
--       delivered at least once (inbox: applied once), so the intent follows
--       every debit; a refund Stripe refuses or fails is announced as
--       refund.failed and billing reverses the debit with a new entry, once.
--
-- The limits are each decided where the truth lives, under a row lock:
-- "never more than paid minus already refunded" here, on the payment row;
-- "never more than the balance unless policy allows a negative balance" in
-- billing, on the account row (payments.refund_allow_negative_balance travels
-- in refund.requested). payments also checks its balance read model first, to
-- refuse the obvious cases at once; billing declines the rest
-- (billing.refund_declined), and the refund ends declined with nothing sent.
--
--   requested --ledger.entry_posted--> submitted --Stripe--> succeeded | pending | failed
--       \--billing.refund_declined--> declined            pending --> succeeded | failed

CREATE FUNCTION payments.admin_refund_apply(p_payment_id uuid, p_amount bigint, p_reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_payment uuid := p_payment_id;
    v_amount bigint := p_amount;
    v_reason text := btrim(p_reason);
    p payments.payments;
    a payments.accounts;
    outstanding bigint;
    allow_negative boolean := pgcloud.policy('payments.refund_allow_negative_balance', NULL::boolean);
    refund_id uuid := gen_random_uuid();
BEGIN
    IF v_payment IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'payment_id is required');
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 THEN
        PERFORM pgcloud.raise('invalid_argument', 'amount must be a positive integer (minor units)');
    END IF;
    IF v_reason IS NULL OR v_reason = '' OR length(v_reason) > 500 THEN
        PERFORM pgcloud.raise('invalid_argument', 'reason must be 1 to 500 characters');
    END IF;
    -- One payment's refunds are decided one at a time.
    SELECT * INTO p FROM payments.payments x WHERE x.id = v_payment FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('payment_not_found', format('no payment %s', v_payment));
    END IF;
    IF p.payment_intent IS NULL THEN
        PERFORM pgcloud.raise('payment_not_refundable', 'Stripe reported no PaymentIntent for this payment');
    END IF;
    SELECT coalesce(sum(r.amount), 0) INTO outstanding FROM payments.refunds r
     WHERE r.payment_id = p.id AND r.status IN ('requested', 'submitted', 'pending', 'succeeded');
    IF v_amount > p.amount - outstanding THEN
        PERFORM pgcloud.raise('refund_exceeds_payment',
            format('%s %s was paid and %s is refunded or being refunded: at most %s can be refunded',
                   p.amount, p.currency, outstanding, p.amount - outstanding));
    END IF;
    SELECT * INTO a FROM payments.accounts x WHERE x.user_id = p.user_id;
    IF FOUND AND NOT allow_negative AND a.balance - v_amount < 0 THEN
        PERFORM pgcloud.raise('refund_exceeds_balance',
            format('the balance is %s %s', a.balance, a.currency),
            'Policy payments.refund_allow_negative_balance decides whether a refund may take it below zero.');
    END IF;
    INSERT INTO payments.refunds (id, payment_id, user_id, amount, currency, reason, status, requested_by)
    VALUES (refund_id, p.id, p.user_id, v_amount, p.currency, v_reason, 'requested', pgcloud.user_id());
    PERFORM pgcloud.emit('refund.requested', 'refund', refund_id::text,
        jsonb_build_object('refund_id', refund_id, 'payment_id', p.id, 'user_id', p.user_id, 'amount', v_amount,
                           'currency', p.currency, 'reason', v_reason, 'checkout_session_id', p.checkout_session_id,
                           'allow_negative_balance', allow_negative));
    PERFORM pgcloud.audit('payment.refund_requested', 'refund', refund_id::text, 'ok',
        jsonb_build_object('payment_id', p.id, 'amount', v_amount, 'currency', p.currency, 'reason', v_reason));
    RETURN jsonb_build_object('id', refund_id, 'payment_id', p.id, 'amount', v_amount, 'currency', p.currency,
                              'status', 'requested');
END
$$;
COMMENT ON FUNCTION payments.admin_refund_apply(uuid, bigint, text) IS 'Internal to api.admin_refund() (which authorizes): checks the payment, amount and reason against what is left of the payment (under its lock) and the balance read model, records the refund as requested and emits refund.requested for billing''s debit; audited as payment.refund_requested.';

CREATE FUNCTION api.admin_refund(payment_id uuid, amount bigint, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(pgcloud.idempotent('payments.admin_refund', jsonb_build_object('payment_id', payment_id, 'amount', amount, 'reason', reason)),
                    pgcloud.idempotent_done('payments.admin_refund', payments.admin_refund_apply(payment_id, amount, reason)));
END
$$;
COMMENT ON FUNCTION api.admin_refund(uuid, bigint, text) IS 'Operators: refunds amount (minor units) of a payment: never more than was paid minus what is refunded or being refunded (409 refund_exceeds_payment), never more than the balance unless payments.refund_allow_negative_balance (409 refund_exceeds_balance; billing has the last word and may decline). Returns {id, payment_id, amount, currency, status: requested}; billing debits the ledger, then Stripe is asked (Idempotency-Key = refund id). Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_refund(uuid, bigint, text)', 'admin');

-- Billing debited the refund (ledger.entry_posted): now, and only now, ask Stripe.
CREATE FUNCTION payments.submit_refund(refund uuid, entry_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    r payments.refunds;
    p payments.payments;
    intent uuid;
BEGIN
    SELECT * INTO r FROM payments.refunds x WHERE x.id = refund FOR UPDATE;
    IF NOT FOUND OR r.status <> 'requested' THEN
        RETURN false;
    END IF;
    SELECT * INTO p FROM payments.payments x WHERE x.id = r.payment_id;
    intent := pgcloud.http_request('stripe', 'POST', '/v1/refunds',
        payments.form_encode(
            ARRAY['payment_intent', 'amount', 'reason', 'metadata[pgcloud_refund_id]', 'metadata[pgcloud_payment_id]',
                  'metadata[reason]'],
            ARRAY[p.payment_intent, r.amount::text,
                  CASE WHEN r.reason IN ('duplicate', 'fraudulent', 'requested_by_customer') THEN r.reason END,
                  r.id::text, p.id::text, left(r.reason, 500)]),
        'application/x-www-form-urlencoded', '{}'::jsonb, r.id::text,
        'payments.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
        jsonb_build_object('kind', 'refund', 'refund_id', r.id));
    UPDATE payments.refunds x SET status = 'submitted', intent_id = intent, ledger_entry_id = entry_id, updated_at = now()
     WHERE x.id = r.id;
    PERFORM pgcloud.audit('payment.refund_submitted', 'refund', r.id::text, 'ok',
        jsonb_build_object('ledger_entry_id', entry_id, 'intent_id', intent, 'amount', r.amount));
    RETURN true;
END
$$;
COMMENT ON FUNCTION payments.submit_refund(uuid, bigint) IS 'After billing''s debit: writes the Stripe refund intent (POST /v1/refunds against the PaymentIntent, Idempotency-Key = refund id, metadata with our ids) and marks the refund submitted. Only a requested refund is submitted, so at most once.';

CREATE FUNCTION payments.refund_result(intent uuid, status integer, body text, context jsonb, final boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    r payments.refunds;
    j jsonb;
    err text := payments.stripe_error(status, body);
BEGIN
    SELECT * INTO r FROM payments.refunds x
     WHERE x.id = (context ->> 'refund_id')::uuid AND x.intent_id = intent FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT final THEN
        UPDATE payments.refunds x SET failure_reason = err, updated_at = now() WHERE x.id = r.id;
        RETURN;
    END IF;
    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            j := body::jsonb;
        EXCEPTION WHEN OTHERS THEN
            j := NULL;
        END;
        IF j IS NOT NULL AND jsonb_typeof(j) = 'object' AND coalesce(j ->> 'id', '') ~ '^re_[A-Za-z0-9_]{1,250}$' THEN
            UPDATE payments.refunds x SET stripe_refund_id = coalesce(x.stripe_refund_id, j ->> 'id'),
                   failure_reason = NULL, updated_at = now()
             WHERE x.id = r.id;
            PERFORM payments.set_refund_status(r.id, j ->> 'status', j ->> 'failure_reason');
            RETURN;
        END IF;
        err := 'Stripe answered without a refund';
    END IF;
    IF status BETWEEN 400 AND 499 AND status NOT IN (409, 429) THEN
        -- Stripe refused it: nothing was refunded. The ledger gets the debit back.
        IF r.status = 'submitted' THEN
            PERFORM payments.set_refund_status(r.id, 'failed', err);
        END IF;
        RETURN;
    END IF;
    -- No definitive answer (timeouts, 5xx, 409/429 after every retry): Stripe may
    -- have refunded. Nothing is reversed; refund.* webhooks (matched by
    -- metadata) or an operator settle it.
    UPDATE payments.refunds x SET failure_reason = 'unresolved: ' || err, updated_at = now() WHERE x.id = r.id;
    PERFORM pgcloud.audit('payment.refund_unresolved', 'refund', r.id::text, 'failed',
        jsonb_build_object('status', status, 'error', err));
END
$$;
COMMENT ON FUNCTION payments.refund_result(uuid, integer, text, jsonb, boolean) IS 'The Stripe refund intent''s outcome: an answer sets the refund''s state from Stripe''s (succeeded, pending, failed); a refusal (4xx other than 409/429) fails it, so billing reverses the debit; no definitive answer leaves it submitted, audited as payment.refund_unresolved, for the webhooks or an operator.';
