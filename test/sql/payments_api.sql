-- payments: every refusal of api.create_checkout(), api.get_checkout(),
-- api.admin_refund() and api.stripe_webhook() (the webhook answers with
-- response.status and an error body instead of raising, so its audit row
-- stays), the Stripe-Signature parser's verdicts, and the form encoder.
\set VERBOSITY default
\set SHOW_CONTEXT never
\set u '''c1c1c1c1-0000-4000-8000-000000000001'''
SELECT coalesce(max(id), 0) AS outbox_before FROM pgcloud.outbox \gset
CREATE EXTENSION pgcrypto;
SET pgcloud.stripe_webhook_secrets = 'whsec_regress';
CREATE FUNCTION pg_temp.sign(body text, t bigint) RETURNS text LANGUAGE sql AS $$
    SELECT 't=' || t || ',v1=' || encode(hmac(convert_to(t || '.' || body, 'UTF8'), 'whsec_regress'::bytea, 'sha256'), 'hex')
$$;
CREATE FUNCTION pg_temp.hook(body text, header text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r jsonb;
BEGIN
    PERFORM set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
    PERFORM set_config('request.headers', CASE WHEN header IS NULL THEN '{}' ELSE jsonb_build_object('stripe-signature', header)::text END, true);
    PERFORM set_config('response.status', '', true);
    r := api.stripe_webhook(body);
    RETURN coalesce(nullif(current_setting('response.status', true), ''), '200') || ' ' || (r - 'event_id')::text;
END $$;
\set now `date +%s`

-- ---- api.create_checkout --------------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.create_checkout(1000, 'usd');
SET request.jwt.claims = '{"role": "pgcloud_user"}';
SELECT api.create_checkout(1000, 'usd');
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "c1c1c1c1-0000-4000-8000-000000000001"}';
SELECT api.create_checkout(NULL, 'usd');
SELECT api.create_checkout(-1, 'usd');
SELECT api.create_checkout(499, 'usd');
SELECT api.create_checkout(1000001, 'usd');
SELECT api.create_checkout(1000, NULL);
SELECT api.create_checkout(1000, 'eur');
SELECT api.create_checkout(1000, 'us');
SELECT api.create_checkout(1000, ' USD ') - 'id';
SELECT api.create_checkout(1000) - 'id';
SELECT api.get_checkout('c1c1c1c1-0000-4000-8000-0000000000ff');
SELECT api.get_checkout(NULL);
RESET request.jwt.claims;
SELECT s.amount, s.currency, s.status, i.target, i.method, i.path, i.content_type, i.headers, i.idempotency_key = s.id::text AS key_is_session,
       i.callback, i.context ->> 'kind' AS kind
  FROM payments.payment_sessions s JOIN pgcloud.http_intents i ON i.id = s.intent_id WHERE s.user_id = :u ORDER BY s.created_at;
SELECT regexp_replace(i.body, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g') AS form
  FROM payments.payment_sessions s JOIN pgcloud.http_intents i ON i.id = s.intent_id WHERE s.user_id = :u LIMIT 1;

-- ---- api.admin_refund ---------------------------------------------------------------------------------------
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "c1c1c1c1-0000-4000-8000-000000000001"}';
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', 100, 'mine');
RESET request.jwt.claims;
SELECT api.admin_refund(NULL, 100, 'x');
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', NULL, 'x');
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', -3, 'x');
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', 100, NULL);
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', 100, repeat('x', 501));
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', 100, 'no such payment');
-- A payment Stripe reported without a PaymentIntent cannot be refunded.
INSERT INTO payments.payments (id, session_id, user_id, checkout_session_id, amount, currency, status, event_id)
SELECT 'c1c1c1c1-0000-4000-8000-0000000000ee', s.id, s.user_id, 'cs_regress_no_pi', s.amount, s.currency, 'paid', 'evt_regress'
  FROM payments.payment_sessions s WHERE s.user_id = :u LIMIT 1;
SELECT api.admin_refund('c1c1c1c1-0000-4000-8000-0000000000ee', 100, 'no intent');

-- ---- api.stripe_webhook: refusals (HTTP status, error body) ---------------------------------------------------
SELECT pg_temp.hook('{}', NULL);
SELECT pg_temp.hook('{}', '');
SELECT pg_temp.hook('{}', 'garbage');
SELECT pg_temp.hook('{}', 'v1=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=12x,v1=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=1234567890123,v1=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=1,t=1,v1=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=' || :now);
SELECT pg_temp.hook('{}', 't=' || :now || ',v1=abc');
SELECT pg_temp.hook('{}', 't=' || :now || ',v0=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=' || :now || ',v1=' || repeat('0', 64));
SELECT pg_temp.hook('{}', 't=' || :now || repeat(',x=1', 64));
SELECT pg_temp.hook('{}', 't=' || :now || ',v1=' || repeat('z', 8200));
SELECT pg_temp.hook('{}', pg_temp.sign('{}', :now - 100000));
SELECT pg_temp.hook('{}', pg_temp.sign('{}', :now + 100000));
SELECT pg_temp.hook('{"id": "evt_x"', pg_temp.sign('{"id": "evt_x"', :now));
SELECT pg_temp.hook('[]', pg_temp.sign('[]', :now));
SELECT pg_temp.hook('{"id": "evt_x", "type": "x"}', pg_temp.sign('{"id": "evt_x", "type": "x"}', :now));
SELECT pg_temp.hook('{"id": "evt_x", "type": "a.b", "data": {"object": 7}}', pg_temp.sign('{"id": "evt_x", "type": "a.b", "data": {"object": 7}}', :now));
SELECT pg_temp.hook('{"id": "nope", "type": "a.b", "data": {"object": {}}}', pg_temp.sign('{"id": "nope", "type": "a.b", "data": {"object": {}}}', :now));
SELECT pg_temp.hook(repeat(' ', 300000), pg_temp.sign('x', :now));
SET pgcloud.stripe_webhook_secrets = ' , ';
SELECT pg_temp.hook('{}', pg_temp.sign('{}', :now));
SET pgcloud.stripe_webhook_secrets = 'whsec_regress';
-- Accepted: an unknown type, then a known one about nobody we know.
SELECT pg_temp.hook('{"id": "evt_regress_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}',
                    pg_temp.sign('{"id": "evt_regress_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}', :now));
SELECT pg_temp.hook('{"id": "evt_regress_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}',
                    pg_temp.sign('{"id": "evt_regress_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}', :now));
SELECT pg_temp.hook('{"id": "evt_regress_2", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "payment_intent": "pi_none"}}}',
                    pg_temp.sign('{"id": "evt_regress_2", "type": "charge.refunded", "data": {"object": {"id": "ch_1", "payment_intent": "pi_none"}}}', :now));
SELECT action, result, details - 'signed_at' AS details FROM pgcloud.audit_logs
 WHERE action LIKE 'payment.webhook%' ORDER BY id;

-- ---- the form encoder ---------------------------------------------------------------------------------------------
SELECT payments.form_encode('{}', '{}');
SELECT payments.form_encode(ARRAY['a'], ARRAY['1', '2']);
SELECT payments.form_encode(ARRAY[NULL], ARRAY['1']);
SELECT payments.form_encode(ARRAY['a', 'b'], ARRAY[NULL, NULL]);
SELECT payments.form_encode(ARRAY['k'], ARRAY[E'line\nbreak+plus %25 /?#']);

DELETE FROM pgcloud.http_intents WHERE id IN (SELECT intent_id FROM payments.payment_sessions WHERE user_id = :u);
DELETE FROM pgcloud.outbox WHERE id > :outbox_before;
DROP EXTENSION pgcrypto;
