-- terminal: token mint and redeem rules, single use, revocation with the
-- allocation and the session, app members, heartbeat/end/reap, grants.
BEGIN;
SELECT * FROM no_plan();
\set alice '''7e7e0000-0000-4000-8000-000000000001'''
\set bob '''7e7e0000-0000-4000-8000-000000000002'''
\set sid '''7e7e0000-0000-4000-8000-0000000005a1'''
\set sid2 '''7e7e0000-0000-4000-8000-0000000005a2'''
\set a1 '''7e7ea100-0000-4000-8000-000000000001'''
\set a2 '''7e7ea100-0000-4000-8000-000000000002'''
\set a3 '''7e7ea100-0000-4000-8000-000000000003'''
\set relay '''7e7e5e55-0000-4000-8000-000000000001'''

CREATE FUNCTION pg_temp.as_relay(scopes text DEFAULT 'terminal:redeem') RETURNS void LANGUAGE sql AS $$
    SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_service', 'sub', '7e7e5e55-0000-4000-8000-000000000001',
                                                               'relay', 'relay-tap', 'scopes', scopes)::text, true)
$$;
CREATE FUNCTION pg_temp.mint(sub text, sid text, alloc text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.as_user(sub, sid);
    RETURN api.mint_terminal_token(alloc::uuid) ->> 'token';
END $$;
CREATE FUNCTION pg_temp.redeem(tok text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.as_relay();
    RETURN api.service_redeem_terminal_token(tok);
END $$;

SELECT pg_temp.handle('terminal', 'user.created', :alice, jsonb_build_object('user_id', :alice, 'posix_username', 'alice'));
SELECT pg_temp.handle('terminal', 'user.created', :bob, jsonb_build_object('user_id', :bob, 'posix_username', 'bob'));
SELECT pg_temp.handle('terminal', 'allocation.activated', :a1, jsonb_build_object('allocation_id', :a1, 'user_id', :alice,
                  'node_hostname', 'gpu-01', 'ip_addresses', jsonb_build_array('10.0.0.1')));
SELECT pg_temp.handle('terminal', 'allocation.activated', :a2, jsonb_build_object('allocation_id', :a2, 'user_id', :bob, 'node_hostname', 'gpu-02'));
SELECT pg_temp.handle('terminal', 'allocation.activated', :a3, jsonb_build_object('allocation_id', :a3, 'user_id', :alice, 'node_hostname', 'gpu-03'));

-- ---- mint ---------------------------------------------------------------------
SELECT pg_temp.as_user(:alice, :sid);
SELECT matches(api.mint_terminal_token(:a1) ->> 'token', '^pgt_[A-Za-z0-9_-]{43}$', 'the owner mints a token');
SELECT ok(e BETWEEN now() + interval '59 s' AND now() + interval '61 s', 'it lives terminal.token_ttl_seconds (60 s)')
  FROM (SELECT (api.mint_terminal_token(:a1) ->> 'expires_at')::timestamptz AS e OFFSET 0) x;
SELECT isnt(api.mint_terminal_token(:a1) ->> 'token', api.mint_terminal_token(:a1) ->> 'token',
            'not idempotent: every call mints another token');
SELECT set_config('request.headers', '{"x-idempotency-key": "same-key"}', true);
SELECT isnt(api.mint_terminal_token(:a1) ->> 'token', api.mint_terminal_token(:a1) ->> 'token',
            '... even with the same X-Idempotency-Key');
SELECT set_config('request.headers', '', true);
SELECT is(pg_temp.error_of(format('SELECT api.mint_terminal_token(%L)', :a2)),
          '{"code": "allocation_not_found", "status": 404}', 'another user''s allocation: 404 allocation_not_found');
SELECT is(pg_temp.error_of('SELECT api.mint_terminal_token(''7e7e0000-0000-4000-8000-00000000dead'')'),
          '{"code": "allocation_not_found", "status": 404}', 'an unknown allocation: 404');
SELECT is(pg_temp.error_of('SELECT api.mint_terminal_token(NULL)'),
          '{"code": "invalid_argument", "status": 400}', 'a NULL allocation: 400');
SELECT set_config('request.jwt.claims', jsonb_build_object('role', 'pgcloud_user', 'sub', :alice)::text, true);
SELECT is(pg_temp.error_of(format('SELECT api.mint_terminal_token(%L)', :a1)),
          '{"code": "terminal_no_session", "status": 400}', 'no sid claim (a service-account token): 400 terminal_no_session');
SELECT set_config('request.jwt.claims', '{"role": "pgcloud_anon"}', true);
SELECT is(pg_temp.error_of(format('SELECT api.mint_terminal_token(%L)', :a1)),
          '{"code": "unauthenticated", "status": 401}', 'anonymous: 401');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'terminal.token_minted' AND target_id = :a1)::int, 6,
          'every mint is audited');

-- ---- redeem -------------------------------------------------------------------
SELECT pg_temp.mint(:alice, :sid, :a1) AS tok \gset
SELECT is((pg_temp.redeem(:'tok') - 'terminal_session_id' - 'session_id'),
          jsonb_build_object('allocation_id', :a1, 'user_id', :alice, 'owner_id', :alice, 'posix_username', 'alice',
                             'address', '10.0.0.1', 'hostname', 'gpu-01'),
          'the relay redeems it: node address, POSIX user, allocation, user');
SELECT is(pg_temp.error_of(format('SELECT pg_temp.redeem(%L)', :'tok')),
          '{"code": "terminal_token_used", "status": 409}', 'a second redeem: 409 terminal_token_used');
SELECT is(pg_temp.error_of('SELECT pg_temp.redeem(''pgt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'')'),
          '{"code": "terminal_token_invalid", "status": 401}', 'an unknown token: 401');
SELECT is(pg_temp.error_of('SELECT pg_temp.redeem(''not a token'')'),
          '{"code": "terminal_token_invalid", "status": 401}', 'garbage: 401');
SELECT pg_temp.mint(:alice, :sid, :a1) AS tok2 \gset
SELECT pg_temp.as_relay('inventory:read');
SELECT is(pg_temp.error_of(format('SELECT api.service_redeem_terminal_token(%L)', :'tok2')),
          '{"code": "insufficient_scope", "status": 403}', 'a service without terminal:redeem: 403');
SELECT pg_temp.as_user(:alice, :sid);
SELECT is(pg_temp.error_of(format('SELECT api.service_redeem_terminal_token(%L)', :'tok2')),
          '{"code": "forbidden", "status": 403}', 'a user cannot redeem: 403');
SELECT is(has_function_privilege('pgcloud_user', 'api.service_redeem_terminal_token(text)', 'EXECUTE'), false,
          'pgcloud_user has no EXECUTE on redeem');
UPDATE terminal.tokens SET created_at = now() - interval '2 min', expires_at = now() - interval '1 s'
 WHERE token_hash = terminal.token_hash(:'tok2');
SELECT is(pg_temp.error_of(format('SELECT pg_temp.redeem(%L)', :'tok2')),
          '{"code": "terminal_token_expired", "status": 401}', 'an expired token: 401');

SELECT pg_temp.as_relay();
SELECT is(api.service_terminal_refused(:'tok', 'terminal_token_used') ->> 'audited', 'true', 'a relay records a refusal');
SELECT is((SELECT details ->> 'code' || ' ' || result || ' ' || target_id FROM pgcloud.audit_logs
            WHERE action = 'terminal.token_refused' ORDER BY id DESC LIMIT 1),
          'terminal_token_used rejected ' || :a1, '... audited as terminal.token_refused on the allocation');
SELECT is((SELECT count(*) FROM pgcloud.audit_logs WHERE details::text LIKE '%' || :'tok' || '%')::int, 0, '... without the token');
SELECT is(pg_temp.error_of('SELECT api.service_terminal_refused(NULL, ''Bad Code'')'), '{"code": "invalid_argument", "status": 400}',
          'the code must be a catalogued code');

-- ---- death with the session and the allocation ----------------------------------------
SELECT pg_temp.mint(:alice, :sid2, :a1) AS tok3 \gset
SELECT pg_temp.mint(:alice, :sid2, :a1) AS tok4 \gset
SELECT pg_temp.redeem(:'tok4') ->> 'terminal_session_id' AS ts4 \gset
SELECT pg_temp.handle('terminal', 'session.revoked', :sid2, jsonb_build_object('session_id', :sid2, 'user_id', :alice));
SELECT is(pg_temp.error_of(format('SELECT pg_temp.redeem(%L)', :'tok3')),
          '{"code": "terminal_token_revoked", "status": 401}', 'session.revoked: its tokens die');
SELECT is(pg_temp.error_of(format('SELECT pg_temp.mint(%L, %L, %L)', :alice, :sid2, :a1)),
          '{"code": "session_revoked", "status": 401}', '... and it mints no more');
SELECT pg_temp.as_relay();
SELECT is(api.service_terminal_heartbeat(jsonb_build_array(jsonb_build_object('id', :'ts4', 'bytes_in', 5, 'bytes_out', 7))),
          jsonb_build_object('close', jsonb_build_array(jsonb_build_object('id', :'ts4', 'reason', 'session_revoked'))),
          '... and the relay is told to close its open terminal');
SELECT is(api.service_end_terminal_session(:'ts4', 'session_revoked', 10, 20) - 'terminal_session_id',
          '{"state": "ended", "bytes_in": 10, "bytes_out": 20, "end_reason": "session_revoked"}', 'the relay ends it with its bytes');
SELECT is(api.service_end_terminal_session(:'ts4', 'closed', 11, 21) ->> 'end_reason', 'session_revoked',
          'ending it again changes nothing');
SELECT is((SELECT details - 'terminal_session_id' - 'seconds' - 'user_id' FROM pgcloud.audit_logs
            WHERE action = 'terminal.session_ended' ORDER BY id DESC LIMIT 1),
          '{"relay": "relay-tap", "reason": "session_revoked", "bytes_in": 10, "bytes_out": 20}', 'the end is audited with the bytes');
SELECT is(pg_temp.error_of('SELECT api.service_end_terminal_session(''7e7e0000-0000-4000-8000-00000000dead'', ''closed'', 0, 0)'),
          '{"code": "terminal_session_not_found", "status": 404}', 'ending an unknown session: 404');
SELECT is(pg_temp.error_of(format('SELECT api.service_end_terminal_session(%L, %L, -1, 0)', :'ts4', 'closed')),
          '{"code": "invalid_argument", "status": 400}', 'negative bytes: 400');

SELECT pg_temp.mint(:alice, :sid, :a3) AS tok5 \gset
SELECT pg_temp.mint(:alice, :sid, :a3) AS tok6 \gset
SELECT pg_temp.redeem(:'tok6') ->> 'terminal_session_id' AS ts6 \gset
-- allocation.releasing (the release requested) ends access at once; released and
-- failed do the same (test/t/terminal_browser.pl releases one in the browser).
SELECT pg_temp.handle('terminal', 'allocation.releasing', :a3, jsonb_build_object('allocation_id', :a3, 'user_id', :alice));
SELECT is(pg_temp.error_of(format('SELECT pg_temp.redeem(%L)', :'tok5')),
          '{"code": "terminal_token_revoked", "status": 401}', 'allocation.releasing: its tokens die');
SELECT is(pg_temp.error_of(format('SELECT pg_temp.mint(%L, %L, %L)', :alice, :sid, :a3)),
          '{"code": "allocation_not_active", "status": 409}', '... no token after it: 409');
SELECT is((SELECT close_requested FROM terminal.sessions WHERE id = :'ts6'), 'allocation_ended', '... its open terminal is to close');

-- ---- app members ------------------------------------------------------------------------
SELECT pg_temp.handle('terminal', 'app.member_added', '7e7e0000-0000-4000-8000-0000000001a1', jsonb_build_object('instance_id', '7e7e0000-0000-4000-8000-0000000001a1',
                  'allocation_id', :a1, 'user_id', :bob, 'role', 'viewer'));
SELECT is(pg_temp.error_of(format('SELECT pg_temp.mint(%L, %L, %L)', :bob, :sid, :a1)),
          '{"code": "allocation_not_found", "status": 404}', 'an app viewer may not open a terminal');
SELECT pg_temp.handle('terminal', 'app.member_added', '7e7e0000-0000-4000-8000-0000000001a1', jsonb_build_object('instance_id', '7e7e0000-0000-4000-8000-0000000001a1',
                  'allocation_id', :a1, 'user_id', :bob, 'role', 'editor'));
SELECT pg_temp.mint(:bob, :sid, :a1) AS tokb \gset
SELECT is(pg_temp.redeem(:'tokb') ->> 'posix_username', 'alice', 'an app editor may: the login is the allocation owner''s');
SELECT pg_temp.mint(:bob, :sid, :a1) AS tokb2 \gset
SELECT pg_temp.handle('terminal', 'app.member_removed', '7e7e0000-0000-4000-8000-0000000001a1', jsonb_build_object('instance_id', '7e7e0000-0000-4000-8000-0000000001a1',
                  'user_id', :bob));
SELECT is(pg_temp.error_of(format('SELECT pg_temp.redeem(%L)', :'tokb2')),
          '{"code": "terminal_token_revoked", "status": 401}', 'a removed member''s tokens die');
SELECT is((SELECT count(*) FROM terminal.sessions WHERE user_id = :bob AND close_requested = 'member_removed')::int, 1,
          '... and their terminals close');

-- ---- operators, lost relays -------------------------------------------------------------
SELECT set_config('request.jwt.claims', '', true);
SELECT is(jsonb_array_length(api.admin_terminal_sessions()), 3, 'operators list the live sessions');
SELECT is(jsonb_array_length(api.admin_terminal_sessions(NULL)), 4, '... or all of them');
SELECT pg_temp.as_user(:alice, :sid);
SELECT is(pg_temp.error_of('SELECT api.admin_terminal_sessions()'), '{"code": "forbidden", "status": 403}', 'users may not');
UPDATE terminal.sessions SET last_seen_at = now() - interval '1 hour' WHERE state = 'live';
SELECT set_config('request.jwt.claims', '', true);
SELECT is(jsonb_array_length(api.admin_terminal_sessions()), 0, 'sessions of a relay that stopped reporting are ended');
SELECT is((SELECT count(*) FROM terminal.sessions WHERE end_reason = 'relay_lost')::int, 3, '... as relay_lost');
SELECT pg_temp.mint(:alice, :sid, :a1) AS tok7 \gset
SELECT pg_temp.redeem(:'tok7') ->> 'terminal_session_id' AS ts7 \gset
SELECT pg_temp.as_relay();
SELECT is(api.service_terminal_relay_started() ->> 'ended_sessions', '1', 'a restarted relay ends what it left live');
SELECT is((SELECT end_reason FROM terminal.sessions WHERE id = :'ts7'), 'relay_restarted', '... as relay_restarted');
SELECT is(pg_temp.error_of('SELECT api.service_terminal_heartbeat(''{}'')'), '{"code": "invalid_argument", "status": 400}',
          'a heartbeat must be an array');
SELECT is(pg_temp.error_of('SELECT api.service_terminal_heartbeat(''[{"id": "x"}]'')'), '{"code": "invalid_argument", "status": 400}',
          '... of {id: uuid, ...}');
SELECT is(api.service_terminal_heartbeat(jsonb_build_array(jsonb_build_object('id', :'ts7'))),
          jsonb_build_object('close', jsonb_build_array(jsonb_build_object('id', :'ts7', 'reason', 'not_live'))),
          'a heartbeat for an ended session: close it (not_live)');

-- ---- tokens only as hashes ---------------------------------------------------------------
SELECT is((SELECT count(*) FROM terminal.tokens t WHERE t::text LIKE '%' || :'tok7' || '%')::int, 0, 'no token is stored in plain text');

-- ---- the scheduler ------------------------------------------------------------------------------------
SELECT is((SELECT function FROM pgcloud.jobs WHERE job = 'terminal.reap_sessions'), 'terminal.reap_sessions()',
    'the reaper of lost relays is a job installed with terminal');
SELECT is((SELECT schedule FROM pgcloud.jobs WHERE job = 'terminal.reap_sessions'),
    'every 10 s (policy terminal.reap_interval_seconds)', 'on its policy interval');

SELECT * FROM finish();
ROLLBACK;
