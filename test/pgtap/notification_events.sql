-- notification: the events contract, the read model, e-mail queued with its
-- smtp intent per the user's preferences, operator alerts, the outcome
-- callback, and the preferences API (grants, idempotency, audit).
BEGIN;
SELECT * FROM no_plan();

CREATE FUNCTION pg_temp.mails(uid uuid) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(event_type ORDER BY created_at, event_type), '{}') FROM notification.emails WHERE user_id = uid $$;

-- ---- shape and grants ---------------------------------------------------------------
SELECT function_returns('notification', 'on_user_created', ARRAY['pgcloud.event_envelope'], 'void',
    'notification.on_user_created follows the events contract');
SELECT is((SELECT bool_and(p.prosecdef AND r.rolname = 'pgcloud_svc_notification')
             FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
            WHERE p.pronamespace = 'notification'::regnamespace AND p.proname LIKE 'on\_%'
              AND p.pronargs = 1 AND p.proargtypes[0] = 'pgcloud.event_envelope'::regtype), true,
    'its on_<event> handlers are SECURITY DEFINER as the service');
SELECT is((SELECT p.prosecdef AND r.rolname = 'pgcloud_svc_notification'
             FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
            WHERE p.oid = 'notification.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure), true,
    'the e-mail callback too (the HTTP executor runs it as the service)');
SELECT ok(has_function_privilege('pgcloud_user', 'api.notification_preferences()', 'EXECUTE')
      AND has_function_privilege('pgcloud_user', 'api.set_notification_preferences(boolean, text[])', 'EXECUTE')
      AND has_function_privilege('pgcloud_admin', 'api.set_notification_preferences(boolean, text[])', 'EXECUTE'),
    'users (and admins) may read and set their preferences');
SELECT ok(NOT has_function_privilege('pgcloud_anon', 'api.notification_preferences()', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon', 'api.set_notification_preferences(boolean, text[])', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_service', 'api.set_notification_preferences(boolean, text[])', 'EXECUTE'),
    'anonymous callers and machine clients may not');
SELECT ok(NOT has_function_privilege('pgcloud_user', 'notification.on_user_created(pgcloud.event_envelope)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_user', 'notification.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)', 'EXECUTE')
      AND NOT has_schema_privilege('pgcloud_user', 'notification', 'USAGE'),
    'nobody else reaches the handler, the callback or the schema');

-- ---- the read model and the welcome e-mail -------------------------------------------
SELECT pg_temp.handle('notification', 'user.created', 'x', '{"user_id": "11111111-1111-4111-8111-111111111111", "email": "alice@example.com",
                                    "posix_username": "alice", "uid": 2001, "gid": 2001}') AS alice_created \gset
SELECT is((SELECT email FROM notification.recipients WHERE user_id = '11111111-1111-4111-8111-111111111111'),
    'alice@example.com', 'user.created feeds the recipients read model');
SELECT is(pg_temp.mails('11111111-1111-4111-8111-111111111111'), ARRAY['user.created'], 'and queues a welcome e-mail');
SELECT is((SELECT row(h.target, h.method, h.path, h.requested_by::text, h.callback::text, h.headers, e.state,
                      h.context = jsonb_build_object('email_id', e.id))::text
             FROM notification.emails e JOIN pgcloud.http_intents h ON h.id = e.intent_id
            WHERE e.event_id = :'alice_created'),
          row('smtp', 'SEND', 'alice@example.com', 'pgcloud_svc_notification',
              'notification.on_http_result(uuid,integer,jsonb,text,jsonb,boolean)',
              '{"mail_from": "noreply@pgcloud.invalid"}'::jsonb, 'queued', true)::text,
    'the e-mail is an smtp intent of the notification service, with its callback, in the same transaction');
SELECT matches((SELECT h.body FROM notification.emails e JOIN pgcloud.http_intents h ON h.id = e.intent_id
                 WHERE e.event_id = :'alice_created'),
    E'^From: pgcloud <noreply@pgcloud\\.invalid>\r\nTo: alice@example\\.com\r\nSubject: Welcome to pgcloud\r\nDate: [A-Z][a-z]{2}, \\d\\d [A-Z][a-z]{2} \\d{4} \\d\\d:\\d\\d:\\d\\d \\+0000\r\nMessage-ID: <[0-9a-f-]{36}@pgcloud\\.invalid>\r\n',
    'the message carries From, To, Subject, Date and Message-ID');
SELECT pg_temp.handle('notification', 'user.created', 'x', '{"user_id": "22222222-2222-4222-8222-222222222222", "email": "bob@example.com\r\nBcc: eve@example.com"}');
SELECT ok((SELECT email IS NULL FROM notification.recipients WHERE user_id = '22222222-2222-4222-8222-222222222222'),
    'an unusable address is not kept');
SELECT is(pg_temp.mails('22222222-2222-4222-8222-222222222222'), '{}'::text[], 'and nothing is sent to it');

-- ---- user events -----------------------------------------------------------------------
SELECT pg_temp.handle('notification', 'allocation.activated', 'x', '{"allocation_id": "a-1", "user_id": "11111111-1111-4111-8111-111111111111",
                  "sku": "h100x8", "hostname": "gpu-node-3"}', '33333333-3333-4333-8333-333333333333');
SELECT matches((SELECT h.body FROM notification.emails e JOIN pgcloud.http_intents h ON h.id = e.intent_id
                 WHERE e.event_id = '33333333-3333-4333-8333-333333333333'),
    E'Subject: Your allocation is active\r\n.*\r\n\r\nAllocation a-1 \\(h100x8\\) is active on gpu-node-3\\.\r\n',
    'allocation.activated: subject and message from the template');
SELECT pg_temp.handle('notification', 'allocation.activated', 'x', '{"allocation_id": "a-1", "user_id": "11111111-1111-4111-8111-111111111111"}',
                  '33333333-3333-4333-8333-333333333333');
SELECT is((SELECT count(*)::int FROM notification.emails WHERE event_id = '33333333-3333-4333-8333-333333333333'), 1,
    'the same event twice queues one e-mail');
SELECT pg_temp.handle('notification', 'billing.low_balance', 'x', '{"account_id": "11111111-1111-4111-8111-111111111111", "balance": 120,
                  "threshold": 500, "currency": "usd"}') AS low \gset
SELECT is((SELECT subject FROM notification.emails WHERE event_id = :'low'), 'Your balance is low',
    'an account_id identifies the user too');
SELECT lives_ok($$SELECT pg_temp.handle('notification', 'made.up', 'x', '{"user_id": "11111111-1111-4111-8111-111111111111"}')$$,
    'an event type notification does not know is ignored');
SELECT lives_ok($$SELECT pg_temp.handle('notification', 'payment.succeeded', 'x', '{"amount": 500}')$$, 'an event about nobody is ignored');
-- A payload that is no object is checked once, by the core, before any
-- handler: a poison event (retried, then dead-lettered), with no effect here.
SELECT throws_like($$SELECT pg_temp.handle('notification', 'payment.succeeded', 'x', '"not an object"')$$, '%the payload must be a JSON object%',
    'a payload that is no object is refused before the handler (nothing is sent)');
SELECT is(pg_temp.mails('11111111-1111-4111-8111-111111111111'),
    ARRAY['allocation.activated', 'billing.low_balance', 'user.created'], 'only the known user events made e-mails');
SELECT pg_temp.handle('notification', 'payment.succeeded', 'x', '{"user_id": "44444444-4444-4444-8444-444444444444", "amount": 500}');
SELECT is(pg_temp.mails('44444444-4444-4444-8444-444444444444'), '{}'::text[],
    'no e-mail for a user whose address is unknown (the channel notification is still sent)');

-- ---- preferences -----------------------------------------------------------------------
SELECT is(pg_temp.call_as_user('11111111-1111-4111-8111-111111111111', 'SELECT api.notification_preferences()')
            - 'available_events',
    '{"email_enabled": true, "events": null, "channel": "pgcloud_user_11111111111141118111111111111111"}'::jsonb,
    'defaults: every e-mail, and the channel to LISTEN on');
SELECT is(pg_temp.call_as_user('11111111-1111-4111-8111-111111111111',
            $$SELECT api.set_notification_preferences(true, ARRAY['payment.succeeded'])$$) -> 'events',
    '["payment.succeeded"]'::jsonb, 'a user picks the events that also send an e-mail');
SELECT pg_temp.handle('notification', 'allocation.released', 'x', '{"allocation_id": "a-1", "user_id": "11111111-1111-4111-8111-111111111111"}');
SELECT pg_temp.handle('notification', 'payment.succeeded', 'x', '{"payment_id": "p-1", "user_id": "11111111-1111-4111-8111-111111111111",
                                        "amount": 2500, "currency": "usd"}') AS paid \gset
SELECT is(pg_temp.mails('11111111-1111-4111-8111-111111111111'),
    ARRAY['allocation.activated', 'billing.low_balance', 'payment.succeeded', 'user.created'],
    'allocation.released sent no e-mail, payment.succeeded did');
SELECT is(pg_temp.call_as_user('11111111-1111-4111-8111-111111111111',
            $$SELECT api.set_notification_preferences(false, NULL)$$) ->> 'email_enabled', 'false',
    'a user turns e-mail off');
SELECT pg_temp.handle('notification', 'payment.refunded', 'x', '{"user_id": "11111111-1111-4111-8111-111111111111", "amount": 100}');
SELECT ok(NOT ('payment.refunded' = ANY (pg_temp.mails('11111111-1111-4111-8111-111111111111'))), 'and gets none');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs
            WHERE action = 'notification.preferences_set' AND target_id = '11111111-1111-4111-8111-111111111111'
              AND actor = '11111111-1111-4111-8111-111111111111' AND role = 'pgcloud_user'), 2,
    'each change is audited with the user as actor');
SET LOCAL request.headers = '{"x-idempotency-key": "prefs-1"}';
SELECT is(pg_temp.call_as_user('11111111-1111-4111-8111-111111111111',
            $$SELECT api.set_notification_preferences(true, NULL)$$) ->> 'email_enabled', 'true',
    'with an idempotency key');
SELECT is(pg_temp.call_as_user('11111111-1111-4111-8111-111111111111',
            $$SELECT api.set_notification_preferences(true, NULL)$$) ->> 'email_enabled', 'true', 'replayed');
SELECT is((SELECT count(*)::int FROM pgcloud.audit_logs
            WHERE action = 'notification.preferences_set' AND target_id = '11111111-1111-4111-8111-111111111111'), 3,
    'the replay had no second effect');
SELECT throws_like($$SELECT pg_temp.call_as_user('11111111-1111-4111-8111-111111111111',
                     'SELECT api.set_notification_preferences(false, NULL)')$$,
    '%idempotency_key_reused%', 'the same key with other arguments is refused');
RESET request.headers;
SELECT is(pg_temp.call_as_user('22222222-2222-4222-8222-222222222222', 'SELECT api.notification_preferences()') -> 'events',
    'null'::jsonb, 'preferences are per user');

-- ---- operators -------------------------------------------------------------------------
SELECT pg_temp.handle('notification', 'platform.alert', 'x', '{"kind": "dead_letter", "subscriber": "billing", "error": "boom"}') AS alert1 \gset
SELECT is((SELECT count(*)::int FROM notification.emails WHERE event_id = :'alert1'), 0,
    'no operator address: alerts only go to the pgcloud_operators channel');
SELECT pgcloud.set_policy('notification.operator_email', '"ops@example.com"');
SELECT pg_temp.handle('notification', 'platform.alert', 'x', '{"kind": "http_dead", "target": "stripe", "error": "HTTP 503"}') AS alert2 \gset
SELECT is((SELECT row(recipient, subject, user_id)::text FROM notification.emails WHERE event_id = :'alert2'),
          row('ops@example.com', 'pgcloud alert: http_dead', NULL::uuid)::text,
    'with notification.operator_email set, alerts are mailed to it');
SELECT matches((SELECT h.body FROM notification.emails e JOIN pgcloud.http_intents h ON h.id = e.intent_id
                 WHERE e.event_id = :'alert2'), E'"target": "stripe"', 'with the alert''s details');

-- ---- the outcome callback ---------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('smtp', 100)), 5, 'the executor claims the queued e-mails');
SELECT is(pgcloud.http_record(e.intent_id, 1, 451, NULL, NULL, false, 'RCPT failed: 451'), 'failed',
    'a 451 from the relay')
  FROM notification.emails e WHERE e.event_id = :'paid';
SELECT is((SELECT row(state, attempts, last_status)::text FROM notification.emails WHERE event_id = :'paid'),
          row('retrying', 1, 451)::text, 'the e-mail is retrying');
UPDATE pgcloud.http_intents SET next_attempt_at = now() - interval '1 second'
 WHERE id = (SELECT intent_id FROM notification.emails WHERE event_id = :'paid');
SELECT is(pgcloud.http_record(c.id, c.attempt, 250, NULL, NULL, false, NULL), 'succeeded', 'accepted on the next try')
  FROM pgcloud.http_claim('smtp', 100) c;
SELECT is((SELECT row(state, attempts, last_status, sent_at IS NOT NULL)::text FROM notification.emails WHERE event_id = :'paid'),
          row('sent', 2, 250, true)::text, 'the e-mail is sent');
SELECT is((SELECT payload ->> 'event_type' FROM pgcloud.outbox WHERE event_type = 'notification.sent'),
    'payment.succeeded', 'notification.sent is emitted');
SELECT is(pgcloud.http_record(e.intent_id, 1, 554, NULL, NULL, false, 'DATA failed: 554'), 'dead', 'a 554 from the relay')
  FROM notification.emails e WHERE e.event_id = :'low';
SELECT is((SELECT row(state, last_status)::text FROM notification.emails WHERE event_id = :'low'),
          row('dead', 554)::text, 'the e-mail is dead');
SELECT is((SELECT payload ->> 'status' FROM pgcloud.outbox WHERE event_type = 'notification.dead_lettered'), '554',
    'notification.dead_lettered is emitted');
SELECT is((SELECT row(queued, retrying, sent, dead)::text FROM notification.email_outbox_status),
          row(3, 0, 1, 1)::text, 'notification.email_outbox_status counts them');

-- ---- through the relay ---------------------------------------------------------------------
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;
SELECT pgcloud.emit('user.created', 'user', '55555555-5555-4555-8555-555555555555',
                    '{"user_id": "55555555-5555-4555-8555-555555555555", "email": "carol@example.com",
                      "posix_username": "carol", "uid": 20003, "gid": 20003}') AS carol \gset
SELECT ok(pgcloud.relay_once() >= 1, 'the relay delivers user.created');
SELECT is((SELECT count(*)::int FROM pgcloud.inbox WHERE subscriber = 'notification' AND event_id = :'carol'), 1,
    'to notification, with its inbox row');

SELECT * FROM finish();
ROLLBACK;
