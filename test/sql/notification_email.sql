-- notification: the e-mail as composed (RFC 5322), the channel payload, the
-- templates, and the preferences API's refusals.
\set SHOW_CONTEXT never

-- compose_email(): refusals first. Nothing from a payload may add a header.
SELECT notification.compose_email(E'pgcloud <noreply@pgcloud.invalid>\r\nBcc: eve@example.com', 'alice@example.com',
                                  's', 'b', 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', E'alice@example.com\r\nBcc: eve@example.com',
                                  's', 'b', 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'Alice <alice@example.com>',
                                  's', 'b', 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'alice@example.com',
                                  's', 'b', 'm1@evil', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'alice@example.com',
                                  's', 'b', '', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud', 'alice@example.com', 's', 'b', 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'jörg@example.com',
                                  's', 'b', 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'alice@example.com',
                                  's', NULL, 'm1', '2026-01-02 03:04:05+00');
SELECT notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'alice@example.com',
                                  's', repeat('b', 1048577), 'm1', '2026-01-02 03:04:05+00');

-- ASCII: 7bit, CRLF line ends (a bare LF in the body becomes CRLF), a line break in the subject becomes a space.
SELECT replace(m, E'\r\n', E'\n') AS message, m !~ E'[^\r]\n' AS crlf_only
  FROM notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'alice@example.com',
                                  E'Your allocation\r\nBcc: eve@example.com', E'line one\nline two\n\n-- \nfooter',
                                  '0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d', '2026-01-02 03:04:05+00') AS m;
-- Not ASCII: RFC 2047 subject in encoded words of at most 75 characters, folded; base64 body of the CRLF text.
SELECT replace(m, E'\r\n', E'\n') AS message,
       (SELECT max(length(w[1])) FROM regexp_matches(m, '(=\?UTF-8\?B\?[^?]*\?=)', 'g') w) <= 75 AS short_words,
       convert_from(decode(replace(split_part(m, E'\r\n\r\n', 2), E'\r\n', ''), 'base64'), 'UTF8')
           = E'Grüße aus Zürich: 12,50 €\r\nZweite Zeile\r\n' AS body_round_trips
  FROM notification.compose_email('pgcloud <noreply@pgcloud.invalid>', 'joerg@example.com',
                                  'Zahlung über 12,50 € erhalten – vielen Dank für Ihr Vertrauen in pgcloud',
                                  E'Grüße aus Zürich: 12,50 €\nZweite Zeile', 'm-2', '2026-07-14 23:59:59+02') AS m;
-- An overlong line goes base64 too (SMTP lines are at most 998 characters).
SELECT split_part(split_part(m, 'Content-Transfer-Encoding: ', 2), E'\r\n', 1) AS encoding
  FROM notification.compose_email('ops@example.com', 'alice@example.com', 'long', repeat('x', 999), 'm3',
                                  '2026-01-02 03:04:05+00') AS m;

-- Templates: placeholders from the payload, derived values, missing ones empty, one pass only.
SELECT notification.render('Allocation {allocation_id} ({sku}) is active on {node}.',
                           notification.template_vars('{"allocation_id": "a-1", "sku": "h100x8", "hostname": "gpu-node-3"}'));
SELECT notification.render('Paid {amount_display}; missing: [{nope}]; literal {not a placeholder}',
                           notification.template_vars('{"amount": 123456, "currency": "eur"}'));
SELECT notification.render('{a} {b}', '{"a": "{b}", "b": "B"}');
SELECT notification.render('Low: {balance_display} < {threshold_display}',
                           notification.template_vars('{"balance": -250, "threshold": 500, "currency": "usd"}'));
SELECT notification.template_vars(jsonb_build_object('reason', E'line\nbreak\r\nand\ttab', 'n', 5, 'flag', true,
                                                     'nested', '{"x": 1}'::jsonb, 'list', '[1]'::jsonb)) - 'details' AS vars;
SELECT notification.money('1050', 'usd'), notification.money('7', NULL), notification.money('abc', 'usd'),
       notification.money('-1', 'jpyx');

-- Who and where.
SELECT notification.channel_for('0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d');
SELECT notification.user_of('{"user_id": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}') AS by_user_id,
       notification.user_of('{"account_id": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}') AS by_account_id,
       notification.user_of('{"user_id": "nope"}') AS not_a_uuid, notification.user_of('{}') AS none;
SELECT left(a, 24) AS address, notification.is_address(a)
  FROM unnest(ARRAY['alice@example.com', 'a.b+c@sub.example.org', 'no-at.example.com', 'a@b@c', 'a b@example.com',
                    E'a@example.com\r\nBcc: x@y', '<a@example.com>', 'jörg@example.com', '', NULL,
                    repeat('a', 250) || '@b.co']) a;

-- The channel payload: type, ids, message; never the payload itself, never 8000 bytes or more.
SELECT notification.notify_payload('allocation.activated', '0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d',
           '{"allocation_id": "a-1", "user_id": "u", "node_id": 7, "secret": "hunter2", "api_key": "sk_live_x"}',
           'Allocation a-1 is active; reply to ops@example.com')::jsonb - 'occurred_at' AS payload;
SELECT octet_length(p) < 8000 AS under_limit, length(p::jsonb ->> 'message') AS message_length,
       (SELECT count(*) FROM jsonb_object_keys(p::jsonb -> 'ids')) AS ids
  FROM notification.notify_payload('billing.low_balance', gen_random_uuid(),
           (SELECT jsonb_object_agg('k' || i || '_id', repeat('€', 64)) FROM generate_series(1, 50) i),
           repeat('€', 5000)) AS p;

-- Preferences API: who may call, what it refuses.
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.notification_preferences();
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SELECT api.set_notification_preferences(true, NULL);
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin"}';
SELECT api.notification_preferences();
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SELECT api.set_notification_preferences(NULL, NULL);
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SELECT api.set_notification_preferences(true, ARRAY['payment.succeeded', 'platform.alert', 'made.up']);
ROLLBACK;
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SELECT api.set_notification_preferences(true, ARRAY['payment.succeeded', NULL]);
ROLLBACK;
-- Defaults, then a change (sorted, without duplicates), as the API returns them.
BEGIN;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "0b7e6a52-5f4b-4d2a-9a51-0d1c2a3b4c5d"}';
SELECT jsonb_pretty(api.notification_preferences());
SELECT api.set_notification_preferences(true, ARRAY['payment.succeeded', 'billing.low_balance', 'payment.succeeded'])
       - 'available_events' - 'channel' AS set;
SELECT api.set_notification_preferences(false, '{}') - 'available_events' - 'channel' AS set_none;
SELECT action, target_type, details FROM pgcloud.audit_logs WHERE action LIKE 'notification.%' ORDER BY id;
ROLLBACK;
