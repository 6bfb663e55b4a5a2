-- services: payments billing
-- payments + billing: refunds. Debit first, Stripe intent only after it; over
-- the payment or the balance refused (payments at once, billing with the real
-- balance); a refund Stripe refuses or fails is reversed once; webhooks
-- reconcile; the ledger stays the sum of its entries.
BEGIN;
SELECT * FROM no_plan();

CREATE EXTENSION IF NOT EXISTS pgcrypto;
SET LOCAL pgcloud.stripe_webhook_secrets = 'whsec_refund_tests';
\set u '''99999999-0000-4000-8000-000000000009'''

CREATE FUNCTION pg_temp.hook(body text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE t bigint := floor(extract(epoch FROM clock_timestamp()));
        r jsonb;
BEGIN
    PERFORM set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
    PERFORM set_config('request.headers', jsonb_build_object('stripe-signature', 't=' || t || ',v1='
        || encode(hmac(convert_to(t || '.' || body, 'UTF8'), 'whsec_refund_tests'::bytea, 'sha256'), 'hex'))::text, true);
    SET LOCAL ROLE pgcloud_anon;
    r := api.stripe_webhook(body);
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    PERFORM set_config('request.headers', '', true);
    RETURN r;
END $$;
CREATE FUNCTION pg_temp.event(id text, type text, obj jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', id, 'object', 'event', 'type', type, 'created', 1700000000, 'livemode', false,
                              'data', jsonb_build_object('object', obj))::text
$$;
-- Delivers every pending event (the relay worker's job), as often as needed.
CREATE FUNCTION pg_temp.balance() RETURNS bigint LANGUAGE sql AS $$
    SELECT balance FROM billing.balances WHERE account_id = '99999999-0000-4000-8000-000000000009'
$$;
CREATE FUNCTION pg_temp.refund(pay uuid, amount bigint, reason text DEFAULT 'requested_by_customer') RETURNS uuid
LANGUAGE sql AS $$ SELECT (api.admin_refund(pay, amount, reason) ->> 'id')::uuid $$;
CREATE FUNCTION pg_temp.answer(refund uuid, code integer, body text) RETURNS void LANGUAGE sql AS $$
    SELECT payments.on_http_result(r.intent_id, code, '{}', body, jsonb_build_object('kind', 'refund', 'refund_id', r.id), true)
      FROM payments.refunds r WHERE r.id = refund
$$;
CREATE FUNCTION pg_temp.status(refund uuid) RETURNS text LANGUAGE sql AS $$
    SELECT status FROM payments.refunds WHERE id = refund
$$;
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;

-- A paid top-up of 10000 (session, callback, webhook, relay).
SELECT pgcloud.emit('user.created', 'user', :u, jsonb_build_object('user_id', :u));
SELECT pg_temp.relay();
SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_user', 'sub', :u)::text, true);
SELECT api.create_checkout(10000, 'usd') ->> 'id' AS s \gset
SELECT set_config('request.jwt.claims', '', true);
SELECT pg_temp.hook(pg_temp.event('evt_r_paid', 'checkout.session.completed',
    jsonb_build_object('id', 'cs_test_refunds', 'client_reference_id', :'s', 'amount_total', 10000, 'currency', 'usd',
                       'payment_status', 'paid', 'payment_intent', 'pi_refunds')));
SELECT pg_temp.relay();
SELECT id AS pay FROM payments.payments WHERE checkout_session_id = 'cs_test_refunds' \gset
SELECT is(pg_temp.balance(), 10000::bigint, 'credited 10000');
SELECT is((SELECT balance FROM payments.accounts WHERE user_id = :u), 10000::bigint,
    'payments'' balance read model follows ledger.entry_posted');

-- ---- refuse what cannot be refunded ---------------------------------------------------------------
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 10001, %L)', :'pay', 'too much')), 'refund_exceeds_payment 409',
    'more than was paid is refused');
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 0, %L)', :'pay', 'zero')), 'invalid_argument 400', 'a zero refund is refused');
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 5, %L)', :'pay', '')), 'invalid_argument 400', 'a reason is required');
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 5, %L)', gen_random_uuid(), 'x')), 'payment_not_found 404',
    'an unknown payment');
SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_user', 'sub', :u)::text, true);
-- Authorization is api.admin_refund()'s (once); its handler is the service
-- role's alone: a user who calls it directly is refused by PostgreSQL.
SELECT is(pg_temp.sqlstate_as('pgcloud_user', format('SELECT payments.admin_refund_apply(%L, 5, %L)', :'pay', 'x')),
    '42501', 'only operators refund (the handler cannot be called around the api function)');
SELECT set_config('request.jwt.claims', '', true);

-- ---- a refund: debit, then the Stripe intent --------------------------------------------------------
SELECT pg_temp.refund(:'pay', 4000) AS r1 \gset
SELECT is(pg_temp.status(:'r1'), 'requested', 'requested: waiting for billing''s debit');
SELECT is((SELECT count(*) FROM pgcloud.http_intents WHERE idempotency_key = :'r1'), 0::bigint,
    'no Stripe intent before the ledger is debited');
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 6001, %L)', :'pay', 'x')), 'refund_exceeds_payment 409',
    'paid minus already requested: at most 6000 more');
SELECT pg_temp.relay();
SELECT is((SELECT amount FROM billing.ledger_entries WHERE kind = 'refund_debit' AND cause_id = :'r1'), -4000::bigint,
    'billing debited the refund (cause = refund id)');
SELECT is(pg_temp.status(:'r1'), 'submitted', 'then payments submitted it');
SELECT is((SELECT i.path || ' ' || i.idempotency_key FROM pgcloud.http_intents i JOIN payments.refunds r ON r.intent_id = i.id
            WHERE r.id = :'r1'), '/v1/refunds ' || :'r1', 'POST /v1/refunds with Idempotency-Key = refund id');
SELECT ok((SELECT i.body LIKE 'payment_intent=pi_refunds&amount=4000&reason=requested_by_customer&metadata%5Bpgcloud_refund_id%5D=' || :'r1' || '%'
             FROM pgcloud.http_intents i JOIN payments.refunds r ON r.intent_id = i.id WHERE r.id = :'r1'),
    'against the PaymentIntent, with our refund id in metadata');
SELECT is((SELECT ledger_entry_id FROM payments.refunds WHERE id = :'r1'),
          (SELECT id FROM billing.ledger_entries WHERE kind = 'refund_debit' AND cause_id = :'r1'), 'the refund knows its ledger entry');
SELECT pg_temp.answer(:'r1', 200, '{"id": "re_one", "object": "refund", "amount": 4000, "status": "succeeded"}');
SELECT is(pg_temp.status(:'r1'), 'succeeded', 'Stripe''s answer: succeeded');
SELECT is((SELECT status || ' ' || amount_refunded FROM payments.payments WHERE id = :'pay'), 'partially_refunded 4000',
    'the payment is partially refunded');
SELECT is((SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'payment.refunded' AND payload ->> 'refund_id' = :'r1'),
    1::bigint, 'payment.refunded announced');
SELECT is(pg_temp.balance(), 6000::bigint, 'balance 6000');

-- ---- Stripe refuses: the debit is given back, once -----------------------------------------------------
SELECT pg_temp.refund(:'pay', 6000, 'duplicate') AS r2 \gset
SELECT pg_temp.relay();
SELECT is(pg_temp.balance(), 0::bigint, 'the second refund is debited');
SELECT pg_temp.answer(:'r2', 400, '{"error": {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge ch_x has already been refunded."}}');
SELECT is(pg_temp.status(:'r2'), 'failed', 'Stripe refused it: failed');
SELECT is((SELECT failure_reason FROM payments.refunds WHERE id = :'r2'),
    'HTTP 400 (charge_already_refunded: Charge ch_x has already been refunded.)', 'with Stripe''s reason');
SELECT pg_temp.relay();
SELECT is((SELECT amount FROM billing.ledger_entries WHERE kind = 'refund_reversal' AND cause_id = :'r2'), 6000::bigint,
    'refund.failed: billing reverses the debit');
SELECT is(pg_temp.balance(), 6000::bigint, 'the balance is back');
SELECT pg_temp.answer(:'r2', 400, '{}');
SELECT pgcloud.emit('refund.failed', 'refund', :'r2', jsonb_build_object('refund_id', :'r2'));
SELECT pg_temp.relay();
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE cause_id = :'r2'), 2::bigint, 'reversed once, however often it is said');

-- ---- webhooks reconcile -------------------------------------------------------------------------------------
SELECT is(pg_temp.hook(pg_temp.event('evt_r_charge', 'charge.refunded',
    jsonb_build_object('id', 'ch_refunds', 'object', 'charge', 'amount', 10000, 'amount_refunded', 4000,
                       'payment_intent', 'pi_refunds', 'refunded', false))) ->> 'outcome', 'charge_reconciled',
    'charge.refunded is matched to the payment');
SELECT is((SELECT stripe_amount_refunded FROM payments.payments WHERE id = :'pay'), 4000::bigint,
    'Stripe''s refunded total is kept beside ours');
SELECT is(pg_temp.hook(pg_temp.event('evt_r_failed_later', 'refund.updated',
    jsonb_build_object('id', 're_one', 'object', 'refund', 'amount', 4000, 'status', 'failed',
                       'failure_reason', 'lost_or_stolen_card', 'metadata', jsonb_build_object('pgcloud_refund_id', :'r1'))))
    ->> 'outcome', 'refund_failed', 'refund.updated: a succeeded refund failed later');
SELECT pg_temp.relay();
SELECT is((SELECT status || ' ' || amount_refunded FROM payments.payments WHERE id = :'pay'), 'paid 0', 'the payment is whole again');
SELECT is(pg_temp.balance(), 10000::bigint, 'and the ledger credited the 4000 back');

-- A refund whose answer was lost: a webhook settles it (matched by metadata).
SELECT pg_temp.refund(:'pay', 1000) AS r3 \gset
SELECT pg_temp.relay();
SELECT pg_temp.answer(:'r3', NULL, NULL);
SELECT is((SELECT status || ' / ' || failure_reason FROM payments.refunds WHERE id = :'r3'), 'submitted / unresolved: no answer from Stripe',
    'no definitive answer: left submitted, nothing reversed');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'payment.refund_unresolved' AND target_id = :'r3'), 1::bigint,
    'and audited for the operators');
SELECT is(pg_temp.hook(pg_temp.event('evt_r3_pending', 'refund.created',
    jsonb_build_object('id', 're_three', 'object', 'refund', 'amount', 1000, 'status', 'pending',
                       'metadata', jsonb_build_object('pgcloud_refund_id', :'r3')))) ->> 'outcome', 'refund_pending',
    'refund.created (pending) finds it by metadata');
SELECT is(pg_temp.hook(pg_temp.event('evt_r3_done', 'refund.updated',
    jsonb_build_object('id', 're_three', 'object', 'refund', 'amount', 1000, 'status', 'succeeded'))) ->> 'outcome',
    'refund_succeeded', 'refund.updated (succeeded) by Stripe id');
SELECT is(pg_temp.hook(pg_temp.event('evt_r3_late', 'refund.updated',
    jsonb_build_object('id', 're_three', 'object', 'refund', 'amount', 1000, 'status', 'pending'))) ->> 'outcome',
    'refund_succeeded', 'a late "pending" does not step back');
SELECT is(pg_temp.balance(), 9000::bigint, 'balance 9000');

-- ---- the balance limit: payments' read model at once, billing's real balance last -----------------------------
SELECT api.admin_adjust_balance(:u, -8950, 'spent');
SELECT pg_temp.relay();
SELECT is(pg_temp.error_text_of(format('SELECT api.admin_refund(%L, 100, %L)', :'pay', 'x')), 'refund_exceeds_balance 409',
    'more than the balance is refused at once (balance 50)');
-- The read model lags (the entry_posted not delivered yet): billing still decides.
SELECT api.admin_adjust_balance(:u, 50, 'back to 100');
SELECT pg_temp.relay();
SELECT pg_temp.refund(:'pay', 90) AS r4 \gset
SELECT api.admin_adjust_balance(:u, -60, 'spent again, not yet seen by payments');
SELECT is((SELECT balance FROM payments.accounts WHERE user_id = :u), 100::bigint, 'payments still believes 100');
SELECT pg_temp.relay();
SELECT is(pg_temp.status(:'r4') || ' ' || (SELECT failure_reason FROM payments.refunds WHERE id = :'r4'),
    'declined insufficient_balance', 'billing declines against the real balance (40): billing.refund_declined');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE cause_id = :'r4'), 0::bigint, 'nothing debited');
SELECT is((SELECT intent_id FROM payments.refunds WHERE id = :'r4'), NULL, 'nothing sent to Stripe');
SELECT pgcloud.set_policy('payments.refund_allow_negative_balance', 'true');
SELECT pg_temp.refund(:'pay', 90) AS r5 \gset
SELECT pg_temp.relay();
SELECT is(pg_temp.status(:'r5') || ' ' || pg_temp.balance(), 'submitted -50',
    'with payments.refund_allow_negative_balance the refund may take the balance below zero');

-- ---- X-Idempotency-Key and the audit trail -----------------------------------------------------------
SELECT set_config('request.headers', '{"x-idempotency-key": "refund-once"}', true);
SELECT api.admin_refund(:'pay', 10, 'retried') ->> 'id' AS r6a \gset
SELECT api.admin_refund(:'pay', 10, 'retried') ->> 'id' AS r6b \gset
SELECT set_config('request.headers', '', true);
SELECT is(:'r6a'::text, :'r6b'::text, 'the same X-Idempotency-Key returns the same refund');
SELECT is((SELECT count(*) FROM payments.refunds WHERE reason = 'retried'), 1::bigint, 'and makes one');
SELECT is((SELECT array_agg(DISTINCT action ORDER BY action) FROM pgcloud.audit_logs WHERE target_id = :'r1'),
    ARRAY['ledger.refund_debited', 'ledger.refund_reversed', 'payment.refund_failed', 'payment.refund_requested',
          'payment.refund_submitted', 'payment.refund_succeeded'], 'every step of a refund is audited');
SELECT is_empty($$SELECT * FROM billing.verify_ledger()$$, 'the ledger is consistent');
SELECT is(pg_temp.balance(), (SELECT sum(amount)::bigint FROM billing.ledger_entries WHERE account_id = :u),
    'balance = sum of entries');

SELECT * FROM finish();
ROLLBACK;
