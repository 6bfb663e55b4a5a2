-- payments: checkout sessions and their Stripe intent, the executor callback,
-- and api.stripe_webhook: signatures (tampered, stale, future-dated, several
-- v1, rotated secrets, missing), replayed and reordered events, exactly one
-- credit per Checkout Session.
BEGIN;
SELECT * FROM no_plan();

CREATE EXTENSION IF NOT EXISTS pgcrypto;
SET LOCAL pgcloud.stripe_webhook_secrets = ' whsec_old_secret , whsec_new_secret ';
\set u '''eeeeeeee-0000-4000-8000-00000000000e'''
\set other '''ffffffff-0000-4000-8000-00000000000f'''

CREATE FUNCTION pg_temp.now_s() RETURNS bigint LANGUAGE sql AS $$ SELECT floor(extract(epoch FROM clock_timestamp()))::bigint $$;
CREATE FUNCTION pg_temp.v1(body text, secret text, t bigint) RETURNS text LANGUAGE sql AS $$
    SELECT encode(hmac(convert_to(t || '.' || body, 'UTF8'), convert_to(secret, 'UTF8'), 'sha256'), 'hex')
$$;
CREATE FUNCTION pg_temp.sig(body text, secret text DEFAULT 'whsec_new_secret', t bigint DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
    SELECT 't=' || x || ',v1=' || pg_temp.v1(body, secret, x) FROM (SELECT coalesce(t, pg_temp.now_s()) AS x) n
$$;
-- Delivers a webhook as PostgREST would for Stripe: role pgcloud_anon, the header in request.headers.
CREATE FUNCTION pg_temp.hook(body text, header text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    PERFORM set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
    PERFORM set_config('request.headers', CASE WHEN header IS NULL THEN '{}' ELSE jsonb_build_object('stripe-signature', header)::text END, true);
    PERFORM set_config('response.status', '', true);
    SET LOCAL ROLE pgcloud_anon;
    r := api.stripe_webhook(body);
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    PERFORM set_config('request.headers', '', true);
    RETURN r || jsonb_build_object('http', coalesce(nullif(current_setting('response.status', true), ''), '200'));
END $$;
CREATE FUNCTION pg_temp.event(id text, type text, obj jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT jsonb_pretty(jsonb_build_object('id', id, 'object', 'event', 'api_version', '2024-06-20',
                        'created', pg_temp.now_s(), 'livemode', false, 'type', type,
                        'data', jsonb_build_object('object', obj)))
$$;
CREATE FUNCTION pg_temp.session_obj(session uuid, cs text, amount bigint, paid boolean DEFAULT true) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', cs, 'object', 'checkout.session', 'client_reference_id', session,
                              'amount_total', amount, 'currency', 'usd',
                              'payment_status', CASE WHEN paid THEN 'paid' ELSE 'unpaid' END,
                              'status', 'complete', 'payment_intent', 'pi_' || md5(cs),
                              'metadata', jsonb_build_object('pgcloud_session_id', session))
$$;
CREATE FUNCTION pg_temp.balance(u uuid) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce((SELECT balance FROM billing.balances WHERE account_id = u), 0)
$$;
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;

SELECT pgcloud.emit('user.created', 'user', :u, jsonb_build_object('user_id', :u, 'email', 'erin@example.com'));
SELECT pgcloud.relay_once();

-- ---- api.create_checkout: the session and its Stripe intent, together ----------------------
SELECT pg_temp.as_user(:u);
SET LOCAL ROLE pgcloud_user;
SELECT api.create_checkout(2500, 'usd') ->> 'id' AS s1 \gset
SELECT api.create_checkout(5000) ->> 'id' AS s2 \gset
SELECT api.create_checkout(700) ->> 'id' AS s3 \gset
SELECT is(pg_temp.error_text_of($$SELECT api.create_checkout(499, 'usd')$$), 'checkout_amount_invalid 400',
    'below payments.checkout_min_amount');
SELECT is(pg_temp.error_text_of($$SELECT api.create_checkout(1000001, 'usd')$$), 'checkout_amount_invalid 400',
    'above payments.checkout_max_amount');
SELECT is(pg_temp.error_text_of($$SELECT api.create_checkout(1000, 'eur')$$), 'currency_not_supported 400',
    'a currency outside payments.currencies');
SELECT is(pg_temp.error_text_of($$SELECT api.create_checkout(NULL, 'usd')$$), 'checkout_amount_invalid 400', 'no amount');
SELECT is(api.get_checkout(:'s1') ->> 'status', 'creating', 'api.get_checkout(): creating until Stripe answers');
RESET ROLE;
SELECT pg_temp.as_user(:other);
SET LOCAL ROLE pgcloud_user;
SELECT is(pg_temp.error_text_of(format('SELECT api.get_checkout(%L)', :'s1')), 'checkout_not_found 404',
    'another user''s checkout is not found');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);

SELECT is((SELECT count(*) FROM payments.payment_sessions s JOIN pgcloud.http_intents i ON i.id = s.intent_id
            WHERE s.user_id = :u), 3::bigint, 'each session has its intent, written in its transaction');
SELECT is((SELECT target || ' ' || method || ' ' || path || ' ' || content_type FROM pgcloud.http_intents i
             JOIN payments.payment_sessions s ON s.intent_id = i.id WHERE s.id = :'s1'),
    'stripe POST /v1/checkout/sessions application/x-www-form-urlencoded', 'POST /v1/checkout/sessions, form-encoded');
SELECT is((SELECT idempotency_key FROM pgcloud.http_intents i JOIN payments.payment_sessions s ON s.intent_id = i.id
            WHERE s.id = :'s1'), :'s1', 'Idempotency-Key is our session id');
SELECT is((SELECT requested_by::text FROM pgcloud.http_intents i JOIN payments.payment_sessions s ON s.intent_id = i.id
            WHERE s.id = :'s1'), 'pgcloud_svc_payments', 'the intent is the payments service''s');
SELECT ok((SELECT body LIKE '%client_reference_id=' || :'s1' || '%'
              AND body LIKE '%line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=2500%'
              AND body LIKE '%metadata%5Bpgcloud_session_id%5D=' || :'s1' || '%'
              AND body LIKE '%customer_email=erin%40example.com%'
              AND body LIKE 'mode=payment&%'
             FROM pgcloud.http_intents i JOIN payments.payment_sessions s ON s.intent_id = i.id WHERE s.id = :'s1'),
    'the form carries the amount, client_reference_id, metadata and the e-mail, percent-encoded');
SELECT is((SELECT headers FROM pgcloud.http_intents i JOIN payments.payment_sessions s ON s.intent_id = i.id
            WHERE s.id = :'s1'), '{}'::jsonb, 'no credentials stored with the intent');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'payment.checkout_created' AND target_id = :'s1'),
    1::bigint, 'audited');

-- ---- the executor's callback -------------------------------------------------------------------------
SELECT payments.on_http_result(s.intent_id, 200, '{}',
    jsonb_build_object('id', 'cs_test_one', 'object', 'checkout.session', 'url', 'https://checkout.stripe.com/c/pay/cs_test_one',
                       'payment_status', 'unpaid', 'status', 'open')::text,
    jsonb_build_object('kind', 'checkout', 'session_id', s.id), true)
  FROM payments.payment_sessions s WHERE s.id = :'s1';
SELECT pg_temp.as_user(:u);
SET LOCAL ROLE pgcloud_user;
SELECT is(api.get_checkout(:'s1') - ARRAY['created_at', 'completed_at', 'id'],
    jsonb_build_object('status', 'open', 'url', 'https://checkout.stripe.com/c/pay/cs_test_one', 'amount', 2500,
                       'currency', 'usd', 'stripe_session_id', 'cs_test_one', 'payment_id', NULL, 'error', NULL),
    'the Checkout Session id and URL are stored: status open');
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);
SELECT payments.on_http_result(s.intent_id, 400, '{}',
    '{"error": {"type": "invalid_request_error", "code": "parameter_missing", "message": "Missing required param: cancel_url."}}',
    jsonb_build_object('kind', 'checkout', 'session_id', s.id), true)
  FROM payments.payment_sessions s WHERE s.id = :'s3';
SELECT is((SELECT status || ' / ' || last_error FROM payments.payment_sessions WHERE id = :'s3'),
    'failed / HTTP 400 (parameter_missing: Missing required param: cancel_url.)', 'a refused creation fails the session with Stripe''s message');

-- ---- signatures ---------------------------------------------------------------------------------------
SELECT pg_temp.event('evt_1paid', 'checkout.session.completed', pg_temp.session_obj(:'s1', 'cs_test_one', 2500)) AS ev1 \gset
SELECT pg_temp.hook(:'ev1', 'v1=' || pg_temp.v1(:'ev1', 'whsec_new_secret', pg_temp.now_s())) AS r \gset
SELECT is((:'r'::jsonb) ->> 'code', 'webhook_signature_invalid', 'a header without t is refused');
SELECT is((:'r'::jsonb) ->> 'details', 'malformed_header', 'as malformed');
SELECT is((:'r'::jsonb) ->> 'http', '400', 'with HTTP 400 (response.status)');
SELECT is((pg_temp.hook(:'ev1', NULL)) ->> 'details', 'missing_header', 'no Stripe-Signature header');
SELECT is((pg_temp.hook(:'ev1', 't=' || pg_temp.now_s())) ->> 'details', 'no_v1_signature', 'no v1 value');
SELECT is((pg_temp.hook(replace(:'ev1', '2500', '250000'), pg_temp.sig(:'ev1'))) ->> 'details', 'signature_mismatch',
    'a tampered body (amount changed) does not verify');
SELECT is((pg_temp.hook(:'ev1', pg_temp.sig(:'ev1', 'whsec_unknown'))) ->> 'details', 'signature_mismatch',
    'a signature with an unknown secret does not verify');
SELECT is((pg_temp.hook(:'ev1', pg_temp.sig(:'ev1', 'whsec_new_secret', pg_temp.now_s() - 301))) ->> 'details',
    'timestamp_too_old', 'a signature older than payments.webhook_tolerance_seconds is stale');
SELECT is((pg_temp.hook(:'ev1', pg_temp.sig(:'ev1', 'whsec_new_secret', pg_temp.now_s() + 400))) ->> 'details',
    'timestamp_in_future', 'a future-dated signature is refused');
SELECT is((SELECT pg_temp.hook(:'ev1', 't=' || (n - 1) || ',v1=' || pg_temp.v1(:'ev1', 'whsec_new_secret', n)) ->> 'details'
             FROM pg_temp.now_s() n), 'signature_mismatch', 'a valid v1 under a rewritten t does not verify (t is signed)');
SELECT is((SELECT count(*) FROM payments.webhook_events), 0::bigint, 'nothing refused reached the event table');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'payment.webhook_rejected'), 8::bigint,
    'every refused request is audited');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'payment.webhook_rejected'
            AND (details::text LIKE '%evt_1paid%' OR details::text LIKE '%cs_test_one%' OR details ? 'body')), 0::bigint,
    'without the body');
SELECT is((SELECT array_agg(DISTINCT role) FROM pgcloud.audit_logs WHERE action = 'payment.webhook_rejected'),
    ARRAY['pgcloud_anon'], 'as the anonymous caller');

-- ---- a paid checkout.session.completed credits once ------------------------------------------------
SELECT pg_temp.hook(:'ev1', 't=' || n || ',v1=' || repeat('0', 64) || ',v0=' || repeat('a', 64)
                            || ',v1=' || pg_temp.v1(:'ev1', 'whsec_new_secret', n)) AS r
  FROM pg_temp.now_s() n \gset
SELECT is((:'r'::jsonb) - 'http' - 'event_id' - 'type', '{"received": true, "outcome": "payment_recorded"}'::jsonb,
    'accepted when one of several v1 values matches (v0 ignored)');
SELECT is((:'r'::jsonb) ->> 'http', '200', 'HTTP 200');
SELECT is((SELECT amount || ' ' || status || ' ' || payment_intent FROM payments.payments WHERE checkout_session_id = 'cs_test_one'),
    '2500 paid pi_' || md5('cs_test_one'), 'the payment is recorded with its PaymentIntent');
SELECT is((SELECT status FROM payments.payment_sessions WHERE id = :'s1'), 'complete', 'the session is complete');
SELECT pgcloud.relay_once();
SELECT is(pg_temp.balance(:u), 2500::bigint, 'payment.succeeded credits the ledger');
SELECT is((SELECT cause_id FROM billing.ledger_entries WHERE account_id = :u AND kind = 'credit'), 'cs_test_one',
    'the credit''s cause is the Checkout Session id');

-- Replayed: the same event again (Stripe retries), signed afresh, with the rotated-out secret.
SELECT is(pg_temp.hook(:'ev1', pg_temp.sig(:'ev1', 'whsec_old_secret')) - 'http',
    '{"received": true, "event_id": "evt_1paid", "duplicate": true}'::jsonb, 'a replayed event (older secret) is a duplicate');
-- Reordered / repeated under another event id for the same session.
SELECT pg_temp.event('evt_1async', 'checkout.session.async_payment_succeeded',
                     pg_temp.session_obj(:'s1', 'cs_test_one', 2500)) AS ev1b \gset
SELECT is(pg_temp.hook(:'ev1b', pg_temp.sig(:'ev1b')) ->> 'outcome', 'already_recorded',
    'another event for a paid session records nothing more');
SELECT pg_temp.event('evt_1expired', 'checkout.session.expired', pg_temp.session_obj(:'s1', 'cs_test_one', 2500, false)) AS ev1c \gset
SELECT is(pg_temp.hook(:'ev1c', pg_temp.sig(:'ev1c')) ->> 'outcome', 'ignored', 'a late "expired" does not undo a payment');
SELECT pgcloud.relay_once();
SELECT is(pg_temp.balance(:u), 2500::bigint, 'still one credit');
SELECT is((SELECT count(*) FROM pgcloud.outbox WHERE event_type = 'payment.succeeded' AND payload ->> 'checkout_session_id' = 'cs_test_one'),
    1::bigint, 'one payment.succeeded');

-- The webhook overtakes the executor's callback (session still "creating").
SELECT pg_temp.event('evt_2unpaid', 'checkout.session.completed', pg_temp.session_obj(:'s2', 'cs_test_two', 5000, false)) AS ev2u \gset
SELECT is(pg_temp.hook(:'ev2u', pg_temp.sig(:'ev2u', 'whsec_new_secret', pg_temp.now_s() - 299)) ->> 'outcome', 'awaiting_payment',
    'completed but unpaid (asynchronous method): no payment yet (signed 299 s ago: within tolerance)');
SELECT pg_temp.event('evt_2paid', 'checkout.session.async_payment_succeeded', pg_temp.session_obj(:'s2', 'cs_test_two', 5000)) AS ev2 \gset
SELECT is(pg_temp.hook(:'ev2', pg_temp.sig(:'ev2')) ->> 'outcome', 'payment_recorded', 'paid later: recorded');
SELECT payments.on_http_result(s.intent_id, 200, '{}',
    '{"id": "cs_test_two", "url": "https://checkout.stripe.com/c/pay/cs_test_two", "payment_status": "unpaid"}',
    jsonb_build_object('kind', 'checkout', 'session_id', s.id), true)
  FROM payments.payment_sessions s WHERE s.id = :'s2';
SELECT is((SELECT status FROM payments.payment_sessions WHERE id = :'s2'), 'complete',
    'the late callback does not reopen a completed session');
SELECT pg_temp.event('evt_2again', 'checkout.session.completed', pg_temp.session_obj(:'s2', 'cs_test_two', 5000)) AS ev2b \gset
SELECT pg_temp.hook(:'ev2b', pg_temp.sig(:'ev2b'));
SELECT pgcloud.relay_once();
SELECT is(pg_temp.balance(:u), 7500::bigint, 'two sessions, two credits, whatever the order and count of events');
SELECT is((SELECT count(*) FROM billing.ledger_entries WHERE account_id = :u AND kind = 'credit'), 2::bigint, 'two credit entries');

-- ---- odd events -------------------------------------------------------------------------------------------
SELECT pg_temp.event('evt_unknown', 'customer.subscription.trial_will_end', '{"id": "sub_1"}') AS evu \gset
SELECT is(pg_temp.hook(:'evu', pg_temp.sig(:'evu')) - 'event_id',
    '{"received": true, "type": "customer.subscription.trial_will_end", "outcome": "ignored", "http": "200"}'::jsonb,
    'an unknown event type is accepted and ignored');
SELECT pg_temp.event('evt_stranger', 'checkout.session.completed',
                     pg_temp.session_obj(gen_random_uuid(), 'cs_test_stranger', 1000)) AS evs \gset
SELECT is(pg_temp.hook(:'evs', pg_temp.sig(:'evs')) ->> 'outcome', 'ignored_unknown_session',
    'a session that is not ours is ignored');
SELECT is((pg_temp.hook('{not json', pg_temp.sig('{not json'))) ->> 'code', 'webhook_payload_invalid',
    'a signed body that is not JSON is refused (after the signature)');
SELECT is((pg_temp.hook('{"id": "nope"}', pg_temp.sig('{"id": "nope"}'))) ->> 'details', 'not_a_stripe_event',
    'a signed body that is not an event is refused');
SELECT is((pg_temp.hook(repeat('x', 262145), 't=1,v1=' || repeat('0', 64))) ->> 'http', '413',
    'a body over payments.webhook_max_bytes is refused before any HMAC');
SET LOCAL pgcloud.stripe_webhook_secrets = '';
SELECT is(pg_temp.hook(:'ev1', pg_temp.sig(:'ev1')) ->> 'code' || ' ' || (pg_temp.hook(:'ev1', pg_temp.sig(:'ev1')) ->> 'http'),
    'webhook_not_configured 500', 'no secret configured: 500, nothing accepted');
SET LOCAL pgcloud.stripe_webhook_secrets = 'whsec_new_secret';
SELECT is(pg_temp.hook(:'ev1', pg_temp.sig(:'ev1', 'whsec_old_secret')) ->> 'details', 'signature_mismatch',
    'a secret removed from the list no longer verifies');

-- ---- verify_signature itself ----------------------------------------------------------------------------------
SELECT is((SELECT verdict || ' ' || secret_index FROM payments.verify_signature('b', pg_temp.sig('b'), 300)), 'ok 1',
    'verify_signature() reports which secret matched');
SELECT is((SELECT verdict FROM payments.verify_signature('b', 't=1,t=2,v1=' || pg_temp.v1('b', 'whsec_new_secret', 1), 300)),
    'malformed_header', 'two timestamps are malformed');
SELECT is((SELECT verdict FROM payments.verify_signature('b', 't=-5,v1=00', 300)), 'malformed_header', 'a negative t is malformed');
SELECT is((SELECT verdict FROM payments.verify_signature('b', 't=1,' || repeat('v1=' || repeat('0', 64) || ',', 17), 300)),
    'malformed_header', 'more than 16 v1 values are refused');
SELECT is((SELECT verdict FROM pg_temp.now_s() n, payments.verify_signature('b', ' t=' || n || ' , v1=' || pg_temp.v1('b', 'whsec_new_secret', n) || ' ,', 300)),
    'ok', 'blanks around items and a trailing comma are tolerated');
SELECT is((SELECT verdict FROM pg_temp.now_s() n, payments.verify_signature('b', 't=' || n || ',v1=' || upper(pg_temp.v1('b', 'whsec_new_secret', n)), 300)),
    'ok', 'hex digits in either case');
SELECT is(payments.form_encode(ARRAY['a[b]', 'c', 'd'], ARRAY['x y&z=é', NULL, '~*-._']), 'a%5Bb%5D=x+y%26z%3D%C3%A9&d=~*-._',
    'form_encode() percent-encodes names and values, skips NULL values');

-- ---- the PostgREST call form: Content-Type application/json ------------------------------------------
-- Stripe posts JSON; PostgREST then calls the function with a single unnamed
-- json parameter as api.stripe_webhook($1::json), the raw body as $1.
CREATE FUNCTION pg_temp.hook_json(body text, header text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    PERFORM set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
    PERFORM set_config('request.headers', jsonb_build_object('content-type', 'application/json',
                                                             'stripe-signature', header)::text, true);
    PERFORM set_config('response.status', '', true);
    SET LOCAL ROLE pgcloud_anon;
    EXECUTE 'SELECT api.stripe_webhook($1::json)' INTO r USING body;
    RESET ROLE;
    PERFORM set_config('request.jwt.claims', '', true);
    PERFORM set_config('request.headers', '', true);
    RETURN r || jsonb_build_object('http', coalesce(nullif(current_setting('response.status', true), ''), '200'));
END $$;
SELECT pg_temp.as_user(:u);
SET LOCAL ROLE pgcloud_user;
SELECT api.create_checkout(1500) ->> 'id' AS sj \gset
RESET ROLE;
SELECT set_config('request.jwt.claims', '', true);
SELECT pg_temp.balance(:u) AS bal_before_json \gset
-- jsonb_pretty's layout (newlines, two-space indents): a body that a jsonb
-- round trip would rewrite, so the signature verifies only over the raw bytes.
SELECT pg_temp.event('evt_json_paid', 'checkout.session.completed', pg_temp.session_obj(:'sj', 'cs_test_json', 1500)) AS evj \gset
SELECT is(pg_temp.hook_json(:'evj', pg_temp.sig(:'evj')) ->> 'outcome', 'payment_recorded',
    'application/json through the PostgREST call form: verified over the raw body and applied');
SELECT pgcloud.relay_once();
SELECT is(pg_temp.balance(:u), :bal_before_json + 1500::bigint, 'credited once');
SELECT is(pg_temp.hook_json(:'evj', pg_temp.sig(:'evj')) ->> 'duplicate', 'true', 'the same event again is a duplicate');
SELECT pgcloud.relay_once();
SELECT is(pg_temp.balance(:u), :bal_before_json + 1500::bigint, 'and credits nothing more');
SELECT is(pg_temp.hook_json(replace(:'evj', '1500', '150000'), pg_temp.sig(:'evj')) ->> 'details', 'signature_mismatch',
    'a tampered JSON body is refused');
SELECT is(pg_temp.hook_json(:'evj', pg_temp.sig(:'evj', 'whsec_new_secret', pg_temp.now_s() - 1000)) ->> 'details',
    'timestamp_too_old', 'a stale JSON delivery is refused');
SELECT ok(has_function_privilege('pgcloud_anon', 'api.stripe_webhook(json)', 'EXECUTE'),
    'anon may call the json form');

-- ---- grants --------------------------------------------------------------------------------------------
SELECT ok(has_function_privilege('pgcloud_anon', 'api.stripe_webhook(text)', 'EXECUTE'), 'anon may call api.stripe_webhook');
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.create_checkout(bigint, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'api.get_checkout(uuid)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'api.admin_refund(uuid, bigint, text)', 'EXECUTE'),
    'anon may call nothing else of payments');
SELECT ok(NOT has_function_privilege('pgcloud_user', 'api.admin_refund(uuid, bigint, text)', 'EXECUTE'),
    'users may not refund');
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'payments.verify_signature(text, text, integer)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'payments.stripe_webhook_apply(text)', 'EXECUTE'),
    'internals are the service''s alone');

SELECT * FROM finish();
ROLLBACK;
