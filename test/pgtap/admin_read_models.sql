-- admin: grants and refusals (a non-admin is refused everywhere, by grant
-- and by the request's role), read models fed only by events (ordering
-- guards, exactly-once through the inbox), cross-user views, force-release,
-- and the audit of every service arriving as audit.recorded events, queried
-- with filters and keyset pagination.
BEGIN;
SELECT * FROM no_plan();

\set ada '''ad000000-0000-4000-8000-0000000000ad'''
\set bob '''b0000000-0000-4000-8000-0000000000b0'''
\set a1 '''a1000000-0000-4000-8000-0000000000a1'''
\set a2 '''a2000000-0000-4000-8000-0000000000a2'''
\set n1 '''9e000000-0000-4000-8000-0000000000e1'''

-- One delivery to admin, as the relay makes it (inbox row + handler).
-- Every admin entry point, each as a query.
CREATE TEMP TABLE admin_calls (q text);
INSERT INTO admin_calls VALUES
    ('SELECT api.admin_users()'), ('SELECT api.admin_allocations()'), ('SELECT api.admin_allocations(''active'')'),
    ('SELECT api.admin_nodes()'), ('SELECT api.admin_payments()'),
    ('SELECT api.admin_force_release(''a1000000-0000-4000-8000-0000000000a1'', ''test'')'),
    ('SELECT count(*) FROM api.admin_audit(now() - interval ''1 day'', now() + interval ''1 day'')');
GRANT SELECT ON admin_calls TO pgcloud_user;

-- ---- refusals -----------------------------------------------------------------
SELECT is_empty($$ SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                   WHERE n.nspname = 'api' AND p.proname LIKE 'admin\_%' AND p.proowner = 'pgcloud_svc_admin'::regrole
                     AND (has_function_privilege('pgcloud_user', p.oid, 'EXECUTE')
                          OR has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')
                          OR has_function_privilege('pgcloud_service', p.oid, 'EXECUTE')) $$,
    'no admin function may be executed by users, anonymous callers or services');
SELECT ok(has_function_privilege('pgcloud_admin', 'api.admin_audit(timestamptz, timestamptz, uuid, text, bigint, int)', 'EXECUTE'),
    'admins may');
SELECT is_empty($$ SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'admin' AND (has_table_privilege('pgcloud_user', c.oid, 'SELECT')
                                                  OR has_table_privilege('pgcloud_admin', c.oid, 'SELECT')) $$,
    'nobody reads admin''s tables but through the api');
-- A user token on the admin role's connection (the request's role decides): forbidden.
SELECT pg_temp.as_role('pgcloud_user', :bob);
SELECT is((SELECT array_agg(DISTINCT pg_temp.error_of(q) ->> 'code') FROM admin_calls), ARRAY['forbidden'],
    'a user''s request is forbidden on every admin function');
SELECT pg_temp.as_role('pgcloud_anon');
SELECT is((SELECT array_agg(DISTINCT pg_temp.error_of(q) ->> 'code') FROM admin_calls), ARRAY['unauthenticated'],
    'an anonymous request is unauthenticated on every admin function');
SELECT pg_temp.as_role('pgcloud_service', :bob);
SELECT is((SELECT array_agg(DISTINCT pg_temp.error_of(q) ->> 'code') FROM admin_calls), ARRAY['forbidden'],
    'a service token is forbidden too');
-- And as the database role PostgREST would switch to for a user: no EXECUTE at all.
SET LOCAL ROLE pgcloud_user;
SELECT pg_temp.as_role('pgcloud_user', :bob);
SELECT throws_ok('SELECT api.admin_users()', '42501', NULL, 'pgcloud_user cannot even call api.admin_users()');
SELECT throws_ok('SELECT * FROM api.admin_audit(now() - interval ''1 day'', now())', '42501', NULL,
    'nor api.admin_audit()');
SELECT throws_ok('SELECT api.admin_force_release(''a1000000-0000-4000-8000-0000000000a1'', ''x'')', '42501', NULL,
    'nor api.admin_force_release()');
RESET ROLE;
SELECT pg_temp.as_operator();
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'admin.force_release_requested'), 0,
    'no refused call announced anything');

-- ---- read models --------------------------------------------------------------------
SELECT pg_temp.deliver('admin', 'user.created', :ada, jsonb_build_object('user_id', :ada, 'email', 'ada@example.test', 'posix_username', 'ada',
                                                        'created_at', '2026-01-01T00:00:00Z'));
SELECT pg_temp.deliver('admin', 'user.created', :bob, jsonb_build_object('user_id', :bob, 'email', 'bob@example.test', 'created_at', '2026-01-02T00:00:00Z'));
SELECT pg_temp.deliver('admin', 'user.signed_in', :ada, jsonb_build_object('user_id', :ada, 'signed_in_at', '2026-02-01T10:00:00Z'));
SELECT pg_temp.deliver('admin', 'user.signed_in', :ada, jsonb_build_object('user_id', :ada, 'signed_in_at', '2026-01-15T10:00:00Z'));
SELECT pg_temp.deliver('admin', 'ledger.entry_posted', :ada, jsonb_build_object('user_id', :ada, 'entry_id', 7, 'balance_after', 4200, 'currency', 'usd'));
SELECT pg_temp.deliver('admin', 'ledger.entry_posted', :ada, jsonb_build_object('user_id', :ada, 'entry_id', 5, 'balance_after', 5000, 'currency', 'usd'));
SELECT pg_temp.deliver('admin', 'account.standing_changed', :ada, jsonb_build_object('user_id', :ada, 'standing', 'good', 'can_allocate', true,
                                                                     'as_of', '2026-02-01T10:00:00Z'));
SELECT pg_temp.deliver('admin', 'account.standing_changed', :ada, jsonb_build_object('user_id', :ada, 'standing', 'exhausted', 'can_allocate', false,
                                                                     'as_of', '2026-01-01T10:00:00Z'));
SELECT pg_temp.deliver('admin', 'node.registered', :n1, jsonb_build_object('node_id', :n1, 'hostname', 'gpu-1', 'sku', 'a100', 'slot_count', 8,
                                                           'state', 'commissioning', 'updated_at', '2026-01-01T00:00:00Z'));
SELECT pg_temp.deliver('admin', 'node.state_changed', :n1, jsonb_build_object('node_id', :n1, 'hostname', 'gpu-1', 'sku', 'a100', 'slot_count', 8,
                                                              'state', 'ready', 'updated_at', '2026-01-01T00:05:00Z'));
SELECT pg_temp.deliver('admin', 'allocation.requested', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :ada, 'sku', 'a100', 'gpu_count', 2,
                                                                'node_id', :n1, 'node_hostname', 'gpu-1', 'requested_at', '2026-02-01T11:00:00Z'));
SELECT pg_temp.deliver('admin', 'allocation.activated', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :ada, 'started_at', '2026-02-01T11:02:00Z'));
SELECT pg_temp.deliver('admin', 'allocation.provisioning', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :ada));
SELECT pg_temp.deliver('admin', 'allocation.requested', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :ada, 'sku', 'a100', 'gpu_count', 1,
                                                                'node_id', :n1, 'requested_at', '2026-02-01T09:00:00Z'));
SELECT pg_temp.deliver('admin', 'allocation.failed', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :ada, 'reason', 'deployment failed'));
\set pay '''9a100000-0000-4000-8000-000000000001'''
\set ref '''9f100000-0000-4000-8000-000000000001'''
SELECT pg_temp.deliver('admin', 'payment.succeeded', :pay, jsonb_build_object('payment_id', :pay, 'user_id', :ada, 'amount', 5000, 'currency', 'usd'));
SELECT pg_temp.deliver('admin', 'refund.requested', :ref, jsonb_build_object('refund_id', :ref, 'payment_id', :pay, 'user_id', :ada, 'amount', 800,
                                                             'currency', 'usd', 'reason', 'goodwill'));
SELECT pg_temp.deliver('admin', 'payment.refunded', :pay, jsonb_build_object('refund_id', :ref, 'payment_id', :pay, 'user_id', :ada, 'amount', 800,
                                                             'currency', 'usd'), 'e0000000-0000-4000-8000-00000000000e');
SELECT is(pg_temp.deliver('admin', 'payment.refunded', :pay, jsonb_build_object('refund_id', :ref, 'payment_id', :pay, 'user_id', :ada, 'amount', 800,
                                                                'currency', 'usd'), 'e0000000-0000-4000-8000-00000000000e'),
    'duplicate', 'a redelivered event is a duplicate ...');

CREATE TEMP TABLE users AS SELECT jsonb_array_elements(api.admin_users()) AS u;
SELECT is((SELECT jsonb_agg(u ->> 'email') FROM users), '["ada@example.test", "bob@example.test"]', 'admin_users: every user, oldest first');
SELECT is((SELECT u - 'user_id' - 'created_at' FROM users WHERE u ->> 'email' = 'ada@example.test'),
    jsonb_build_object('email', 'ada@example.test', 'posix_username', 'ada', 'last_sign_in_at', '2026-02-01T10:00:00+00:00',
                       'sign_ins', 2, 'balance', 4200, 'currency', 'usd', 'standing', 'good', 'can_allocate', true,
                       'live_allocations', 1, 'active_allocations', 1, 'total_allocations', 2, 'paid', 5000, 'refunded', 800),
    'ada: newest sign-in, balance of the newest entry, newest standing, allocation counts, paid and refunded once');
SELECT is((SELECT u ->> 'balance' FROM users WHERE u ->> 'email' = 'bob@example.test'), NULL, 'bob: no ledger yet');

SELECT is((SELECT jsonb_agg(a ->> 'allocation_id') FROM jsonb_array_elements(api.admin_allocations('active')) a), jsonb_build_array(:a1),
    'admin_allocations(active)');
SELECT is((SELECT a ->> 'state' FROM jsonb_array_elements(api.admin_allocations()) a WHERE a ->> 'allocation_id' = :a1), 'active',
    'a late allocation.provisioning does not move it back');
SELECT is((SELECT a ->> 'email' FROM jsonb_array_elements(api.admin_allocations()) a WHERE a ->> 'allocation_id' = :a1),
    'ada@example.test', 'with the user''s e-mail');
SELECT is(jsonb_array_length(api.admin_allocations('failed')), 1, 'admin_allocations(failed)');
SELECT is(pg_temp.error_of($$ SELECT api.admin_allocations('running') $$), '{"code": "invalid_argument", "status": 400}', 'unknown state: 400');
SELECT is((SELECT n ->> 'state' || ' ' || (n ->> 'live_allocations') || ' ' || (n ->> 'slots_in_use')
             FROM jsonb_array_elements(api.admin_nodes()) n), 'ready 1 2', 'admin_nodes: state and what runs on it');
SELECT is((SELECT p -> 'refunds' -> 0 ->> 'status' FROM jsonb_array_elements(api.admin_payments(:ada)) p), 'refunded',
    'admin_payments shows refunds');

-- ---- force-release ---------------------------------------------------------------------
SELECT pg_temp.as_role('pgcloud_admin', :bob);
SELECT set_config('request.headers', '{"x-correlation-id": "force-1", "x-idempotency-key": "fr-1"}', true);
SELECT is(api.admin_force_release(:a1, '  broken GPU  ') ->> 'reason', 'broken GPU', 'force-release');
SELECT is(api.admin_force_release(:a1, '  broken GPU  ') ->> 'reason', 'broken GPU', 'retried with the same key');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'admin.force_release_requested'), 1,
    'announced once (what provisioning honours)');
SELECT is((SELECT payload - 'requested_by' FROM pgcloud.outbox WHERE event_type = 'admin.force_release_requested'),
    jsonb_build_object('allocation_id', :a1, 'user_id', :ada, 'reason', 'broken GPU'), '{allocation_id, user_id, reason}');
SELECT is((SELECT details ->> 'reason' || ' ' || actor || ' ' || correlation_id FROM pgcloud.audit_logs WHERE action = 'admin.force_release'),
    'broken GPU ' || :bob || ' force-1', 'audited with the reason, the admin and the correlation id');
SELECT set_config('request.headers', '{}', true);
SELECT is(pg_temp.error_of($$ SELECT api.admin_force_release('a2000000-0000-4000-8000-0000000000a2', 'x') $$),
    '{"code": "allocation_not_live", "status": 409}', 'a failed allocation: 409');
SELECT is(pg_temp.error_of($$ SELECT api.admin_force_release(gen_random_uuid(), 'x') $$),
    '{"code": "allocation_not_found", "status": 404}', 'unknown: 404');
SELECT is(pg_temp.error_of($$ SELECT api.admin_force_release('a1000000-0000-4000-8000-0000000000a1', ' ') $$),
    '{"code": "invalid_argument", "status": 400}', 'no reason: 400');

-- ---- audit ------------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM pgcloud.outbox o JOIN pgcloud.audit_logs l ON o.aggregate_id = current_database() || ':' || l.id
            WHERE o.event_type = 'audit.recorded' AND o.payload ->> 'action' = l.action
              AND o.payload ->> 'correlation_id' = l.correlation_id),
    (SELECT count(*)::int FROM pgcloud.audit_logs), 'every audit row is announced as audit.recorded with its correlation id');
-- Deliver the announcements to admin (and every other subscriber) as the relay does.
SELECT pg_temp.as_operator();
SELECT ok(pgcloud.relay_once(10000) > 0, 'the relay delivers');
SELECT is((SELECT count(*)::int FROM admin.audit), (SELECT count(*)::int FROM pgcloud.audit_logs), 'admin has every audit row');
SELECT pg_temp.deliver('admin', 'audit.recorded', 'otherdb:1', jsonb_build_object('database', 'pgcloud_payments', 'audit_id', 1, 'at', now(),
    'actor', :ada, 'role', 'pgcloud_user', 'action', 'payment.checkout_created', 'target_type', 'payment_session', 'target_id', 'x',
    'result', 'ok', 'details', '{}', 'correlation_id', 'pay-1'));
SELECT pg_temp.deliver('admin', 'audit.recorded', 'otherdb:1', jsonb_build_object('database', 'pgcloud_payments', 'audit_id', 1, 'at', now(),
    'actor', :ada, 'role', 'pgcloud_user', 'action', 'payment.checkout_created', 'result', 'ok', 'correlation_id', 'pay-1'));
SELECT is((SELECT count(*)::int FROM admin.audit WHERE database = 'pgcloud_payments'), 1,
    'another database''s audit arrives too, once per (database, audit_id)');
SELECT is((SELECT array_agg(database || ' ' || action ORDER BY seq) FROM api.admin_audit(now() - interval '1 h', now() + interval '1 h', :ada)),
    ARRAY['pgcloud_payments payment.checkout_created'], 'filter by actor');
SELECT is((SELECT count(*)::int FROM api.admin_audit(now() - interval '1 h', now() + interval '1 h', NULL, 'admin.force_release')), 1,
    'filter by action');
SELECT is((SELECT count(*)::int FROM api.admin_audit(now() + interval '1 h', now() + interval '2 h')), 0, 'outside the range: nothing');
-- Keyset pagination: pages of 2 cover the whole range in order, without gaps or repeats.
CREATE TEMP TABLE pages (page int, seq bigint, at timestamptz, database text, audit_id bigint);
DO $$
DECLARE cur bigint; n int := 0; got int;
BEGIN
    LOOP
        n := n + 1;
        INSERT INTO pages SELECT n, a.seq, a.at, a.database, a.audit_id
          FROM api.admin_audit(now() - interval '1 h', now() + interval '1 h', NULL, NULL, cur, 2) a;
        GET DIAGNOSTICS got = ROW_COUNT;
        EXIT WHEN got < 2 OR n > 100;
        SELECT p.seq INTO cur FROM pages p WHERE p.page = n ORDER BY p.at DESC, p.database DESC, p.audit_id DESC LIMIT 1;
    END LOOP;
END $$;
SELECT is((SELECT array_agg(seq ORDER BY at, database, audit_id) FROM pages),
          (SELECT array_agg(seq ORDER BY at, database, audit_id) FROM api.admin_audit(now() - interval '1 h', now() + interval '1 h')),
    'the pages put together are the whole range, in order');
SELECT is((SELECT count(DISTINCT seq)::int FROM pages), (SELECT count(*)::int FROM pages), 'no row twice');
SELECT is(pg_temp.error_of($$ SELECT * FROM api.admin_audit(now(), now() - interval '1 s') $$), '{"code": "audit_range_invalid", "status": 400}',
    'until before since: 400');
SELECT is(pg_temp.error_of($$ SELECT * FROM api.admin_audit(now() - interval '400 days', now()) $$),
    '{"code": "audit_range_invalid", "status": 400}', 'over admin.audit_range_max_days: 400');
SELECT is(pg_temp.error_of($$ SELECT * FROM api.admin_audit(now() - interval '1 h', now(), NULL, NULL, NULL, 0) $$),
    '{"code": "invalid_argument", "status": 400}', 'limit 0: 400');
SELECT is(pg_temp.error_of($$ SELECT * FROM api.admin_audit(now() - interval '1 h', now(), NULL, 'DROP TABLE') $$),
    '{"code": "invalid_argument", "status": 400}', 'a malformed action: 400');
SELECT is(pg_temp.error_of($$ SELECT * FROM api.admin_audit(now() - interval '1 h', now(), NULL, NULL, -5) $$),
    '{"code": "invalid_argument", "status": 400}', 'an unknown cursor: 400');
SET LOCAL ROLE pgcloud_admin;
SELECT pg_temp.as_role('pgcloud_admin', :bob);
SELECT ok((SELECT count(*) FROM api.admin_audit(now() - interval '1 h', now() + interval '1 h')) > 0,
    'as the pgcloud_admin role PostgREST switches to, admin_audit works');
SELECT ok(jsonb_array_length(api.admin_users()) = 2, '... and so does admin_users');
RESET ROLE;
SELECT pg_temp.as_operator();
SELECT throws_ok($$ DELETE FROM admin.audit $$, NULL, NULL, 'admin''s audit is append-only too');

SELECT * FROM finish();
ROLLBACK;
