-- pgcloud.http_request(): what an outbound intent may hold (every refusal
-- first), what is stored, and what the caller cannot choose.
\set SHOW_CONTEXT never
CREATE SCHEMA regress_http;
CREATE TABLE regress_http.seen (intent_id uuid, status integer, final boolean);
CREATE FUNCTION regress_http.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                context jsonb, final boolean) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS $$ INSERT INTO regress_http.seen VALUES (intent_id, status, final) $$;
CREATE FUNCTION regress_http.invoker_cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                        context jsonb, final boolean) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION regress_http.wrong_args(intent_id uuid) RETURNS void LANGUAGE sql SECURITY DEFINER AS $$ SELECT $$;
CREATE FUNCTION regress_http.wrong_result(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                          context jsonb, final boolean) RETURNS integer
LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;

-- Targets and methods.
SELECT pgcloud.http_request('paypal', 'GET', '/v1/x');
SELECT pgcloud.http_request(NULL, 'GET', '/v1/x');
SELECT pgcloud.http_request('stripe', 'get', '/v1/x');
SELECT pgcloud.http_request('stripe', 'TRACE', '/v1/x');
SELECT pgcloud.http_request('stripe', NULL, '/v1/x');
-- Paths: appended to the target's base URL, so no scheme, host, space or line break.
SELECT pgcloud.http_request('stripe', 'GET', 'v1/x');
SELECT pgcloud.http_request('stripe', 'GET', 'https://evil.example/v1/x');
SELECT pgcloud.http_request('stripe', 'GET', '/v1/a b');
SELECT pgcloud.http_request('stripe', 'GET', E'/v1/x\r\nHost: evil.example');
SELECT pgcloud.http_request('stripe', 'GET', '/' || repeat('a', 2048));
SELECT pgcloud.http_request('stripe', 'GET', NULL);
-- Headers: never credentials (the executor adds them), never framing.
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => '{"Authorization": "Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc"}');
SELECT pgcloud.http_request('maas', 'GET', '/api/2.0/machines/', headers => '{"authorization": "OAuth x"}');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', headers => '{"Idempotency-Key": "k1"}');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', headers => '{"Content-Length": "10"}');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', headers => '{"Host": "evil.example"}');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', headers => '{"Cookie": "a=b"}');
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => '{"bad name": "x"}');
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => '{"X-Number": 1}');
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => jsonb_build_object('X-Split', E'a\r\nX-Injected: b'));
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => jsonb_build_object('X-Long', repeat('v', 1025)));
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x', headers => '["X-A", "b"]');
SELECT pgcloud.http_request('stripe', 'GET', '/v1/x',
    headers => (SELECT jsonb_object_agg('X-H' || i, 'v') FROM generate_series(1, 33) i));
-- Content type, idempotency key, body, context.
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', 'a=1', E'text/plain\r\nX-Injected: y');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', 'a=1', '');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', idempotency_key => '');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', idempotency_key => 'has space');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', idempotency_key => repeat('k', 256));
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', repeat('b', 4194305));
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', context => '[1, 2]');
SELECT pgcloud.http_request('stripe', 'POST', '/v1/x', context => jsonb_build_object('big', repeat('c', 65536)));
-- SMTP: method SEND, the path is the recipient, headers only the envelope sender.
SELECT pgcloud.http_request('smtp', 'POST', 'alice@example.com', 'msg', headers => '{"mail_from": "noreply@pgcloud.invalid"}');
SELECT pgcloud.http_request('smtp', 'SEND', 'not an address', 'msg', headers => '{"mail_from": "noreply@pgcloud.invalid"}');
SELECT pgcloud.http_request('smtp', 'SEND', E'alice@example.com\r\nRCPT TO:<x@y>', 'msg', headers => '{"mail_from": "noreply@pgcloud.invalid"}');
SELECT pgcloud.http_request('smtp', 'SEND', 'alice@example.com', NULL, headers => '{"mail_from": "noreply@pgcloud.invalid"}');
SELECT pgcloud.http_request('smtp', 'SEND', 'alice@example.com', 'msg');
SELECT pgcloud.http_request('smtp', 'SEND', 'alice@example.com', 'msg', headers => '{"mail_from": "not an address"}');
SELECT pgcloud.http_request('smtp', 'SEND', 'alice@example.com', 'msg', headers => '{"mail_from": "a@b.example", "X-Extra": "y"}');
-- Callbacks: the result callback signature, SECURITY DEFINER (it runs as its service).
SELECT pgcloud.http_request('test', 'GET', '/', callback => 'regress_http.wrong_args(uuid)');
SELECT pgcloud.http_request('test', 'GET', '/',
    callback => 'regress_http.wrong_result(uuid, integer, jsonb, text, jsonb, boolean)');
SELECT pgcloud.http_request('test', 'GET', '/',
    callback => 'regress_http.invoker_cb(uuid, integer, jsonb, text, jsonb, boolean)');
SELECT count(*) AS nothing_written FROM pgcloud.http_intents;

-- Valid intents, and what is stored.
BEGIN;
SET LOCAL request.headers = '{"x-correlation-id": "regress-http-1"}';
SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions', 'mode=payment&client_reference_id=r1',
    'application/x-www-form-urlencoded', '{"Stripe-Version": "2024-06-20"}', 'checkout-r1',
    'regress_http.cb(uuid, integer, jsonb, text, jsonb, boolean)', '{"payment_id": "r1"}') IS NOT NULL AS stripe_intent;
SELECT pgcloud.http_request('maas', 'POST', '/api/2.0/machines/abc123/?op=deploy', 'distro_series=jammy',
    'application/x-www-form-urlencoded') IS NOT NULL AS maas_intent;
SELECT pgcloud.http_request('smtp', 'SEND', 'alice@example.com', E'Subject: hi\r\n\r\nhello\r\n',
    headers => '{"mail_from": "noreply@pgcloud.invalid"}') IS NOT NULL AS smtp_intent;
SELECT pgcloud.http_request('test', 'DELETE', '/things/1') IS NOT NULL AS test_intent;
SELECT target, method, path, body, content_type, headers, idempotency_key, callback, context,
       requested_by = current_user AS by_caller, correlation_id, state, attempts, next_attempt_at = now() AS due_now,
       response_status, last_error, callback_done_at
  FROM pgcloud.http_intents ORDER BY target;

-- The executor's fields are not the caller's to choose.
INSERT INTO pgcloud.http_intents (id, target, method, path, requested_by, correlation_id, state, attempts,
                                  next_attempt_at, response_status, callback_done_at)
VALUES (gen_random_uuid(), 'test', 'GET', '/forged', 'pgcloud_svc_billing', 'forged', 'succeeded', 7,
        now() + interval '1 day', 200, now())
RETURNING state, attempts, requested_by = current_user AS by_caller, correlation_id, next_attempt_at = now() AS due_now,
          response_status, callback_done_at;
-- Only the executor's state changes are allowed.
SAVEPOINT s;
UPDATE pgcloud.http_intents SET state = 'succeeded' WHERE path = '/forged';
ROLLBACK TO SAVEPOINT s;
UPDATE pgcloud.http_intents SET state = 'dead' WHERE path = '/forged';
ROLLBACK TO SAVEPOINT s;

-- Operators: every target is listed, with counts by state.
SELECT target, pending, in_flight, retrying, succeeded, dead, oldest_pending_at = now() AS oldest_is_now,
       callbacks_pending, callbacks_failed
  FROM pgcloud.http_intents_status;
ROLLBACK;
SET client_min_messages = warning;
DROP SCHEMA regress_http CASCADE;
