-- pgcloud_payments install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_payments" to load this file. \quit

SELECT pgcloud.service_begin('payments');
-- source: sql/payments/00_catalogue.sql
-- pgcloud_payments: Stripe Checkout top-ups, signed webhooks, refunds.
-- Schema payments, owned by pgcloud_svc_payments (created by pgcloud.service_begin).
--
-- Decisions:
--   * A top-up is a payments.payment_sessions row and a Stripe intent
--     (pgcloud.http_request) written in one transaction; the HTTP executor
--     creates the Checkout Session after commit with Idempotency-Key = our
--     session id and our callback stores its id and URL.
--   * api.stripe_webhook verifies Stripe-Signature in C (src/payments/,
--     HMAC-SHA256 over "<t>.<body>", constant-time, several v1 values and
--     several endpoint secrets, tolerance from policy) before it parses the
--     body. A rejected request is audited without its body and answered 400
--     through PostgREST's response.status, so the audit row commits. Events
--     are deduplicated by Stripe event id; a paid Checkout Session becomes one
--     payment (unique by Checkout Session id) and one payment.succeeded, which
--     billing books once by the same id.
--   * Refunds (see 50_refunds.sql): the ledger debit comes first, the Stripe
--     refund intent only once the debit is seen; a refund that fails at Stripe
--     is announced (refund.failed) and reversed in the ledger.
--   * Money is bigint minor units; Stripe's JSON integers are read as such
--     (a float is refused).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('checkout_amount_invalid',   400, 'The amount is outside the allowed top-up range.', 'payments'),
    ('currency_not_supported',    400, 'This currency is not accepted for your account.', 'payments'),
    ('checkout_not_found',        404, 'The checkout session does not exist.', 'payments'),
    ('payment_not_found',         404, 'The payment does not exist.', 'payments'),
    ('payment_not_refundable',    409, 'This payment cannot be refunded.', 'payments'),
    ('refund_exceeds_payment',    409, 'The refund is larger than what is left of the payment.', 'payments'),
    ('refund_exceeds_balance',    409, 'The refund is larger than the account''s balance.', 'payments'),
    ('webhook_signature_invalid', 400, 'The Stripe-Signature header is missing, malformed, outside the time tolerance or does not match.', 'payments'),
    ('webhook_payload_invalid',   400, 'The webhook body is not a Stripe event.', 'payments'),
    ('webhook_payload_too_large', 413, 'The webhook body is too large.', 'payments'),
    ('webhook_not_configured',    500, 'No Stripe webhook endpoint secret is configured.', 'payments');

-- payments.webhook_tolerance_seconds and payments.checkout_min/max_amount are seeded by the core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('payments.currencies', '["usd"]', 'Currencies a top-up may be made in (ISO 4217, lower case); an account''s own currency wins once known.'),
    ('payments.product_name', '"pgcloud credit"', 'Name of the line item on the Stripe Checkout page.'),
    ('payments.success_url', '"https://console.pgcloud.invalid/billing/checkout/success"', 'Where Stripe Checkout sends the user after paying (http or https URL).'),
    ('payments.cancel_url', '"https://console.pgcloud.invalid/billing/checkout/cancelled"', 'Where Stripe Checkout sends the user who cancels (http or https URL).'),
    ('payments.webhook_max_bytes', '262144', 'Largest webhook body accepted (bytes); larger ones are refused before the signature is computed.'),
    ('payments.refund_allow_negative_balance', 'false', 'Whether a refund may take the account''s balance below zero (billing decides against the real balance).');

-- source: sql/payments/10_tables.sql
-- Read models, checkout sessions, payments, refunds, webhook events.

CREATE TABLE payments.users (
    user_id    uuid PRIMARY KEY,
    email      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.users IS 'Read model of users (from user.created): the e-mail address Stripe Checkout is prefilled with.';
COMMENT ON COLUMN payments.users.user_id IS 'The user.';
COMMENT ON COLUMN payments.users.email IS 'E-mail address.';
COMMENT ON COLUMN payments.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE payments.accounts (
    user_id       uuid PRIMARY KEY,
    balance       bigint NOT NULL,
    currency      text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    last_entry_id bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.accounts IS 'Read model of billing balances (from ledger.entry_posted): the currency a top-up must be in, and a first check of a refund against the balance (billing decides with the real one).';
COMMENT ON COLUMN payments.accounts.user_id IS 'The user.';
COMMENT ON COLUMN payments.accounts.balance IS 'Balance after the newest entry seen (minor units).';
COMMENT ON COLUMN payments.accounts.currency IS 'The account''s currency.';
COMMENT ON COLUMN payments.accounts.last_entry_id IS 'The newest ledger entry seen; older events do not overwrite it.';
COMMENT ON COLUMN payments.accounts.updated_at IS 'When it was last updated.';

CREATE TABLE payments.session_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE payments.session_transitions IS 'Allowed changes of payments.payment_sessions.status (from_state NULL: initial state).';
COMMENT ON COLUMN payments.session_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN payments.session_transitions.to_state IS 'State after.';
INSERT INTO payments.session_transitions (from_state, to_state) VALUES
    (NULL, 'creating'),
    ('creating', 'open'), ('creating', 'failed'),
    -- Webhooks may overtake the executor's callback.
    ('creating', 'complete'), ('creating', 'expired'),
    ('open', 'complete'), ('open', 'expired'), ('open', 'failed'),
    ('expired', 'complete');

CREATE TABLE payments.payment_sessions (
    id                uuid PRIMARY KEY,
    user_id           uuid NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status            text NOT NULL CHECK (status IN ('creating', 'open', 'complete', 'expired', 'failed')),
    stripe_session_id text UNIQUE CHECK (length(stripe_session_id) BETWEEN 1 AND 255),
    url               text,
    payment_status    text,
    intent_id         uuid NOT NULL,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX payment_sessions_user_idx ON payments.payment_sessions (user_id, created_at);
CREATE TRIGGER payment_sessions_status BEFORE INSERT OR UPDATE OF status ON payments.payment_sessions
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('status', 'payments.session_transitions');
COMMENT ON TABLE payments.payment_sessions IS 'Top-ups: one row per api.create_checkout(), written with the Stripe intent that creates its Checkout Session (Idempotency-Key = id).';
COMMENT ON COLUMN payments.payment_sessions.id IS 'Our session id: Stripe''s client_reference_id and Idempotency-Key.';
COMMENT ON COLUMN payments.payment_sessions.user_id IS 'Who tops up.';
COMMENT ON COLUMN payments.payment_sessions.amount IS 'Amount in minor units.';
COMMENT ON COLUMN payments.payment_sessions.currency IS 'Currency.';
COMMENT ON COLUMN payments.payment_sessions.status IS 'creating (intent not answered yet), open (Checkout URL ready), complete, expired or failed.';
COMMENT ON COLUMN payments.payment_sessions.stripe_session_id IS 'Stripe Checkout Session id (cs_...).';
COMMENT ON COLUMN payments.payment_sessions.url IS 'Stripe Checkout URL the user pays at.';
COMMENT ON COLUMN payments.payment_sessions.payment_status IS 'Stripe''s payment_status (unpaid, paid, no_payment_required) as last seen.';
COMMENT ON COLUMN payments.payment_sessions.intent_id IS 'The pgcloud.http_intents row that creates the Checkout Session.';
COMMENT ON COLUMN payments.payment_sessions.last_error IS 'Stripe''s answer when creating it failed.';
COMMENT ON COLUMN payments.payment_sessions.created_at IS 'When it was requested.';
COMMENT ON COLUMN payments.payment_sessions.updated_at IS 'Last change.';
COMMENT ON COLUMN payments.payment_sessions.completed_at IS 'When it was paid.';

CREATE TABLE payments.payments (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id             uuid NOT NULL UNIQUE REFERENCES payments.payment_sessions (id),
    user_id                uuid NOT NULL,
    checkout_session_id    text NOT NULL UNIQUE,
    payment_intent         text,
    amount                 bigint NOT NULL CHECK (amount > 0),
    currency               text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status                 text NOT NULL CHECK (status IN ('paid', 'partially_refunded', 'refunded')),
    amount_refunded        bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    stripe_amount_refunded bigint NOT NULL DEFAULT 0 CHECK (stripe_amount_refunded >= 0),
    event_id               text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (amount_refunded <= amount)
);
CREATE INDEX payments_user_idx ON payments.payments (user_id, created_at);
CREATE INDEX payments_intent_idx ON payments.payments (payment_intent);
COMMENT ON TABLE payments.payments IS 'Money received: one row per paid Checkout Session (unique by its id, whatever the number or order of webhooks), announced once as payment.succeeded.';
COMMENT ON COLUMN payments.payments.id IS 'Payment id (what api.admin_refund() takes).';
COMMENT ON COLUMN payments.payments.session_id IS 'Our payment session.';
COMMENT ON COLUMN payments.payments.user_id IS 'Who paid.';
COMMENT ON COLUMN payments.payments.checkout_session_id IS 'Stripe Checkout Session id: the ledger credit''s cause.';
COMMENT ON COLUMN payments.payments.payment_intent IS 'Stripe PaymentIntent id (pi_...), what refunds are made against.';
COMMENT ON COLUMN payments.payments.amount IS 'Amount paid (Stripe''s amount_total), minor units.';
COMMENT ON COLUMN payments.payments.currency IS 'Currency.';
COMMENT ON COLUMN payments.payments.status IS 'paid, partially_refunded or refunded (by succeeded refunds).';
COMMENT ON COLUMN payments.payments.amount_refunded IS 'Sum of our succeeded refunds.';
COMMENT ON COLUMN payments.payments.stripe_amount_refunded IS 'The charge''s amount_refunded as Stripe last reported it (charge.refunded), for reconciliation.';
COMMENT ON COLUMN payments.payments.event_id IS 'The Stripe event that recorded it.';
COMMENT ON COLUMN payments.payments.created_at IS 'When it was recorded.';
COMMENT ON COLUMN payments.payments.updated_at IS 'Last change.';

CREATE TABLE payments.refund_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE payments.refund_transitions IS 'Allowed changes of payments.refunds.status (from_state NULL: initial state).';
COMMENT ON COLUMN payments.refund_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN payments.refund_transitions.to_state IS 'State after.';
INSERT INTO payments.refund_transitions (from_state, to_state) VALUES
    (NULL, 'requested'),
    ('requested', 'declined'), ('requested', 'submitted'),
    ('submitted', 'pending'), ('submitted', 'succeeded'), ('submitted', 'failed'),
    ('pending', 'succeeded'), ('pending', 'failed'),
    ('succeeded', 'failed');

CREATE TABLE payments.refunds (
    id               uuid PRIMARY KEY,
    payment_id       uuid NOT NULL REFERENCES payments.payments (id),
    user_id          uuid NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status           text NOT NULL CHECK (status IN ('requested', 'declined', 'submitted', 'pending', 'succeeded', 'failed')),
    stripe_refund_id text UNIQUE,
    intent_id        uuid,
    ledger_entry_id  bigint,
    failure_reason   text,
    requested_by     uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment_idx ON payments.refunds (payment_id);
CREATE TRIGGER refunds_status BEFORE INSERT OR UPDATE OF status ON payments.refunds
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('status', 'payments.refund_transitions');
COMMENT ON TABLE payments.refunds IS 'Refunds: requested (waiting for billing''s debit), declined (billing refused: balance), submitted (debited; Stripe refund intent written), pending / succeeded at Stripe, or failed (Stripe refused or failed it; the debit is reversed).';
COMMENT ON COLUMN payments.refunds.id IS 'Refund id: the ledger debit''s cause and the Stripe Idempotency-Key.';
COMMENT ON COLUMN payments.refunds.payment_id IS 'The payment refunded.';
COMMENT ON COLUMN payments.refunds.user_id IS 'The payer.';
COMMENT ON COLUMN payments.refunds.amount IS 'Amount in minor units.';
COMMENT ON COLUMN payments.refunds.currency IS 'Currency.';
COMMENT ON COLUMN payments.refunds.reason IS 'Why (from the operator).';
COMMENT ON COLUMN payments.refunds.status IS 'requested, declined, submitted, pending, succeeded or failed.';
COMMENT ON COLUMN payments.refunds.stripe_refund_id IS 'Stripe refund id (re_...).';
COMMENT ON COLUMN payments.refunds.intent_id IS 'The pgcloud.http_intents row that creates the Stripe refund.';
COMMENT ON COLUMN payments.refunds.ledger_entry_id IS 'The billing ledger entry that debited it.';
COMMENT ON COLUMN payments.refunds.failure_reason IS 'Why it was declined or failed.';
COMMENT ON COLUMN payments.refunds.requested_by IS 'The operator who asked (JWT sub), NULL at psql.';
COMMENT ON COLUMN payments.refunds.created_at IS 'When it was requested.';
COMMENT ON COLUMN payments.refunds.updated_at IS 'Last change.';

CREATE TABLE payments.webhook_events (
    event_id       text PRIMARY KEY CHECK (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
    event_type     text NOT NULL,
    livemode       boolean,
    object_id      text,
    stripe_created timestamptz,
    signed_at      timestamptz NOT NULL,
    outcome        text NOT NULL DEFAULT 'received',
    received_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.webhook_events IS 'Every verified Stripe event, once (a redelivery, even concurrent, finds its row and has no effect).';
COMMENT ON COLUMN payments.webhook_events.event_id IS 'Stripe event id (evt_...).';
COMMENT ON COLUMN payments.webhook_events.event_type IS 'Event type, e.g. checkout.session.completed.';
COMMENT ON COLUMN payments.webhook_events.livemode IS 'Stripe''s livemode flag.';
COMMENT ON COLUMN payments.webhook_events.object_id IS 'Id of data.object.';
COMMENT ON COLUMN payments.webhook_events.stripe_created IS 'When Stripe created the event.';
COMMENT ON COLUMN payments.webhook_events.signed_at IS 'The signature''s timestamp.';
COMMENT ON COLUMN payments.webhook_events.outcome IS 'What it did: payment_recorded, session_updated, refund_updated, ignored, ...';
COMMENT ON COLUMN payments.webhook_events.received_at IS 'When it was received.';

SELECT pg_catalog.pg_extension_config_dump('payments.users', '');
SELECT pg_catalog.pg_extension_config_dump('payments.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payment_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payments', '');
SELECT pg_catalog.pg_extension_config_dump('payments.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_events', '');

-- source: sql/payments/20_c.sql
-- C: webhook signature check and form encoding (src/payments/).

CREATE FUNCTION payments.verify_signature(body text, signature text, tolerance_seconds integer,
                                          OUT verdict text, OUT signed_at bigint, OUT secret_index integer)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_payments_verify_signature';
COMMENT ON FUNCTION payments.verify_signature(text, text, integer) IS 'Verifies a Stripe-Signature header over the raw body (C): HMAC-SHA256 of "<t>.<body>" with each secret of pgcloud.stripe_webhook_secrets, compared in constant time with every v1 value; then |now - t| <= tolerance_seconds. verdict is ok, missing_header, header_too_long, malformed_header, no_v1_signature, no_secrets_configured, signature_mismatch, timestamp_too_old or timestamp_in_future; signed_at is t; secret_index the 1-based secret that matched.';

CREATE FUNCTION payments.form_encode(names text[], vals text[]) RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 'pgcloud_payments_form_encode';
COMMENT ON FUNCTION payments.form_encode(text[], text[]) IS 'An application/x-www-form-urlencoded body from names and values (C; NULL values are left out), e.g. for Stripe''s bracket notation metadata[k]=v.';

-- source: sql/payments/30_checkout.sql
-- Top-ups: a payment session and its Stripe intent in one transaction.

CREATE FUNCTION payments.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'this call needs a signed-in user (the JWT sub claim)');
    END IF;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION payments.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

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

CREATE FUNCTION payments.create_checkout_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_user uuid := payments.require_user();
    v_amount bigint;
    v_currency text := lower(btrim(args ->> 'currency'));
    lo bigint := pgcloud.policy('payments.checkout_min_amount', NULL::bigint);
    hi bigint := pgcloud.policy('payments.checkout_max_amount', NULL::bigint);
    known_currency text;
    session_id uuid := gen_random_uuid();
    intent uuid;
    form text;
BEGIN
    IF args ->> 'amount' IS NULL THEN
        PERFORM pgcloud.raise('checkout_amount_invalid', 'amount is required (minor units)');
    END IF;
    v_amount := (args ->> 'amount')::bigint;
    IF v_amount < lo OR v_amount > hi THEN
        PERFORM pgcloud.raise('checkout_amount_invalid', format('amount must be between %s and %s (minor units)', lo, hi));
    END IF;
    SELECT a.currency INTO known_currency FROM payments.accounts a WHERE a.user_id = v_user;
    IF v_currency IS NULL OR v_currency !~ '^[a-z]{3}$'
       OR (known_currency IS NOT NULL AND v_currency <> known_currency)
       OR (known_currency IS NULL
           AND NOT pgcloud.policy('payments.currencies', NULL::jsonb) ? v_currency) THEN
        PERFORM pgcloud.raise('currency_not_supported',
            format('%s is not accepted here', coalesce(left(args ->> 'currency', 16), 'no currency')),
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
COMMENT ON FUNCTION payments.create_checkout_apply(jsonb) IS 'Internal to api.create_checkout(): validates {amount, currency} against policy and the account''s currency, writes the payment session and the Stripe intent (POST /v1/checkout/sessions, Idempotency-Key = session id) in this transaction; audited as payment.checkout_created, announced as checkout.created.';

CREATE FUNCTION api.create_checkout(amount bigint, currency text DEFAULT 'usd') RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('payments.create_checkout', jsonb_build_object('amount', amount, 'currency', currency),
                              'payments.create_checkout_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.create_checkout(bigint, text) IS 'Starts a top-up of amount minor units (payments.checkout_min_amount to payments.checkout_max_amount) in currency (your account''s): returns {id, status: creating, amount, currency}. Stripe''s Checkout Session is created right after; poll api.get_checkout(id) for its URL. Safe to retry with X-Idempotency-Key.';

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
        v_user := payments.require_user();
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

-- source: sql/payments/40_webhook.sql
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

CREATE FUNCTION payments.stripe_webhook_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    body text := coalesce(args ->> 'body', '');
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
COMMENT ON FUNCTION payments.stripe_webhook_apply(jsonb) IS 'Internal to api.stripe_webhook(): size limit, signature (C), parse, deduplication by event id, then the event''s effect; every request audited (rejected ones without the body).';

CREATE FUNCTION api.stripe_webhook(text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('anon');
    RETURN pgcloud.idempotent('payments.stripe_webhook', jsonb_build_object('body', $1),
                              'payments.stripe_webhook_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.stripe_webhook(text) IS 'Stripe webhook endpoint (anonymous: Stripe signs, it does not log in). The raw body is the argument, the Stripe-Signature header comes through request.headers; verified in C against pgcloud.stripe_webhook_secrets (several v1 signatures and several secrets accepted, payments.webhook_tolerance_seconds). A refused request answers 400 (413 when too large, 500 when no secret is configured) and is audited without its body. Stripe events are applied once by event id: a paid checkout.session.completed credits the balance exactly once; unknown types are accepted and ignored. Returns {received, event_id, type, outcome} or {received, event_id, duplicate}.';

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
    RETURN pgcloud.idempotent('payments.stripe_webhook', jsonb_build_object('body', $1::text),
                              'payments.stripe_webhook_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.stripe_webhook(json) IS 'Stripe webhook endpoint as PostgREST calls it for Content-Type: application/json (POST /rpc/stripe_webhook with the raw event as the body): the json value keeps the body byte for byte, and it is handled exactly as api.stripe_webhook(text) (signature over the raw body, once per event id, refusals audited).';

-- source: sql/payments/50_refunds.sql
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

CREATE FUNCTION payments.admin_refund_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_payment uuid;
    v_amount bigint;
    v_reason text := btrim(args ->> 'reason');
    p payments.payments;
    a payments.accounts;
    outstanding bigint;
    allow_negative boolean := pgcloud.policy('payments.refund_allow_negative_balance', NULL::boolean);
    refund_id uuid := gen_random_uuid();
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF args ->> 'payment_id' IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'payment_id is required');
    END IF;
    v_payment := (args ->> 'payment_id')::uuid;
    IF args ->> 'amount' IS NULL OR (args ->> 'amount')::bigint <= 0 THEN
        PERFORM pgcloud.raise('invalid_argument', 'amount must be a positive integer (minor units)');
    END IF;
    v_amount := (args ->> 'amount')::bigint;
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
COMMENT ON FUNCTION payments.admin_refund_apply(jsonb) IS 'Internal to api.admin_refund(): checks {payment_id, amount, reason} against what is left of the payment (under its lock) and the balance read model, records the refund as requested and emits refund.requested for billing''s debit; audited as payment.refund_requested.';

CREATE FUNCTION api.admin_refund(payment_id uuid, amount bigint, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('payments.admin_refund',
        jsonb_build_object('payment_id', payment_id, 'amount', amount, 'reason', reason),
        'payments.admin_refund_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_refund(uuid, bigint, text) IS 'Operators: refunds amount (minor units) of a payment: never more than was paid minus what is refunded or being refunded (409 refund_exceeds_payment), never more than the balance unless payments.refund_allow_negative_balance (409 refund_exceeds_balance; billing has the last word and may decline). Returns {id, payment_id, amount, currency, status: requested}; billing debits the ledger, then Stripe is asked (Idempotency-Key = refund id). Safe to retry with X-Idempotency-Key.';

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

-- source: sql/payments/60_events.sql
-- Events in: users, ledger entries (balance read model, refund debits), refund declines.

CREATE FUNCTION payments.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                  payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, payments
AS $$
DECLARE
    v_user uuid;
    v_entry bigint;
    v_refund uuid;
    r payments.refunds;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        IF coalesce(payload ->> 'user_id', aggregate_id) !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'payload field user_id must be a uuid');
        END IF;
        v_user := coalesce(payload ->> 'user_id', aggregate_id)::uuid;
        INSERT INTO payments.users AS u (user_id, email, updated_at) VALUES (v_user, payload ->> 'email', now())
        ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, u.email), updated_at = now();

    WHEN 'ledger.entry_posted' THEN
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

    WHEN 'billing.refund_declined' THEN
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

    ELSE
        NULL;   -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION payments.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created fills payments.users; ledger.entry_posted keeps the balance read model and, for a refund''s debit, writes the Stripe refund intent; billing.refund_declined declines the refund. Other types are ignored.';

-- source: sql/payments/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_checkout(bigint, text), api.get_checkout(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.stripe_webhook(text), api.stripe_webhook(json) TO pgcloud_anon;
GRANT EXECUTE ON FUNCTION api.admin_refund(uuid, bigint, text) TO pgcloud_admin;

SELECT pgcloud.service_end('payments');
