-- Top-ups: a payment session and its Stripe intent in one transaction.

-- The error message of a Stripe answer (its JSON error object), or the status.
CREATE FUNCTION payments.stripe_error(status integer, body text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    msg text;
BEGIN
    BEGIN
        msg := concat_ws(': ', body::jsonb -> 'error' ->> 'code', body::jsonb -> 'error' ->> 'message');
    EXCEPTION WHEN OTHERS THEN
        msg := NULL;
    END;
    RETURN left(CASE WHEN status IS NULL THEN 'no answer from Stripe' ELSE format('HTTP %s', status) END
                || CASE WHEN coalesce(msg, '') <> '' THEN ' (' || msg || ')' ELSE '' END, 500);
END
$$;
COMMENT ON FUNCTION payments.stripe_error(integer, text) IS 'A one-line description of a failed Stripe answer: the status and Stripe''s error code and message.';

CREATE FUNCTION payments.create_checkout_apply(p_amount bigint, p_currency text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    v_amount bigint := p_amount;
    v_currency text := lower(btrim(p_currency));
    lo bigint := pgcloud.policy('payments.checkout_min_amount', NULL::bigint);
    hi bigint := pgcloud.policy('payments.checkout_max_amount', NULL::bigint);
    known_currency text;
    session_id uuid := gen_random_uuid();
    intent uuid;
    form text;
BEGIN
    IF v_amount IS NULL THEN
        PERFORM pgcloud.raise('checkout_amount_invalid', 'amount is required (minor units)');
    END IF;
    IF v_amount < lo OR v_amount > hi THEN
        PERFORM pgcloud.raise('checkout_amount_invalid', format('amount must be between %s and %s (minor units)', lo, hi));
    END IF;
    SELECT a.currency INTO known_currency FROM payments.accounts a WHERE a.user_id = v_user;
    IF v_currency IS NULL OR v_currency !~ '^[a-z]{3}$'
       OR (known_currency IS NOT NULL AND v_currency <> known_currency)
       OR (known_currency IS NULL
           AND NOT pgcloud.policy('payments.currencies', NULL::jsonb) ? v_currency) THEN
        PERFORM pgcloud.raise('currency_not_supported',
            format('%s is not accepted here', coalesce(left(p_currency, 16), 'no currency')),
            CASE WHEN known_currency IS NOT NULL THEN format('Your account is in %s.', known_currency)
                 ELSE format('Accepted: %s.', pgcloud.policy('payments.currencies', NULL::jsonb)) END);
    END IF;

    form := payments.form_encode(
        ARRAY['mode', 'success_url', 'cancel_url',
              'line_items[0][price_data][currency]', 'line_items[0][price_data][unit_amount]',
              'line_items[0][price_data][product_data][name]', 'line_items[0][quantity]',
              'client_reference_id', 'customer_email',
              'metadata[pgcloud_session_id]', 'metadata[pgcloud_user_id]',
              'payment_intent_data[metadata][pgcloud_session_id]'],
        ARRAY['payment', pgcloud.policy('payments.success_url', NULL::text), pgcloud.policy('payments.cancel_url', NULL::text),
              v_currency, v_amount::text,
              pgcloud.policy('payments.product_name', NULL::text), '1',
              session_id::text, (SELECT u.email FROM payments.users u WHERE u.user_id = v_user),
              session_id::text, v_user::text,
              session_id::text]);
    -- Idempotency-Key = our session id: a retried intent never makes a second session.
    intent := pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions', form,
                                   'application/x-www-form-urlencoded', '{}'::jsonb, session_id::text,
                                   'payments.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
                                   jsonb_build_object('kind', 'checkout', 'session_id', session_id));
    INSERT INTO payments.payment_sessions (id, user_id, amount, currency, status, intent_id)
    VALUES (session_id, v_user, v_amount, v_currency, 'creating', intent);
    PERFORM pgcloud.audit('payment.checkout_created', 'payment_session', session_id::text, 'ok',
        jsonb_build_object('amount', v_amount, 'currency', v_currency, 'intent_id', intent));
    PERFORM pgcloud.emit('checkout.created', 'payment_session', session_id::text,
        jsonb_build_object('session_id', session_id, 'user_id', v_user, 'amount', v_amount, 'currency', v_currency));
    RETURN jsonb_build_object('id', session_id, 'status', 'creating', 'amount', v_amount, 'currency', v_currency);
END
$$;
COMMENT ON FUNCTION payments.create_checkout_apply(bigint, text) IS 'Internal to api.create_checkout() (which authorizes): validates amount and currency against policy and the account''s currency, writes the payment session and the Stripe intent (POST /v1/checkout/sessions, Idempotency-Key = session id) in this transaction; audited as payment.checkout_created, announced as checkout.created.';

CREATE FUNCTION api.create_checkout(amount bigint, currency text DEFAULT 'usd') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('payments.create_checkout', jsonb_build_object('amount', amount, 'currency', currency)),
                    pgcloud.idempotent_done('payments.create_checkout', payments.create_checkout_apply(amount, currency)));
END
$$;
COMMENT ON FUNCTION api.create_checkout(bigint, text) IS 'Starts a top-up of amount minor units (payments.checkout_min_amount to payments.checkout_max_amount) in currency (your account''s): returns {id, status: creating, amount, currency}. Stripe''s Checkout Session is created right after; poll api.get_checkout(id) for its URL. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.create_checkout(bigint, text)', 'user', 'admin');

CREATE FUNCTION api.get_checkout(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    role text;
    v_user uuid;
    s payments.payment_sessions;
    p payments.payments;
BEGIN
    role := pgcloud.authorize('user');
    IF role <> 'pgcloud_admin' THEN
        v_user := pgcloud.require_user();
    END IF;
    SELECT * INTO s FROM payments.payment_sessions x WHERE x.id = get_checkout.id;
    IF NOT FOUND OR (v_user IS NOT NULL AND s.user_id <> v_user) THEN
        PERFORM pgcloud.raise('checkout_not_found', format('no checkout session %s', get_checkout.id));
    END IF;
    SELECT * INTO p FROM payments.payments x WHERE x.session_id = s.id;
    RETURN jsonb_build_object('id', s.id, 'status', s.status, 'url', CASE WHEN s.status = 'open' THEN s.url END,
                              'amount', s.amount, 'currency', s.currency, 'stripe_session_id', s.stripe_session_id,
                              'payment_id', p.id, 'error', s.last_error, 'created_at', s.created_at,
                              'completed_at', s.completed_at);
END
$$;
COMMENT ON FUNCTION api.get_checkout(uuid) IS 'One of your top-ups (admins: any): {id, status (creating, open, complete, expired, failed), url (the Stripe Checkout page while open), amount, currency, stripe_session_id, payment_id (once paid), error, created_at, completed_at}. Another user''s is 404 checkout_not_found.';
SELECT pgcloud.expose('api.get_checkout(uuid)', 'user', 'admin');

CREATE FUNCTION payments.checkout_result(intent uuid, status integer, body text, context jsonb, final boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    s payments.payment_sessions;
    j jsonb;
    err text;
BEGIN
    SELECT * INTO s FROM payments.payment_sessions x
     WHERE x.id = (context ->> 'session_id')::uuid AND x.intent_id = intent FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT final THEN
        err := payments.stripe_error(checkout_result.status, body);
        UPDATE payments.payment_sessions x SET last_error = err, updated_at = now() WHERE x.id = s.id;
        RETURN;
    END IF;
    IF status BETWEEN 200 AND 299 THEN
        BEGIN
            j := body::jsonb;
        EXCEPTION WHEN OTHERS THEN
            j := NULL;
        END;
        IF j IS NULL OR jsonb_typeof(j) <> 'object' OR coalesce(j ->> 'id', '') !~ '^cs_[A-Za-z0-9_]{1,250}$' THEN
            err := 'Stripe answered without a Checkout Session';
        END IF;
    ELSE
        err := payments.stripe_error(status, body);
    END IF;
    IF err IS NULL THEN
        -- A webhook may have completed (or expired) the session already: keep its state.
        UPDATE payments.payment_sessions x
           SET stripe_session_id = coalesce(x.stripe_session_id, j ->> 'id'),
               url = j ->> 'url',
               status = CASE WHEN x.status = 'creating' THEN 'open' ELSE x.status END,
               payment_status = coalesce(x.payment_status, j ->> 'payment_status'),
               last_error = NULL, updated_at = now()
         WHERE x.id = s.id;
        PERFORM pgcloud.audit('payment.checkout_opened', 'payment_session', s.id::text, 'ok',
            jsonb_build_object('stripe_session_id', j ->> 'id'));
    ELSE
        UPDATE payments.payment_sessions x
           SET status = CASE WHEN x.status IN ('creating', 'open') THEN 'failed' ELSE x.status END,
               last_error = err, updated_at = now()
         WHERE x.id = s.id;
        PERFORM pgcloud.audit('payment.checkout_failed', 'payment_session', s.id::text, 'failed',
            jsonb_build_object('status', status, 'error', err));
    END IF;
END
$$;
COMMENT ON FUNCTION payments.checkout_result(uuid, integer, text, jsonb, boolean) IS 'The Checkout Session intent''s outcome: success stores its id and URL (open), a final failure marks the session failed with Stripe''s message; a try that will be retried only records the error.';

CREATE FUNCTION payments.on_http_result(intent_id uuid, status integer, response_headers jsonb,
                                        response_body text, context jsonb, final boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    CASE context ->> 'kind'
    WHEN 'checkout' THEN
        PERFORM payments.checkout_result(intent_id, status, response_body, context, final);
    WHEN 'refund' THEN
        PERFORM payments.refund_result(intent_id, status, response_body, context, final);
    ELSE
        NULL;
    END CASE;
END
$$;
COMMENT ON FUNCTION payments.on_http_result(uuid, integer, jsonb, text, jsonb, boolean) IS 'Callback of the Stripe intents (run by the HTTP executor as this service): Checkout Session creation and refunds.';
