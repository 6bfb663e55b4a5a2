-- billing: the ledger (immutability, running balance by trigger, one booking
-- per cause), balance = sum of entries after mixed operations, standing
-- events, the API and its grants.
BEGIN;
SELECT * FROM no_plan();

\set alice '''aaaaaaaa-0000-4000-8000-00000000000a'''
\set bob '''bbbbbbbb-0000-4000-8000-00000000000b'''
\set carol '''cccccccc-0000-4000-8000-00000000000c'''
\set a1 '''a1a1a1a1-0000-4000-8000-0000000000a1'''
\set a2 '''a2a2a2a2-0000-4000-8000-0000000000a2'''

CREATE FUNCTION pg_temp.pay(u text, amount bigint, session text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_temp.handle('billing', 'payment.succeeded', 'p', jsonb_build_object('payment_id', gen_random_uuid(), 'user_id', u,
                      'amount', amount, 'currency', 'usd', 'checkout_session_id', session))
$$;
CREATE FUNCTION pg_temp.outbox(t text, u text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pgcloud.outbox o WHERE o.event_type = t AND o.aggregate_id = u AND o.published_at IS NULL
$$;
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;

-- ---- accounts from user.created --------------------------------------------
SELECT pg_temp.handle('billing', 'user.created', :alice, jsonb_build_object('user_id', :alice, 'email', 'alice@example.com'));
SELECT is((SELECT currency || ' ' || balance || ' ' || coalesce(standing, 'unannounced') FROM billing.balances
            WHERE account_id = :alice), 'usd 0 unannounced', 'user.created opens an account in billing.currency');
SELECT is(pg_temp.outbox('account.standing_changed', :alice), 0::bigint,
    'nothing is announced before the first posting (no "exhausted" greeting for a new user)');
SELECT is(pg_temp.outbox('billing.low_balance', :alice), 0::bigint, 'no low-balance event for a new account');

-- ---- the trigger computes the running balance ---------------------------------
INSERT INTO billing.ledger_entries (id, account_id, kind, amount, currency, balance_after, cause_type, cause_id)
VALUES (999999, :alice, 'adjustment', 700, 'usd', 123456789, 'adjustment', 'adj-1');
SELECT is((SELECT balance_after FROM billing.ledger_entries WHERE cause_id = 'adj-1'), 700::bigint,
    'balance_after is computed, not taken from the INSERT');
SELECT isnt((SELECT id FROM billing.ledger_entries WHERE cause_id = 'adj-1'), 999999::bigint,
    'the id is drawn under the account lock, not taken from the INSERT');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice), 700::bigint, 'the account''s balance is its newest entry''s');
SELECT is(pg_temp.error_text_of($$INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
                             VALUES ('aaaaaaaa-0000-4000-8000-00000000000a', 'adjustment', 5, 'eur', 0, 'adjustment', 'adj-eur')$$),
    'currency_mismatch 409', 'an entry in another currency than its account''s is refused');
SELECT is(pg_temp.error_text_of($$INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
                             VALUES ('aaaaaaaa-0000-4000-8000-00000000000a', 'credit', -5, 'usd', 0, 'payment', 'cs_neg')$$),
    '23514', 'a credit must be positive (kind and sign checked)');
SELECT is(pg_temp.error_text_of($$INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
                             VALUES ('aaaaaaaa-0000-4000-8000-00000000000a', 'adjustment', 0, 'usd', 0, 'adjustment', 'adj-0')$$),
    '23514', 'a zero amount is refused');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice), 700::bigint,
    'refused entries leave the balance untouched');

-- ---- immutability ---------------------------------------------------------------
SELECT throws_ok($$UPDATE billing.ledger_entries SET amount = 1 WHERE cause_id = 'adj-1'$$, '23001', NULL,
    'UPDATE of a ledger entry is rejected, even for a superuser');
SELECT throws_ok($$DELETE FROM billing.ledger_entries WHERE cause_id = 'adj-1'$$, '23001', NULL,
    'DELETE of a ledger entry is rejected');
SELECT throws_ok($$TRUNCATE billing.ledger_entries$$, '23001', NULL, 'TRUNCATE of the ledger is rejected');
SET LOCAL ROLE pgcloud_svc_billing;
SELECT throws_ok($$DELETE FROM billing.ledger_entries$$, '23001', NULL, 'the owning service role cannot delete entries either');
RESET ROLE;

-- ---- one booking per cause ----------------------------------------------------------
SELECT pg_temp.pay(:alice, 5000, 'cs_test_alice_1');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice), 5700::bigint, 'payment.succeeded credits');
SELECT is((SELECT payload ->> 'standing' || ' ' || (payload ->> 'can_allocate') FROM pgcloud.outbox
            WHERE event_type = 'account.standing_changed' AND aggregate_id = :alice AND published_at IS NULL),
    'good true', 'the first booking announces the standing');
SELECT pg_temp.pay(:alice, 5000, 'cs_test_alice_1');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE kind = 'credit' AND cause_id = 'cs_test_alice_1'), 1::bigint,
    'a second payment.succeeded for the same Checkout Session books nothing');
SELECT is((SELECT duplicate FROM billing.book(:alice, 'credit', 5000, 'usd', 'payment', 'cs_test_alice_1')), true,
    'billing.book() reports the second credit for a session as a duplicate');
SELECT is(pg_temp.error_text_of($$INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
                             VALUES ('aaaaaaaa-0000-4000-8000-00000000000a', 'credit', 5000, 'usd', 0, 'payment', 'cs_test_alice_1')$$),
    '23505', 'and the ledger itself refuses a second credit for the session (unique per kind)');
SELECT pg_temp.pay(:alice, 999, 'cs_test_alice_1');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'ledger.booking_conflict'
            AND details -> 'requested' ->> 'amount' = '999'), 1::bigint, 'a conflicting second credit is audited');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice), 5700::bigint,
    'the balance counts the session once');
SELECT pg_temp.handle('billing', 'payment.succeeded', 'p', jsonb_build_object('payment_id', 'p-eur', 'user_id', :alice,
                  'amount', 900, 'currency', 'eur', 'checkout_session_id', 'cs_test_alice_eur'));
SELECT is((SELECT amount || ' ' || currency || ' ' || account_currency FROM billing.refused_credits
            WHERE checkout_session_id = 'cs_test_alice_eur'), '900 eur usd',
    'a payment in another currency is kept aside (not booked, not retried forever)');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'ledger.credit_refused' AND result = 'failed'), 1::bigint,
    'and audited for an operator');

-- ---- mixed operations: balance = sum of entries = last balance_after -----------------------
SELECT pg_temp.handle('billing', 'allocation.activated', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice,
                  'sku', 'h100x1', 'price_per_hour', 1000, 'currency', 'usd', 'node_hostname', 'gpu-01',
                  'started_at', now() - interval '10 minutes 30 seconds'));
SELECT is((SELECT count(*) FROM billing.usage_records WHERE allocation_id = :a1), 10::bigint,
    'activation in the past charges the complete intervals at once (10 of 60 s)');
SELECT throws_ok($$UPDATE billing.usage_records SET amount = 1$$, '23001', NULL, 'usage records: UPDATE rejected');
SELECT throws_ok($$TRUNCATE billing.usage_records$$, '23001', NULL, 'usage records: TRUNCATE rejected');
SELECT pg_temp.handle('billing', 'refund.requested', 'r', jsonb_build_object('refund_id', 'f0f0f0f0-0000-4000-8000-0000000000f1',
                  'user_id', :alice, 'amount', 1200, 'currency', 'usd', 'reason', 'requested_by_customer'));
SELECT pg_temp.handle('billing', 'refund.failed', 'r', jsonb_build_object('refund_id', 'f0f0f0f0-0000-4000-8000-0000000000f1'));
SELECT pg_temp.handle('billing', 'refund.failed', 'r', jsonb_build_object('refund_id', 'f0f0f0f0-0000-4000-8000-0000000000f1'));
SELECT is((SELECT array_agg(kind || ':' || amount ORDER BY id) FROM billing.ledger_entries
            WHERE cause_id = 'f0f0f0f0-0000-4000-8000-0000000000f1'),
    ARRAY['refund_debit:-1200', 'refund_reversal:1200'], 'a refund debit and, once, its reversal');
SELECT pg_temp.handle('billing', 'allocation.released', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice,
                  'ended_at', now() - interval '4 minutes 15 seconds'));
SELECT is((SELECT sum(amount)::bigint FROM billing.usage_records WHERE allocation_id = :a1), 104::bigint,
    'a late end gives back what was charged past it: 375 s at 1000/h is 104');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE kind = 'usage_correction' AND account_id = :alice), 1::bigint,
    'as one usage_correction entry');
SELECT lives_ok($$SELECT api.admin_adjust_balance('aaaaaaaa-0000-4000-8000-00000000000a', -33, 'goodwill correction')$$,
    'an operator adjustment is a new entry');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice),
          (SELECT sum(amount)::bigint FROM billing.ledger_entries WHERE account_id = :alice),
    'after mixed operations the balance is the sum of the entries');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice),
          (SELECT balance_after FROM billing.ledger_entries WHERE account_id = :alice ORDER BY id DESC LIMIT 1),
    'and the last entry''s balance_after');
SELECT is((SELECT balance FROM billing.balances WHERE account_id = :alice), 5700 - 104 - 33::bigint,
    'which is 5700 - 104 - 33');
SELECT is_empty($$SELECT * FROM billing.verify_ledger()$$, 'billing.verify_ledger() finds nothing wrong');

-- The check detects a head that does not match its entries.
SET LOCAL session_replication_role = replica;
UPDATE billing.ledger_entries SET amount = amount + 1 WHERE cause_id = 'adj-1';
SET LOCAL session_replication_role = origin;
SELECT is((SELECT array_agg(problem ORDER BY problem) FROM billing.verify_ledger(:alice)),
    ARRAY['balance_is_not_sum_of_entries', 'chain_broken'], 'verify_ledger() catches an entry altered behind the triggers');
SET LOCAL session_replication_role = replica;
UPDATE billing.ledger_entries SET amount = amount - 1 WHERE cause_id = 'adj-1';
SET LOCAL session_replication_role = origin;

-- ---- standing: low balance once per crossing, exhausted, force release ----------------------
SELECT pg_temp.handle('billing', 'user.created', :bob, jsonb_build_object('user_id', :bob));
SELECT pg_temp.pay(:bob, 1000, 'cs_test_bob_1');
SELECT is((SELECT standing FROM billing.accounts WHERE account_id = :bob), 'good', 'bob is in good standing');
SELECT pg_temp.handle('billing', 'allocation.activated', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :bob,
                  'sku', 'h100x1', 'price_per_hour', 36000, 'currency', 'usd', 'started_at', now() - interval '62 seconds'));
SELECT is((SELECT balance || ' ' || standing FROM billing.balances WHERE account_id = :bob), '400 low',
    'one minute at 36000/h takes 600: low');
SELECT is(pg_temp.outbox('billing.low_balance', :bob), 1::bigint, 'billing.low_balance emitted on the crossing');
SELECT is((SELECT count(*) FROM billing.low_balance_events WHERE account_id = :bob), 1::bigint, 'and recorded');
SELECT billing.accrue_allocation(:a2, now());
SELECT is(pg_temp.outbox('billing.low_balance', :bob), 1::bigint, 'staying under the threshold emits nothing more');
-- Push bob to exhaustion with an adjustment while a2 is still running.
SELECT api.admin_adjust_balance(:bob, -400, 'test exhaustion');
SELECT is((SELECT standing FROM billing.accounts WHERE account_id = :bob), 'exhausted', 'balance 0: exhausted');
SELECT is((SELECT payload -> 'allocation_ids' FROM pgcloud.outbox WHERE event_type = 'billing.force_release_requested'
            AND aggregate_id = :bob AND published_at IS NULL), jsonb_build_array(:a2),
    'billing.force_release_requested names the running allocation');
SELECT is((SELECT count(*) FROM billing.force_release_requests WHERE account_id = :bob), 1::bigint, 'and it is recorded');
SELECT is(pg_temp.outbox('billing.low_balance', :bob), 1::bigint, 'low -> exhausted is not a second crossing');
SELECT is((SELECT payload ->> 'min_balance_to_allocate' FROM pgcloud.outbox WHERE event_type = 'account.standing_changed'
            AND aggregate_id = :bob AND payload ->> 'standing' = 'exhausted' ORDER BY id DESC LIMIT 1), '100',
    'account.standing_changed carries min_balance_to_allocate for provisioning');
SELECT pg_temp.pay(:bob, 2000, 'cs_test_bob_2');
SELECT is((SELECT standing FROM billing.accounts WHERE account_id = :bob), 'good', 'a top-up restores good standing');
SELECT api.admin_adjust_balance(:bob, -1700, 'second crossing');
SELECT is(pg_temp.outbox('billing.low_balance', :bob), 2::bigint, 'a new downward crossing is a new low-balance event');

-- ---- the API as a user -------------------------------------------------------------------------------
SELECT array_agg(id ORDER BY id DESC) AS alice_ids, min(id) AS alice_first
  FROM billing.ledger_entries WHERE account_id = :alice \gset
SELECT pg_temp.as_user(:alice);
SET LOCAL ROLE pgcloud_user;
SELECT is((api.balance() ->> 'balance')::bigint, 5700 - 104 - 33::bigint, 'api.balance() as the user');
SELECT is(jsonb_array_length(api.ledger(NULL, 5) -> 'entries'), 5, 'api.ledger() pages by limit');
SELECT is((SELECT array_agg((e ->> 'id')::bigint ORDER BY (e ->> 'id')::bigint DESC)
             FROM jsonb_array_elements((api.ledger(NULL, 5) -> 'entries')
                                       || (api.ledger((api.ledger(NULL, 5) ->> 'next_before')::bigint, 200) -> 'entries')) e),
          :'alice_ids'::bigint[],
    'keyset pages (before = next_before) cover every entry once, newest first');
SELECT is(api.ledger(:alice_first, 5),
    '{"entries": [], "next_before": null}'::jsonb, 'before the first entry: empty, no next page');
SELECT is(pg_temp.error_text_of($$SELECT api.ledger(NULL, 0)$$), 'invalid_argument 400', 'limit 0 is refused');
SELECT is(pg_temp.error_text_of($$SELECT api.ledger(NULL, 201)$$), 'invalid_argument 400', 'limit above billing.ledger_page_max is refused');
SELECT is((api.usage(:a1) ->> 'amount')::bigint, 104::bigint, 'api.usage() of one''s allocation');
SELECT is(pg_temp.error_text_of($$SELECT api.usage('a2a2a2a2-0000-4000-8000-0000000000a2')$$), 'allocation_not_found 404',
    'another user''s allocation is not found');
SELECT is(pg_temp.error_text_of($$SELECT api.admin_adjust_balance('aaaaaaaa-0000-4000-8000-00000000000a', 1, 'x')$$), '42501',
    'a user may not adjust balances (no EXECUTE)');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);

SELECT pg_temp.as_user(:carol);
SET LOCAL ROLE pgcloud_user;
SELECT is(api.balance() ->> 'balance', '0', 'a user without an account sees 0');
RESET ROLE;
SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_anon')::text, true);
SET LOCAL ROLE pgcloud_anon;
SELECT is(pg_temp.error_text_of($$SELECT api.balance()$$), '42501', 'anonymous callers cannot call api.balance()');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);

SELECT * FROM finish();
ROLLBACK;
