-- services: core auth billing maas payments provisioning releases
-- Security tier (issue 10): each boundary attacked the way an attacker would;
-- every attack must fail. Runs in one transaction, rolled back.
BEGIN;
SELECT * FROM no_plan();

-- Runs a statement as another role; returns ok or the SQLSTATE and message.

-- ---- 1. event authority ----------------------------------------------------
-- A compromised notification service tries to mint money.
SELECT alike(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('payment.succeeded', 'payment', 'forged-1', '{"amount": 5000000, "currency": "usd"}')$$),
    '%event type payment.succeeded is published by service payments, not by notification%',
    'a service cannot emit another service''s event type (payment.succeeded as notification)');
SELECT alike(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('operator.anything', 'thing', 'x', '{}')$$),
    '%is not among the types service notification publishes%',
    'a service cannot emit a type outside its registry entry either');
SELECT alike(pg_temp.run_as_role('pgcloud_svc_notification',
    $$INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
      VALUES (gen_random_uuid(), 'payment.succeeded', 'payment', 'forged-2', '{"amount": 5000000}', '{}', 'payments')$$),
    '42501 %', 'no service role can insert into pgcloud.outbox directly');
SELECT ok(NOT has_table_privilege('pgcloud_svc_payments', 'pgcloud.outbox', 'INSERT')
          AND NOT has_table_privilege('pgcloud_services', 'pgcloud.outbox', 'INSERT'),
    'not even the owning service of a type has INSERT on the outbox');
SELECT is(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('notification.sent', 'notification', 'n-1', '{}')$$), 'ok',
    'a service still emits its own types');
SELECT is((SELECT source FROM pgcloud.outbox WHERE aggregate_id = 'n-1'), 'notification',
    'the outbox row names the emitting service');
-- emit() remembers each type's publisher per backend; a registry change must
-- reach it at once (pgcloud.services_changed() invalidates), in both directions.
UPDATE pgcloud.services SET publishes = array_remove(publishes, 'notification.sent') WHERE name = 'notification';
SELECT alike(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('notification.sent', 'notification', 'n-2', '{}')$$),
    '%not among the types service notification publishes%',
    'a type taken out of a service''s registry entry is refused at once (no stale cached publisher)');
UPDATE pgcloud.services SET publishes = publishes || '{notification.sent}' WHERE name = 'notification';
SELECT is(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.emit('notification.sent', 'notification', 'n-3', '{}')$$), 'ok',
    'and allowed again once it is put back');

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
SELECT alike(pg_temp.run_as_role('pgcloud_svc_notification',
    $$SELECT pgcloud.http_request('stripe', 'POST', '/v1/refunds', 'charge=ch_1&amount=5000000')$$),
    '%role pgcloud_svc_notification may not call target stripe%',
    'notification cannot spend the Stripe key (POST /v1/refunds)');
SELECT alike(pg_temp.run_as_role('pgcloud_svc_billing',
    $$SELECT pgcloud.http_request('maas', 'POST', '/MAAS/api/2.0/machines/abc/op-release')$$),
    '%may not call target maas%', 'billing cannot release MAAS machines');
SELECT alike(pg_temp.run_as_role('pgcloud_svc_payments',
    $$SELECT pgcloud.http_request('smtp', 'SEND', 'victim@example.com', 'phish', NULL, '{"mail_from": "ceo@example.com"}')$$),
    '%may not call target smtp%', 'payments cannot send mail');
SELECT is(pg_temp.run_as_role('pgcloud_svc_payments',
    $$SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions', 'mode=payment')$$), 'ok',
    'payments still calls Stripe');
SELECT is((SELECT http_targets FROM pgcloud.services WHERE name = 'notification'), ARRAY['smtp'],
    'the registry grants notification smtp only');

-- ---- 4. rate limiting --------------------------------------------------------
SELECT pgcloud.set_policy('core.rate_limit_burst', '40');
SELECT pgcloud.set_policy('core.rate_limit_per_second', '0.001');
SELECT pgcloud.set_policy('core.rate_limit_trusted_proxies', '1');
SELECT pgcloud.set_policy('core.rate_limit_signin_burst', '3');
SELECT pgcloud.rate_limit_reset();
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
-- 300 requests, each with a different spoofed first X-Forwarded-For entry;
-- the proxy appends the real address (198.51.100.7).
CREATE FUNCTION pg_temp.spoof_burst(n integer, real_addr text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE refused integer := 0;
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM set_config('request.headers',
            jsonb_build_object('x-forwarded-for', format('10.%s.%s.%s, %s', i / 65536, (i / 256) % 256, i % 256, real_addr))::text, true);
        BEGIN
            PERFORM pgcloud.pre_request();
        EXCEPTION WHEN SQLSTATE 'PGRST' THEN
            refused := refused + 1;
        END;
    END LOOP;
    RETURN refused;
END $$;
SELECT is(pg_temp.spoof_burst(300, '198.51.100.7'), 260,
    'spoofed first X-Forwarded-For entries do not buy new buckets: 300 requests, burst 40, 260 refused');
SELECT is(pg_temp.spoof_burst(1, '198.51.100.8'), 0,
    'another anonymous client (another real address) is not locked out by the first');
SET LOCAL request.headers = '{}';
SELECT is(pg_temp.error_of('SELECT pgcloud.pre_request()'), NULL,
    'a request without the proxy''s header lands in the unattributed bucket, not in a client''s');
SET LOCAL request.headers = '{"x-forwarded-for": "2001:db8:1:2:aaaa::1"}';
SELECT pgcloud.pre_request();
SET LOCAL request.headers = '{"x-forwarded-for": "2001:db8:1:2:bbbb::2"}';
SELECT pgcloud.pre_request();
SELECT is((SELECT allowed FROM pgcloud.rate_limit_status() WHERE principal = 'anon:2001:db8:1:2::/64'), 2::bigint,
    'IPv6 clients are keyed by their /64 (one host can rotate through it)');
-- Endpoint classes: sign-in has its own, tighter bucket.
SET LOCAL request.headers = '{"x-forwarded-for": "198.51.100.7"}';
SET LOCAL request.path = '/rpc/token_exchange';
SELECT lives_ok('SELECT pgcloud.pre_request(); SELECT pgcloud.pre_request(); SELECT pgcloud.pre_request()',
    'sign-in has its own bucket: the exhausted default bucket does not block it');
SELECT is(pg_temp.error_detail_of('SELECT pgcloud.pre_request()'),
    '{"code": "rate_limited", "detail": {"status": 429, "headers": {"Retry-After": "1"}}}'::jsonb,
    'the fourth sign-in in the burst is refused: 429 with Retry-After');
SET LOCAL request.path = '/rpc/stripe_webhook';
SELECT is(pg_temp.error_of('SELECT pgcloud.pre_request()'), NULL,
    'webhooks have a class of their own: sign-in attempts do not block Stripe');
SET LOCAL request.path = '/rpc/refresh_token';
SELECT is(pg_temp.error_of('SELECT pgcloud.pre_request()'), NULL, 'refresh has a class of its own');
SELECT ok((SELECT array_agg(principal ORDER BY principal) FROM pgcloud.rate_limit_status()
            WHERE principal LIKE '%198.51.100.7') @> ARRAY['anon:198.51.100.7', 'refresh/anon:198.51.100.7',
                                                         'signin/anon:198.51.100.7', 'webhook/anon:198.51.100.7'],
    'one bucket per endpoint class and client');
RESET request.path;
SET LOCAL request.headers = '{}';
RESET request.jwt.claims;
SELECT pgcloud.rate_limit_reset();

-- ---- 3. sign-in: no account capture through an unverified e-mail -----------
SELECT auth.jwk_generate('RS256') AS key_a \gset
SELECT auth.jwk_generate('RS256') AS key_b \gset
SELECT api.admin_upsert_oidc_provider('https://idp-a.example', 'pgcloud', jsonb_build_object('keys',
    jsonb_build_array(:'key_a'::jsonb - 'd' - 'p' - 'q' - 'dp' - 'dq' - 'qi')));
SELECT api.admin_upsert_oidc_provider('https://idp-b.example', 'pgcloud', jsonb_build_object('keys',
    jsonb_build_array(:'key_b'::jsonb - 'd' - 'p' - 'q' - 'dp' - 'dq' - 'qi')));
CREATE FUNCTION pg_temp.id_token(iss text, sub text, email text, verified boolean, k jsonb) RETURNS text
LANGUAGE sql AS $$
    SELECT auth.jwt_sign(jsonb_build_object('iss', iss, 'aud', 'pgcloud', 'sub', sub, 'email', email,
        'email_verified', verified, 'iat', extract(epoch FROM now())::bigint,
        'exp', extract(epoch FROM now())::bigint + 300), k)
$$;
SELECT pg_temp.id_token('https://idp-a.example', 'mallory', 'victim@example.com', false, :'key_a') AS tok_atk \gset
SELECT pg_temp.id_token('https://idp-b.example', 'victim', 'victim@example.com', true, :'key_b') AS tok_vic \gset
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
-- The attacker signs in first through provider A, which does not verify addresses.
SELECT api.token_exchange(:'tok_atk') AS atk \gset
-- The victim then signs in through provider B, which verified the address.
SELECT api.token_exchange(:'tok_vic') AS vic \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT isnt(auth.verify_access_token(:'atk'::jsonb ->> 'access_token') ->> 'sub',
            auth.verify_access_token(:'vic'::jsonb ->> 'access_token') ->> 'sub',
    'the verified identity does not land on the account an unverified sign-in created (no account capture)');
SELECT is((SELECT email FROM auth.users WHERE id = (auth.verify_access_token(:'atk'::jsonb ->> 'access_token') ->> 'sub')::uuid),
    NULL, 'the unverified sign-in never held the address');
SELECT is((SELECT email FROM auth.users WHERE id = (auth.verify_access_token(:'vic'::jsonb ->> 'access_token') ->> 'sub')::uuid),
    'victim@example.com', 'the verified owner holds the address');
-- A second verified provider for the same address links, and the link is audited.
SELECT api.admin_upsert_oidc_provider('https://idp-c.example', 'pgcloud', jsonb_build_object('keys',
    jsonb_build_array(:'key_a'::jsonb - 'd' - 'p' - 'q' - 'dp' - 'dq' - 'qi')));
SELECT pg_temp.id_token('https://idp-c.example', 'victim-c', 'victim@example.com', true, :'key_a') AS tok_vic2 \gset
SELECT pg_temp.id_token('https://idp-a.example', 'mallory-2', 'victim@example.com', false, :'key_a') AS tok_atk2 \gset
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.token_exchange(:'tok_vic2') AS vic2 \gset
SELECT pg_temp.error_of(format('SELECT api.token_exchange(%L)', :'tok_atk2')) AS atk2 \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT is(auth.verify_access_token(:'vic2'::jsonb ->> 'access_token') ->> 'sub',
          auth.verify_access_token(:'vic'::jsonb ->> 'access_token') ->> 'sub',
    'two verified identities with one address share the account');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'identity.linked'
                    AND target_id = auth.verify_access_token(:'vic'::jsonb ->> 'access_token') ->> 'sub'
                    AND details ->> 'issuer' = 'https://idp-c.example'), 'the link is audited');
SELECT is(:'atk2'::jsonb ->> 'code', 'email_not_verified',
    'an unverified identity claiming a verified account''s address is refused, not linked');
-- Legacy: an account holding an address unverified loses it to the verified owner.
INSERT INTO auth.users (id, email, email_verified) VALUES ('f0000000-0000-4000-8000-0000000000bb', 'legacy@example.com', false);
SELECT pg_temp.id_token('https://idp-b.example', 'legacy-owner', 'legacy@example.com', true, :'key_b') AS tok_leg \gset
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.token_exchange(:'tok_leg') AS leg \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT isnt(auth.verify_access_token(:'leg'::jsonb ->> 'access_token') ->> 'sub', 'f0000000-0000-4000-8000-0000000000bb',
    'a verified identity is not linked to an account that holds its address unverified');
SELECT ok((SELECT email IS NULL FROM auth.users WHERE id = 'f0000000-0000-4000-8000-0000000000bb')
          AND EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'user.email_released'
                        AND target_id = 'f0000000-0000-4000-8000-0000000000bb'),
    'that account loses the address, audited');
-- Policy refuse: unverified sign-ins are refused outright.
UPDATE pgcloud.policy_values SET value = '"refuse"' WHERE key = 'auth.unverified_email_signin';
SELECT pg_temp.id_token('https://idp-a.example', 'someone-new', 'new@example.com', false, :'key_a') AS tok_new \gset
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT pg_temp.error_of(format('SELECT api.token_exchange(%L)', :'tok_new')) AS e_new \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT is(:'e_new'::jsonb ->> 'code',
    'email_not_verified', 'with auth.unverified_email_signin = refuse an unverified address is refused');
UPDATE pgcloud.policy_values SET value = '"separate_account"' WHERE key = 'auth.unverified_email_signin';

-- Refresh-token reuse interval: two tabs, one token.
SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.dev_login('tabs@example.com') AS tabs \gset
SELECT api.refresh_token(:'tabs'::jsonb ->> 'refresh_token') AS tab1 \gset
SELECT api.refresh_token(:'tabs'::jsonb ->> 'refresh_token') AS tab2 \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT is(:'tab2'::jsonb ->> 'refresh_token', :'tab1'::jsonb ->> 'refresh_token',
    'within auth.refresh_reuse_interval_seconds the same token returns the same successor');
SELECT ok((SELECT revoked_at IS NULL FROM auth.sessions
            WHERE id = (auth.verify_access_token(:'tabs'::jsonb ->> 'access_token') ->> 'sid')::uuid)
          AND :'tab2'::jsonb ? 'access_token',
    'and the session lives on');
-- After the interval, reuse still revokes the family.
UPDATE auth.refresh_tokens SET used_at = used_at - interval '11 seconds'
 WHERE session_id = (auth.verify_access_token(:'tabs'::jsonb ->> 'access_token') ->> 'sid')::uuid AND used_at IS NOT NULL;
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT api.refresh_token(:'tabs'::jsonb ->> 'refresh_token') AS tab3 \gset
RESET ROLE;
RESET request.jwt.claims;
SELECT is(:'tab3'::jsonb ->> 'code', 'refresh_token_reused', 'after the interval a replay revokes the session');
SELECT pgcloud.set_policy('auth.dev_login_enabled', 'false');
SELECT is((SELECT count(*)::int FROM auth.refresh_tokens WHERE successor_sealed IS NOT NULL
             AND used_at < clock_timestamp() - interval '10 seconds'
             AND session_id <> (auth.verify_access_token(:'tabs'::jsonb ->> 'access_token') ->> 'sid')::uuid), 0,
    'sealed successors are not kept past the interval');

-- ---- 10. service-account scopes --------------------------------------------
CREATE FUNCTION pg_temp.redeem_like() RETURNS text LANGUAGE sql AS $$ SELECT pgcloud.authorize_service('terminal:redeem') $$;
CREATE FUNCTION pg_temp.service_only() RETURNS text LANGUAGE sql AS $$ SELECT pgcloud.authorize('service') $$;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "sub": "f0000000-0000-4000-8000-0000000000cc", "scopes": ["inventory:read"]}';
SELECT is(pg_temp.error_of('SELECT pg_temp.redeem_like()') ->> 'code', 'insufficient_scope',
    'a service token without terminal:redeem cannot redeem');
SELECT is(pg_temp.error_of('SELECT pg_temp.service_only()') ->> 'code', 'insufficient_scope',
    'a service call that names no scope refuses every service token');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "sub": "f0000000-0000-4000-8000-0000000000cc", "scopes": ["terminal:redeem"]}';
SELECT is(pg_temp.redeem_like(), 'pgcloud_service', 'the relay''s own scope passes');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "f0000000-0000-4000-8000-0000000000cc", "scopes": ["terminal:redeem"]}';
SELECT is(pg_temp.error_of('SELECT pg_temp.redeem_like()') ->> 'code', 'forbidden',
    'a user token carrying the scope is still not a service account');
RESET request.jwt.claims;
SELECT is((SELECT array_agg(p.oid::regprocedure::text ORDER BY 1) FROM pg_proc p
            WHERE p.pronamespace = 'api'::regnamespace
              AND has_function_privilege('pgcloud_service', p.oid, 'EXECUTE')
              AND NOT has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')
              AND p.prosrc NOT LIKE '%authorize_service(%'), NULL,
    'every api function a service token may call (beyond the public ones) checks a scope');

-- ---- 5. release and money ----------------------------------------------------
\set su '''5e000000-0000-4000-8000-0000000000a1'''
SELECT pg_temp.handle('provisioning', 'sku.upserted', NULL, '{"code": "sec-x1", "gpu_model": "SEC-GPU", "gpu_count": 1, "region": "sec-r", "price_per_hour": 360000, "currency": "usd"}');
SELECT pg_temp.handle('provisioning', 'image.upserted', NULL, '{"code": "sec-jammy", "distro_series": "jammy"}');
SELECT pg_temp.handle('provisioning', 'node.state_changed', NULL, jsonb_build_object('node_id', '5e000000-0000-4000-8000-0000000000b1', 'hostname', 'sec-a',
    'maas_system_id', 'secaaa', 'region', 'sec-r', 'gpu_model', 'SEC-GPU', 'slot_count', 8, 'state', 'ready', 'cached_images', '[]'::jsonb));
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '60');
SELECT pgcloud.set_policy('billing.min_balance_to_allocate', '100');
-- Just over the minimum plus one interval (360000/h = 6000 per minute).
SELECT pg_temp.handle('provisioning', 'account.standing_changed', NULL, jsonb_build_object('user_id', :su, 'standing', 'good', 'balance', 6150,
    'currency', 'usd', 'min_balance_to_allocate', 100, 'as_of', now()));
-- Shared tenancy is refused until each tenant has an account of its own.
SELECT pgcloud.set_policy('provisioning.node_tenancy', '"shared"');
SELECT pg_temp.as_user(:su);
SELECT is(pg_temp.error_of($$SELECT api.create_allocation('sec-x1', 'sec-jammy')$$) ->> 'code', 'policy_invalid',
    'shared tenancy (co-tenants on one default user) is refused');
RESET request.jwt.claims;
SELECT pgcloud.set_policy('provisioning.node_tenancy', '"single"');
SELECT pg_temp.as_user(:su);
SELECT api.create_allocation('sec-x1', 'sec-jammy') ->> 'id' AS sa1 \gset
SELECT is(pg_temp.error_of($$SELECT api.create_allocation('sec-x1', 'sec-jammy')$$) ->> 'code', 'insufficient_balance',
    'the balance check is a reservation: a second allocation of the dearest SKU is refused while the first holds its interval');
RESET request.jwt.claims;
SELECT is((SELECT count(*)::int FROM provisioning.allocations WHERE user_id = :su), 1, 'only one allocation exists');


-- Activation, then a release request an hour ago that MAAS confirms now.
SELECT pg_temp.handle('provisioning', 'maas.machine_deployed', NULL, jsonb_build_object('allocation_id', :'sa1', 'system_id', 'secaaa'));
SELECT is((SELECT state FROM provisioning.allocations WHERE id = :'sa1'), 'active', 'the allocation is active');
SELECT pg_temp.as_user(:su);
SELECT api.release_allocation(:'sa1') ->> 'state' AS rel_state \gset
RESET request.jwt.claims;
UPDATE provisioning.allocations SET releasing_at = now() - interval '1 hour' WHERE id = :'sa1';
-- releases hears allocation.releasing: no access is minted from now on.
SELECT pgcloud.deliver('releases', gen_random_uuid(), 'allocation.activated', 'allocation', :'sa1',
    jsonb_build_object('allocation_id', :'sa1', 'user_id', :su, 'sku', 'sec-x1', 'node_hostname', 'sec-a'), '{}');
SELECT pgcloud.deliver('releases', o.event_id, o.event_type, o.aggregate_type, o.aggregate_id, o.payload, o.headers)
  FROM pgcloud.outbox o WHERE o.aggregate_id = :'sa1' AND o.event_type = 'allocation.releasing';
SELECT pg_temp.as_user(:su);
SELECT is(pg_temp.error_of(format('SELECT api.mint_access(%L, %L)', :'sa1',
    'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl')) ->> 'code',
    'allocation_not_active', 'no access is minted once the release is requested');
RESET request.jwt.claims;
SELECT pg_temp.handle('provisioning', 'maas.machine_released', NULL, jsonb_build_object('allocation_id', :'sa1', 'system_id', 'secaaa'));
SELECT ok((SELECT (payload ->> 'ended_at')::timestamptz > now() - interval '1 minute' FROM pgcloud.outbox
            WHERE aggregate_id = :'sa1' AND event_type = 'allocation.released'),
    'billing ends when MAAS confirms the release, not at the request an hour earlier (no free hour)');

-- A release MAAS cannot complete: quarantine, alert, billing goes on.
INSERT INTO maas.machines (system_id, node_id, hostname, goal, goal_since, status_name, seen_busy)
VALUES ('secbbb', '5e000000-0000-4000-8000-0000000000b2', 'sec-b', 'release', now(), 'Releasing failed', true);
INSERT INTO maas.allocations (allocation_id, system_id, user_id, distro_series, state)
VALUES ('5e000000-0000-4000-8000-0000000000c1', 'secbbb', :su, 'jammy', 'deploying');
UPDATE maas.allocations SET state = 'deployed' WHERE allocation_id = '5e000000-0000-4000-8000-0000000000c1';
UPDATE maas.allocations SET state = 'releasing' WHERE allocation_id = '5e000000-0000-4000-8000-0000000000c1';
SELECT maas.goal_failed(m, 'Releasing failed') FROM maas.machines m WHERE system_id = 'secbbb';
SELECT ok(NOT EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'maas.machine_released'
                        AND aggregate_id = '5e000000-0000-4000-8000-0000000000c1'),
    'a failed release does not end the allocation (billing does not stop while the machine may run)');
SELECT is((SELECT state FROM maas.allocations WHERE allocation_id = '5e000000-0000-4000-8000-0000000000c1'), 'releasing',
    'it stays releasing');
SELECT ok((SELECT stuck FROM maas.machines WHERE system_id = 'secbbb')
          AND EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND payload ->> 'kind' = 'release_stuck'
                        AND payload ->> 'system_id' = 'secbbb' AND source = 'core'),
    'the machine is quarantined and operators are alerted');
-- MAAS later says Ready (someone released it by hand): still broken, not placeable.
SELECT maas.observe(m, '{"status_name": "Ready", "status": 4}') FROM maas.machines m WHERE system_id = 'secbbb';
SELECT is((SELECT payload ->> 'node_state' FROM pgcloud.outbox WHERE event_type = 'maas.machine_status_changed'
             AND aggregate_id = 'secbbb' ORDER BY id DESC LIMIT 1), 'broken',
    'a quarantined machine stays broken when MAAS reports Ready (no erase, no commission yet)');
SELECT is(pg_temp.error_of($$SELECT api.admin_end_stuck_release('secbbb', '')$$) ->> 'code', 'invalid_argument',
    'the operator''s decision needs a reason');
SELECT is(api.admin_end_stuck_release('secbbb', 'powered off by hand') - 'system_id',
    '{"allocations_released": 1, "quarantined": true, "goal": "commission"}'::jsonb,
    'the operator''s decision ends the allocation; the machine stays quarantined and is commissioned afresh');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.outbox WHERE event_type = 'maas.machine_released'
                    AND aggregate_id = '5e000000-0000-4000-8000-0000000000c1'
                    AND payload ->> 'reason' = 'operator: powered off by hand')
          AND EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'maas.stuck_release_ended' AND target_id = 'secbbb'),
    'only then is it released (billing stops), audited');
-- A machine still Deployed from before is released and deployed afresh, never joined.
SELECT is(maas.next_action(jsonb_populate_record(NULL::maas.machines,
    '{"system_id": "x", "goal": "deploy", "status_name": "Deployed", "seen_busy": false}')), 'release',
    'deploying onto a machine that is still Deployed (not by this deployment) releases it first');
SELECT is(maas.next_action(jsonb_populate_record(NULL::maas.machines,
    '{"system_id": "x", "goal": "deploy", "status_name": "Deployed", "seen_busy": true}')), 'done',
    'its own deployment finished is done');
-- Billing the provisioning phase is a policy.
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', '5e000000-0000-4000-8000-0000000000d1',
    jsonb_build_object('allocation_id', '5e000000-0000-4000-8000-0000000000d1', 'user_id', :su, 'sku', 'sec-x1',
                       'price_per_hour', 100, 'currency', 'usd', 'started_at', now(), 'requested_at', now() - interval '10 minutes'), '{}');
SELECT is((SELECT started_at FROM billing.allocations WHERE allocation_id = '5e000000-0000-4000-8000-0000000000d1'), now(),
    'by default billing starts at activation');
UPDATE pgcloud.policy_values SET value = 'true' WHERE key = 'billing.bill_provisioning';
SELECT pgcloud.deliver('billing', gen_random_uuid(), 'allocation.activated', 'allocation', '5e000000-0000-4000-8000-0000000000d2',
    jsonb_build_object('allocation_id', '5e000000-0000-4000-8000-0000000000d2', 'user_id', :su, 'sku', 'sec-x1',
                       'price_per_hour', 100, 'currency', 'usd', 'started_at', now(), 'requested_at', now() - interval '10 minutes'), '{}');
SELECT is((SELECT started_at FROM billing.allocations WHERE allocation_id = '5e000000-0000-4000-8000-0000000000d2'),
    now() - interval '10 minutes', 'with billing.bill_provisioning the provisioning phase is billed');
UPDATE pgcloud.policy_values SET value = 'false' WHERE key = 'billing.bill_provisioning';

-- ---- 6. tenant isolation: image default user names ---------------------------
SELECT ok((SELECT bool_and(auth.posix_username_base(e || '@example.com') = e
                           AND NOT EXISTS (SELECT 1 FROM auth.posix_identities p WHERE p.username = e))
             FROM unnest(ARRAY['centos', 'ec2-user', 'cloud-user', 'rocky', 'fedora', 'core']) e), 'precondition: nobody holds them');
CREATE TEMP TABLE sec_users AS
    SELECT gen_random_uuid() AS id, e || '@example.com' AS email, e
      FROM unnest(ARRAY['centos', 'ec2-user', 'cloud-user', 'rocky', 'fedora', 'core', 'ubuntu', 'debian']) e;
INSERT INTO auth.users (id, email, email_verified) SELECT id, email, true FROM sec_users;
SELECT is((SELECT count(*)::int FROM sec_users u WHERE (auth.assign_posix_identity(u.id, u.email)).username = u.e), 0,
    'no user gets an image''s default user name (centos, ec2-user, cloud-user, rocky, fedora, core, ...)');
SELECT * FROM finish();
ROLLBACK;
