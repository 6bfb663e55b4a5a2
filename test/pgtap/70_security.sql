-- Security tier (issue 10): each boundary attacked the way an attacker would;
-- every attack must fail. Runs in one transaction, rolled back.
BEGIN;
SELECT no_plan();
\ir helpers.psql

-- Runs a statement as another role; returns ok or the SQLSTATE and message.
CREATE FUNCTION pg_temp.as_role(role_name name, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', role_name);
    BEGIN
        EXECUTE stmt;
        RESET ROLE;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        RESET ROLE;
        RETURN SQLSTATE || ' ' || SQLERRM;
    END;
END $$;

-- ---- 1. event authority ----------------------------------------------------
-- A compromised notification service tries to mint money.
SELECT alike(pg_temp.as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('payment.succeeded', 'payment', 'forged-1', '{"amount": 5000000, "currency": "usd"}')$$),
    '%event type payment.succeeded is published by service payments, not by notification%',
    'a service cannot emit another service''s event type (payment.succeeded as notification)');
SELECT alike(pg_temp.as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('operator.anything', 'thing', 'x', '{}')$$),
    '%is not among the types service notification publishes%',
    'a service cannot emit a type outside its registry entry either');
SELECT alike(pg_temp.as_role('pgcloud_svc_notification',
    $$INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
      VALUES (gen_random_uuid(), 'payment.succeeded', 'payment', 'forged-2', '{"amount": 5000000}', '{}', 'payments')$$),
    '42501 %', 'no service role can insert into pgcloud.outbox directly');
SELECT ok(NOT has_table_privilege('pgcloud_svc_payments', 'pgcloud.outbox', 'INSERT')
          AND NOT has_table_privilege('pgcloud_services', 'pgcloud.outbox', 'INSERT'),
    'not even the owning service of a type has INSERT on the outbox');
SELECT is(pg_temp.as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('notification.sent', 'notification', 'n-1', '{}')$$), 'ok',
    'a service still emits its own types');
SELECT is((SELECT source FROM pgcloud.outbox WHERE aggregate_id = 'n-1'), 'notification',
    'the outbox row names the emitting service');

-- A row that reached the outbox anyway (written by a superuser, say) claiming
-- to come from notification: billing must not apply it.
DELETE FROM pgcloud.outbox WHERE published_at IS NULL;
INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
VALUES ('f0000000-0000-4000-8000-000000000001', 'payment.succeeded', 'payment', 'forged-3',
        '{"amount": 5000000, "currency": "usd", "user_id": "f0000000-0000-4000-8000-0000000000aa"}', '{}', 'notification');
SELECT pgcloud.relay_once();
SELECT ok(NOT EXISTS (SELECT 1 FROM pgcloud.inbox WHERE event_id = 'f0000000-0000-4000-8000-000000000001'),
    'embedded delivery: no subscriber applied an event from a source that does not publish its type');
SELECT is((SELECT count(*)::int FROM pgcloud.dead_letters WHERE event_id = 'f0000000-0000-4000-8000-000000000001'
             AND subscriber = 'billing' AND error LIKE 'refused: event type payment.succeeded is published by payments%'), 1,
    'the forged event is dead-lettered for billing, with the reason');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'platform.alert'
                    AND payload ->> 'event_id' = 'f0000000-0000-4000-8000-000000000001'),
    'and operators get a platform.alert');
SELECT ok(pgcloud.event_authentic('payment.succeeded', 'payments')
          AND NOT pgcloud.event_authentic('payment.succeeded', 'notification')
          AND NOT pgcloud.event_authentic('operator.thing', 'notification')
          AND pgcloud.event_authentic('operator.thing', 'some_operator_role')
          AND NOT pgcloud.event_authentic('payment.succeeded', ''),
    'pgcloud.event_authentic: the registered publisher only');

-- NATS: a message whose subject or source does not match its publisher.
SELECT is(pg_temp.error_of($$SELECT pgcloud.consume_event('billing',
    '{"event_id": "f0000000-0000-4000-8000-000000000002", "event_type": "payment.succeeded", "source": "payments",
      "aggregate_type": "payment", "aggregate_id": "x", "payload": {"amount": 5000000}}',
    'pgcloud.notification.sent')$$) ->> 'code', 'event_not_permitted',
    'NATS: an envelope claiming payment.succeeded on another service''s subject is refused');
SELECT is(pg_temp.error_of($$SELECT pgcloud.consume_event('billing',
    '{"event_id": "f0000000-0000-4000-8000-000000000003", "event_type": "payment.succeeded", "source": "notification",
      "aggregate_type": "payment", "aggregate_id": "x", "payload": {"amount": 5000000}}',
    'pgcloud.payment.succeeded')$$) ->> 'code', 'event_not_permitted',
    'NATS: an envelope whose source is not the type''s publisher is refused');
SELECT is(pg_temp.error_of($$SELECT pgcloud.consume_event('billing',
    '{"event_id": "------------------------------------", "event_type": "payment.succeeded", "source": "payments"}',
    'pgcloud.payment.succeeded')$$) ->> 'code', 'invalid_event',
    'NATS: an event id that is not a uuid is a catalogued error, not a crash');
SELECT lives_ok($$SELECT pgcloud.consume_failed('billing', '------------------------------------',
    '{"event_id": "------------------------------------", "event_type": "payment.succeeded"}', 'bad', 99)$$,
    'NATS: such a poison message can still be dead-lettered');

-- ---- 2. outbound authority -------------------------------------------------
SELECT alike(pg_temp.as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.http_request('stripe', 'POST', '/v1/refunds', 'charge=ch_1&amount=5000000')$$),
    '%role pgcloud_svc_notification may not call target stripe%',
    'notification cannot spend the Stripe key (POST /v1/refunds)');
SELECT alike(pg_temp.as_role('pgcloud_svc_billing',
    $$SELECT pgcloud.http_request('maas', 'POST', '/MAAS/api/2.0/machines/abc/op-release')$$),
    '%may not call target maas%', 'billing cannot release MAAS machines');
SELECT alike(pg_temp.as_role('pgcloud_svc_payments',
    $$SELECT pgcloud.http_request('smtp', 'SEND', 'victim@example.com', 'phish', NULL, '{"mail_from": "ceo@example.com"}')$$),
    '%may not call target smtp%', 'payments cannot send mail');
SELECT is(pg_temp.as_role('pgcloud_svc_payments',
    $$SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions', 'mode=payment')$$), 'ok',
    'payments still calls Stripe');
SELECT is((SELECT http_targets FROM pgcloud.services WHERE name = 'notification'), ARRAY['smtp'],
    'the registry grants notification smtp only');
SELECT * FROM finish();
ROLLBACK;
