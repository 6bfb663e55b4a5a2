-- billing: every refusal of the API, the event handler and the ledger, then
-- the shapes of api.balance(), api.ledger() and api.usage().
\set VERBOSITY default
\set SHOW_CONTEXT never
\set u '''b1b1b1b1-0000-4000-8000-000000000001'''
\set v '''b2b2b2b2-0000-4000-8000-000000000002'''
-- Events this test emits are removed at the end (other tests count the outbox).
SELECT coalesce(max(id), 0) AS outbox_before FROM pgcloud.outbox \gset

-- ---- the API without a user, and with bad arguments -------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user"}';
SELECT api.balance();
SELECT api.ledger();
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.balance();
SELECT api.usage('b1b1b1b1-0000-4000-8000-0000000000a1');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "b1b1b1b1-0000-4000-8000-000000000001"}';
SELECT api.ledger(NULL, 0);
SELECT api.ledger(NULL, 201);
SELECT api.ledger(NULL, NULL);
SELECT api.ledger(-1);
SELECT api.usage('b1b1b1b1-0000-4000-8000-0000000000a1');
SELECT api.admin_adjust_balance(:u, 10, 'not an admin');
SELECT api.admin_verify_ledger();
-- A user with no account yet.
SELECT api.balance();
SELECT api.ledger();
RESET request.jwt.claims;

-- ---- operators' adjustment: refusals -----------------------------------------------------------
SELECT api.admin_adjust_balance(NULL, 10, 'x');
SELECT api.admin_adjust_balance(:u, 0, 'x');
SELECT api.admin_adjust_balance(:u, NULL, 'x');
SELECT api.admin_adjust_balance(:u, 10, '');
SELECT api.admin_adjust_balance(:u, 10, '   ');
SELECT api.admin_adjust_balance(:u, 10, repeat('r', 501));

-- ---- events that are refused (invalid_event: retried, then dead-lettered) -----------------------
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'user.created', 'user', 'not-a-uuid', '{}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'user.created', 'user', :u, '[1, 2]', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    '{"allocation_id": "b1b1b1b1-0000-4000-8000-0000000000a1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "price_per_hour": 10.5, "currency": "usd"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    '{"allocation_id": "b1b1b1b1-0000-4000-8000-0000000000a1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "price_per_hour": "100", "currency": "usd"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    '{"allocation_id": "b1b1b1b1-0000-4000-8000-0000000000a1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "price_per_hour": -1, "currency": "usd"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    '{"allocation_id": "b1b1b1b1-0000-4000-8000-0000000000a1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "price_per_hour": 100, "currency": "dollars"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    '{"allocation_id": "b1b1b1b1-0000-4000-8000-0000000000a1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "price_per_hour": 100, "currency": "usd", "started_at": "yesterday-ish"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.released', 'allocation', 'x', '{"user_id": "nope"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'payment.succeeded', 'payment', 'x',
    '{"user_id": "b1b1b1b1-0000-4000-8000-000000000001", "amount": 0, "currency": "usd", "checkout_session_id": "cs_x"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'payment.succeeded', 'payment', 'x',
    '{"user_id": "b1b1b1b1-0000-4000-8000-000000000001", "amount": 1000.5, "currency": "usd", "checkout_session_id": "cs_x"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'payment.succeeded', 'payment', 'x',
    '{"user_id": "b1b1b1b1-0000-4000-8000-000000000001", "amount": 1000, "currency": "usd"}', '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'refund.requested', 'refund', 'x',
    '{"refund_id": "b1b1b1b1-0000-4000-8000-0000000000f1", "user_id": "b1b1b1b1-0000-4000-8000-000000000001", "amount": -5, "currency": "usd"}', '{}');
-- Unknown types are ignored.
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'something.else', 'x', 'x', '{}', '{}');

-- ---- the ledger refuses (terse: a failing row's DETAIL holds its timestamp) ---------------------------
\set VERBOSITY terse
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'user.created', 'user', :u, jsonb_build_object('user_id', :u), '{}');
SELECT (billing.post_entry(:u, 'credit', 1000, 'usd', 'payment', 'cs_regress_1')).balance_after;
SELECT billing.post_entry(:u, 'credit', 1000, 'usd', 'payment', 'cs_regress_1');
SELECT billing.post_entry(:u, 'credit', 5, 'eur', 'payment', 'cs_regress_eur');
SELECT billing.post_entry(:u, 'credit', -5, 'usd', 'payment', 'cs_regress_neg');
SELECT billing.post_entry(:u, 'usage_debit', 5, 'usd', 'usage_record', 'u1');
SELECT billing.post_entry(:u, 'credit', 5, 'usd', 'refund', 'cs_wrong_cause');
SELECT billing.post_entry(:u, 'bonus', 5, 'usd', 'adjustment', 'b1');
SELECT billing.post_entry(:u, 'adjustment', 0, 'usd', 'adjustment', 'a0');
SELECT billing.post_entry(:u, 'adjustment', 5, 'usd', 'adjustment', '');
SELECT billing.post_entry(:u, 'adjustment', 9223372036854775807, 'usd', 'adjustment', 'overflow');
UPDATE billing.ledger_entries SET amount = 1 WHERE cause_id = 'cs_regress_1';
DELETE FROM billing.ledger_entries WHERE cause_id = 'cs_regress_1';
TRUNCATE billing.ledger_entries;
\set VERBOSITY default
SELECT kind, amount, currency, balance_after, cause_type, cause_id FROM billing.ledger_entries WHERE account_id = :u;

-- ---- shapes ----------------------------------------------------------------------------------------------
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', 'x',
    jsonb_build_object('allocation_id', 'b1b1b1b1-0000-4000-8000-0000000000a1', 'user_id', :u, 'sku', 'a100x8',
                       'price_per_hour', 1234, 'currency', 'usd', 'started_at', now() - interval '185 seconds'), '{}');
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.released', 'allocation', 'x',
    jsonb_build_object('allocation_id', 'b1b1b1b1-0000-4000-8000-0000000000a1', 'user_id', :u,
                       'ended_at', now() - interval '3 seconds'), '{}');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "b1b1b1b1-0000-4000-8000-000000000001"}';
SELECT api.balance() - 'as_of_entry_id';
SELECT e - 'id' - 'created_at' - 'cause_id' AS entry FROM jsonb_array_elements(api.ledger(NULL, 3) -> 'entries') e;
SELECT (api.ledger(NULL, 3) ->> 'next_before') IS NOT NULL AS has_next_page;
SELECT api.usage('b1b1b1b1-0000-4000-8000-0000000000a1') - 'started_at' - 'ended_at' - 'records' AS usage;
SELECT r ->> 'kind' AS kind, r ->> 'interval' AS interval_no, r ->> 'seconds' AS seconds, r ->> 'amount' AS amount
  FROM jsonb_array_elements(api.usage('b1b1b1b1-0000-4000-8000-0000000000a1') -> 'records') r;
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "b2b2b2b2-0000-4000-8000-000000000002"}';
SELECT api.usage('b1b1b1b1-0000-4000-8000-0000000000a1');
RESET request.jwt.claims;
SELECT api.admin_verify_ledger(:u);
SELECT job, schedule, enabled FROM pgcloud.jobs WHERE service = 'billing';
DELETE FROM pgcloud.outbox WHERE id > :outbox_before;
