-- Database-per-service (issue 14): a session revoked in the auth database
-- reaches every other database as session.revoked, and the core of the
-- receiving database marks it revoked for its own pgcloud.pre_request().
-- Attack: a session.revoked forged by another service (or sent on another
-- subject) revokes nothing. Runs in one transaction, rolled back.
BEGIN;
SELECT * FROM no_plan();

SELECT is(pgcloud.consume_event('billing',
    '{"event_id": "8a000000-0000-4000-8000-000000000001", "event_type": "session.revoked", "source": "payments",
      "aggregate_type": "session", "aggregate_id": "8b000000-0000-4000-8000-000000000001",
      "payload": {"session_id": "8b000000-0000-4000-8000-000000000001", "tokens_valid_until": "2999-01-01T00:00:00Z"}}',
    'pgcloud.session.revoked'), 'ignored', 'a session.revoked forged by payments is not applied');
SELECT is((SELECT count(*) FROM pgcloud.revoked_sessions WHERE session_id = '8b000000-0000-4000-8000-000000000001')::int, 0,
    '... and revokes nothing');
SELECT is(pgcloud.consume_event('billing',
    '{"event_id": "8a000000-0000-4000-8000-000000000002", "event_type": "session.revoked", "source": "auth",
      "aggregate_type": "session", "aggregate_id": "8b000000-0000-4000-8000-000000000002",
      "payload": {"session_id": "8b000000-0000-4000-8000-000000000002"}}',
    'pgcloud.user.created'), 'ignored', 'a session.revoked on another subject is not applied');
SELECT ok((SELECT count(*) FROM pgcloud.revoked_sessions WHERE session_id = '8b000000-0000-4000-8000-000000000002') = 0,
    'a session.revoked on another subject revokes nothing');
SELECT is(pgcloud.consume_event('billing',
    '{"event_id": "8a000000-0000-4000-8000-000000000003", "event_type": "session.revoked", "source": "auth",
      "aggregate_type": "session", "aggregate_id": "8b000000-0000-4000-8000-000000000003",
      "payload": {"session_id": "8b000000-0000-4000-8000-000000000003", "tokens_valid_until": "2999-01-01T00:00:00Z"}}',
    'pgcloud.session.revoked'), 'ignored', 'billing does not subscribe to session.revoked ...');
SELECT ok((SELECT expires_at <= now() + interval '7 days' + interval '1 minute' FROM pgcloud.revoked_sessions
            WHERE session_id = '8b000000-0000-4000-8000-000000000003'),
    '... but its database''s core marks the session revoked (for at most 7 days)');
SELECT throws_ok($$
    SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "8c000000-0000-4000-8000-000000000001", "sid": "8b000000-0000-4000-8000-000000000003"}';
    SELECT pgcloud.pre_request()$$, 'PGRST', NULL, 'pgcloud.pre_request() in this database refuses the revoked session');
SELECT * FROM finish();
ROLLBACK;
