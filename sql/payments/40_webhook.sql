-- Stripe webhooks: verified in C, deduplicated by event id, applied once.

-- A refused webhook: audited (never with its body) and answered with the
-- catalogued error through PostgREST's response.status, so the audit row
-- commits with the answer instead of being rolled back with an exception.
CREATE FUNCTION payments.webhook_reject(code text, reason text, signed_at bigint, body_bytes integer,
                                        header_present boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    e pgcloud.error_codes;
BEGIN
    SELECT * INTO e FROM pgcloud.error_codes c WHERE c.code = webhook_reject.code;
    PERFORM pgcloud.audit('payment.webhook_rejected', 'stripe_webhook', NULL, 'rejected',
        jsonb_build_object('code', code, 'reason', reason, 'signed_at', signed_at, 'body_bytes', body_bytes,
                           'signature_header', header_present));
    PERFORM set_config('response.status', e.http_status::text, true);
    RETURN jsonb_build_object('code', e.code, 'message', e.message, 'details', reason, 'hint', NULL);
END
$$;
COMMENT ON FUNCTION payments.webhook_reject(text, text, bigint, integer, boolean) IS 'Refuses a webhook: audits payment.webhook_rejected (reason, signature time, body size; never the body), sets response.status to the code''s HTTP status and returns the error body {code, message, details, hint}.';

CREATE FUNCTION payments.json_integer(v jsonb) RETURNS bigint
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' AND (v #>> '{}') ~ '^-?[0-9]{1,18}$' THEN (v #>> '{}')::bigint END
$$;
COMMENT ON FUNCTION payments.json_integer(jsonb) IS 'A JSON integer as bigint; NULL for anything else (a float, a string, null): money is never read through floating point.';

CREATE FUNCTION payments.refresh_payment(payment uuid) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
    UPDATE payments.payments p
       SET amount_refunded = r.total,
           status = CASE WHEN r.total = 0 THEN 'paid' WHEN r.total < p.amount THEN 'partially_refunded' ELSE 'refunded' END,
           updated_at = now()
      FROM (SELECT coalesce(sum(x.amount), 0)::bigint AS total FROM payments.refunds x
             WHERE x.payment_id = refresh_payment.payment AND x.status = 'succeeded') r
     WHERE p.id = refresh_payment.payment
$$;
COMMENT ON FUNCTION payments.refresh_payment(uuid) IS 'Recomputes a payment''s amount_refunded and status from its succeeded refunds.';

-- A Checkout Session paid: one payment, one payment.succeeded, whatever the
-- number and order of the events that say so.
CREATE FUNCTION payments.session_paid(event jsonb, obj jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    ref text := coalesce(obj ->> 'client_reference_id', obj -> 'metadata' ->> 'pgcloud_session_id');
    s payments.payment_sessions;
    p payments.payments;
    v_amount bigint := payments.json_integer(obj -> 'amount_total');
    v_currency text := lower(obj ->> 'currency');
BEGIN
    IF ref IS NULL OR ref !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN 'ignored_unknown_session';
    END IF;
    SELECT * INTO s FROM payments.payment_sessions x WHERE x.id = ref::uuid FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'ignored_unknown_session';
    END IF;
    IF s.stripe_session_id IS NOT NULL AND s.stripe_session_id <> obj ->> 'id' THEN
        PERFORM pgcloud.audit('payment.webhook_mismatch', 'payment_session', s.id::text, 'failed',
            jsonb_build_object('event_id', event ->> 'id', 'expected', s.stripe_session_id, 'got', obj ->> 'id'));
        RETURN 'ignored_session_mismatch';
    END IF;
    UPDATE payments.payment_sessions x
       SET stripe_session_id = coalesce(x.stripe_session_id, obj ->> 'id'),
           payment_status = obj ->> 'payment_status', updated_at = now()
     WHERE x.id = s.id;
    IF obj ->> 'payment_status' IS DISTINCT FROM 'paid' THEN
        RETURN 'awaiting_payment';     -- asynchronous methods: checkout.session.async_payment_succeeded follows
    END IF;
    IF v_amount IS NULL OR v_amount <= 0 OR v_currency IS NULL OR v_currency !~ '^[a-z]{3}$' THEN
        PERFORM pgcloud.audit('payment.webhook_invalid', 'payment_session', s.id::text, 'failed',
            jsonb_build_object('event_id', event ->> 'id', 'reason', 'amount_total or currency missing'));
        RETURN 'ignored_invalid_amount';
    END IF;
    INSERT INTO payments.payments (session_id, user_id, checkout_session_id, payment_intent, amount, currency, status,
                                   event_id)
    VALUES (s.id, s.user_id, obj ->> 'id', obj ->> 'payment_intent', v_amount, v_currency, 'paid', event ->> 'id')
    ON CONFLICT DO NOTHING
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RETURN 'already_recorded';
    END IF;
    UPDATE payments.payment_sessions x
       SET status = 'complete', url = NULL, completed_at = now(), updated_at = now()
     WHERE x.id = s.id AND x.status <> 'complete';
    PERFORM pgcloud.emit('payment.succeeded', 'payment', p.id::text,
        jsonb_build_object('payment_id', p.id, 'user_id', p.user_id, 'amount', p.amount, 'currency', p.currency,
                           'checkout_session_id', p.checkout_session_id, 'session_id', s.id,
                           'payment_intent', p.payment_intent));
    PERFORM pgcloud.audit('payment.succeeded', 'payment', p.id::text, 'ok',
        jsonb_build_object('amount', p.amount, 'currency', p.currency, 'checkout_session_id', p.checkout_session_id,
                           'session_id', s.id, 'event_id', event ->> 'id')
        || CASE WHEN p.amount <> s.amount OR p.currency <> s.currency
                THEN jsonb_build_object('requested_amount', s.amount, 'requested_currency', s.currency)
                ELSE '{}'::jsonb END);
    RETURN 'payment_recorded';
END
$$;
COMMENT ON FUNCTION payments.session_paid(jsonb, jsonb) IS 'checkout.session.completed / async_payment_succeeded: with payment_status paid, records the payment once (unique by Checkout Session id) and emits payment.succeeded with the amount Stripe collected; otherwise notes the payment status.';

CREATE FUNCTION payments.set_refund_status(refund uuid, stripe_status text, reason text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    r payments.refunds;
    target text := CASE stripe_status
                       WHEN 'succeeded' THEN 'succeeded'
                       WHEN 'pending' THEN 'pending'
                       WHEN 'requires_action' THEN 'pending'
                       WHEN 'failed' THEN 'failed'
                       WHEN 'canceled' THEN 'failed'
                   END;
BEGIN
    SELECT * INTO r FROM payments.refunds x WHERE x.id = refund FOR UPDATE;
    IF NOT FOUND OR target IS NULL OR r.status = target THEN
        RETURN r.status;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM payments.refund_transitions t WHERE t.from_state = r.status AND t.to_state = target) THEN
        RETURN r.status;    -- e.g. a late "pending" after "succeeded": the newer state stays
    END IF;
    UPDATE payments.refunds x
       SET status = target, failure_reason = CASE WHEN target = 'failed'
                                                  THEN left(coalesce(set_refund_status.reason, stripe_status), 500)
                                                  ELSE x.failure_reason END,
           updated_at = now()
     WHERE x.id = r.id;
    PERFORM payments.refresh_payment(r.payment_id);
    IF target = 'succeeded' THEN
        PERFORM pgcloud.emit('payment.refunded', 'payment', r.payment_id::text,
            jsonb_build_object('payment_id', r.payment_id, 'refund_id', r.id, 'user_id', r.user_id,
                               'amount', r.amount, 'currency', r.currency));
    ELSIF target = 'failed' THEN
        -- The money did not go back: billing reverses its debit (once, by refund id).
        PERFORM pgcloud.emit('refund.failed', 'refund', r.id::text,
            jsonb_build_object('refund_id', r.id, 'payment_id', r.payment_id, 'user_id', r.user_id,
                               'amount', r.amount, 'currency', r.currency, 'failure_reason', left(coalesce(reason, stripe_status), 500)));
    END IF;
    PERFORM pgcloud.audit('payment.refund_' || target, 'refund', r.id::text, CASE WHEN target = 'failed' THEN 'failed' ELSE 'ok' END,
        jsonb_build_object('from', r.status, 'stripe_status', stripe_status, 'reason', reason));
    RETURN target;
END
$$;
COMMENT ON FUNCTION payments.set_refund_status(uuid, text, text) IS 'Moves a refund to the state Stripe reports (succeeded; pending / requires_action -> pending; failed / canceled -> failed) when the transition is allowed; entering succeeded emits payment.refunded, entering failed emits refund.failed (billing gives the debit back). Audited. Returns the resulting status.';

CREATE FUNCTION payments.apply_stripe_event(event jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    obj jsonb := event -> 'data' -> 'object';
    r payments.refunds;
    n integer;
    ref text;
BEGIN
    CASE event ->> 'type'
    WHEN 'checkout.session.completed', 'checkout.session.async_payment_succeeded' THEN
        RETURN payments.session_paid(event, obj);
    WHEN 'checkout.session.expired', 'checkout.session.async_payment_failed' THEN
        UPDATE payments.payment_sessions x
           SET status = CASE WHEN event ->> 'type' = 'checkout.session.expired' THEN 'expired' ELSE 'failed' END,
               url = NULL, payment_status = coalesce(obj ->> 'payment_status', x.payment_status),
               last_error = CASE WHEN event ->> 'type' = 'checkout.session.async_payment_failed'
                                 THEN 'the asynchronous payment failed' ELSE x.last_error END,
               updated_at = now()
         WHERE x.stripe_session_id = obj ->> 'id' AND x.status IN ('creating', 'open');
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN CASE WHEN n > 0 THEN 'session_updated' ELSE 'ignored' END;
    WHEN 'charge.refunded' THEN
        -- The charge's refunded total, for reconciliation; refunds whose answer
        -- was lost are at Stripe: they are pending until refund.updated says more.
        UPDATE payments.payments p
           SET stripe_amount_refunded = greatest(p.stripe_amount_refunded,
                                                 coalesce(payments.json_integer(obj -> 'amount_refunded'), 0)),
               updated_at = now()
         WHERE p.payment_intent = obj ->> 'payment_intent';
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            RETURN 'ignored_unknown_charge';
        END IF;
        FOR r IN SELECT x.* FROM payments.refunds x JOIN payments.payments p ON p.id = x.payment_id
                  WHERE p.payment_intent = obj ->> 'payment_intent' AND x.status = 'submitted'
                  ORDER BY x.created_at
        LOOP
            PERFORM payments.set_refund_status(r.id, 'pending');
        END LOOP;
        RETURN 'charge_reconciled';
    WHEN 'refund.created', 'refund.updated', 'refund.failed', 'charge.refund.updated' THEN
        ref := obj -> 'metadata' ->> 'pgcloud_refund_id';
        SELECT * INTO r FROM payments.refunds x
         WHERE x.stripe_refund_id = obj ->> 'id'
            OR (ref ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' AND x.id = ref::uuid)
         FOR UPDATE;
        IF NOT FOUND THEN
            RETURN 'ignored_unknown_refund';
        END IF;
        IF r.stripe_refund_id IS NULL THEN
            UPDATE payments.refunds x SET stripe_refund_id = obj ->> 'id', updated_at = now() WHERE x.id = r.id;
        ELSIF r.stripe_refund_id <> obj ->> 'id' THEN
            RETURN 'ignored_refund_mismatch';
        END IF;
        IF r.status IN ('requested', 'declined') THEN
            RETURN 'ignored';
        END IF;
        RETURN 'refund_' || payments.set_refund_status(r.id, obj ->> 'status', obj ->> 'failure_reason');
    ELSE
        RETURN 'ignored';   -- accepted and ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION payments.apply_stripe_event(jsonb) IS 'Applies one verified, first-seen Stripe event: checkout.session.completed / async_payment_succeeded (payment), .expired / .async_payment_failed (session state), charge.refunded (reconciliation), refund.created / updated / failed and charge.refund.updated (refund state). Any other type is accepted and ignored. Returns the outcome.';

CREATE FUNCTION payments.stripe_webhook_apply(p_body text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    body text := coalesce(p_body, '');
    header text := pgcloud.header('stripe-signature');
    v record;
    event jsonb;
    obj jsonb;
    v_outcome text;
BEGIN
    IF octet_length(body) > pgcloud.policy('payments.webhook_max_bytes', NULL::integer) THEN
        RETURN payments.webhook_reject('webhook_payload_too_large', 'payload_too_large', NULL, octet_length(body),
                                       header IS NOT NULL);
    END IF;
    SELECT * INTO v FROM payments.verify_signature(body, header,
                                                   pgcloud.policy('payments.webhook_tolerance_seconds', NULL::integer));
    IF v.verdict <> 'ok' THEN
        RETURN payments.webhook_reject(CASE WHEN v.verdict = 'no_secrets_configured' THEN 'webhook_not_configured'
                                            ELSE 'webhook_signature_invalid' END,
                                       v.verdict, v.signed_at, octet_length(body), header IS NOT NULL);
    END IF;
    -- Only now, signed by Stripe, is the body parsed.
    BEGIN
        event := body::jsonb;
    EXCEPTION WHEN OTHERS THEN
        RETURN payments.webhook_reject('webhook_payload_invalid', 'not_json', v.signed_at, octet_length(body), true);
    END;
    obj := event -> 'data' -> 'object';
    IF jsonb_typeof(event) <> 'object' OR coalesce(event ->> 'id', '') !~ '^evt_[A-Za-z0-9_]{1,250}$'
       OR coalesce(event ->> 'type', '') !~ '^[a-z_]+(\.[a-z_]+)+$' OR jsonb_typeof(obj) IS DISTINCT FROM 'object' THEN
        RETURN payments.webhook_reject('webhook_payload_invalid', 'not_a_stripe_event', v.signed_at,
                                       octet_length(body), true);
    END IF;
    -- Deduplication: a redelivery (even a concurrent one, which waits here) finds the row.
    INSERT INTO payments.webhook_events (event_id, event_type, livemode, object_id, stripe_created, signed_at)
    VALUES (event ->> 'id', event ->> 'type', (event ->> 'livemode')::boolean, left(obj ->> 'id', 255),
            to_timestamp(payments.json_integer(event -> 'created')), to_timestamp(v.signed_at))
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        PERFORM pgcloud.audit('payment.webhook_received', 'stripe_event', event ->> 'id', 'ok',
            jsonb_build_object('type', event ->> 'type', 'outcome', 'duplicate'));
        RETURN jsonb_build_object('received', true, 'event_id', event ->> 'id', 'duplicate', true);
    END IF;
    v_outcome := payments.apply_stripe_event(event);
    UPDATE payments.webhook_events w SET outcome = v_outcome WHERE w.event_id = event ->> 'id';
    PERFORM pgcloud.audit('payment.webhook_received', 'stripe_event', event ->> 'id', 'ok',
        jsonb_build_object('type', event ->> 'type', 'outcome', v_outcome, 'object_id', left(obj ->> 'id', 255),
                           'secret_index', v.secret_index));
    RETURN jsonb_build_object('received', true, 'event_id', event ->> 'id', 'type', event ->> 'type',
                              'outcome', v_outcome);
END
$$;
COMMENT ON FUNCTION payments.stripe_webhook_apply(text) IS 'Internal to api.stripe_webhook() (both forms): size limit, signature (C), parse, deduplication by event id, then the event''s effect; every request audited (rejected ones without the body).';

CREATE FUNCTION api.stripe_webhook(text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN coalesce(pgcloud.idempotent('payments.stripe_webhook', jsonb_build_object('body', $1)),
                    pgcloud.idempotent_done('payments.stripe_webhook', payments.stripe_webhook_apply($1)));
END
$$;
COMMENT ON FUNCTION api.stripe_webhook(text) IS 'Stripe webhook endpoint (anonymous: Stripe signs, it does not log in). The raw body is the argument, the Stripe-Signature header comes through request.headers; verified in C against pgcloud.stripe_webhook_secrets (several v1 signatures and several secrets accepted, payments.webhook_tolerance_seconds). A refused request answers 400 (413 when too large, 500 when no secret is configured) and is audited without its body. Stripe events are applied once by event id: a paid checkout.session.completed credits the balance exactly once; unknown types are accepted and ignored. Returns {received, event_id, type, outcome} or {received, event_id, duplicate}.';
SELECT pgcloud.expose('api.stripe_webhook(text)', 'anon');

-- How Stripe really reaches us: PostgREST, given Content-Type:
-- application/json, calls the function with a single unnamed json parameter
-- as api.stripe_webhook($1::json). The json type keeps its input text byte
-- for byte, so the signature is verified over exactly the raw body Stripe
-- signed. (text/plain reaches the text form above, which psql uses too.)
CREATE FUNCTION api.stripe_webhook(json) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN coalesce(pgcloud.idempotent('payments.stripe_webhook', jsonb_build_object('body', $1::text)),
                    pgcloud.idempotent_done('payments.stripe_webhook', payments.stripe_webhook_apply($1::text)));
END
$$;
COMMENT ON FUNCTION api.stripe_webhook(json) IS 'Stripe webhook endpoint as PostgREST calls it for Content-Type: application/json (POST /rpc/stripe_webhook with the raw event as the body): the json value keeps the body byte for byte, and it is handled exactly as api.stripe_webhook(text) (signature over the raw body, once per event id, refusals audited).';
SELECT pgcloud.expose('api.stripe_webhook(json)', 'anon');
