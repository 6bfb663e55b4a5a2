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

-- Signing-key rotation: auth announces the published key set
-- (signing_key.published) before the new key signs; every database's core
-- stores the latest set for its own PostgREST (pgcloud.published_jwks()).
-- Attacks: a key set forged by another service, one on another subject, one
-- carrying private key material, and a replayed older set.
SELECT is(pgcloud.published_jwks(), NULL, 'before any announcement a database has learnt no key set');
SELECT api.admin_rotate_signing_key(120) AS rotated \gset
SELECT is((SELECT payload -> 'jwks' FROM pgcloud.outbox WHERE event_type = 'signing_key.published'
            AND aggregate_id = :'rotated'::jsonb ->> 'kid'), api.jwks(),
    'a rotation announces signing_key.published with the whole published key set');
SELECT ok((SELECT (payload ->> 'activates_at')::timestamptz > now() + interval '100 seconds' FROM pgcloud.outbox
            WHERE event_type = 'signing_key.published' AND aggregate_id = :'rotated'::jsonb ->> 'kid'),
    '... before the new key signs');
SELECT is(pgcloud.consume_event('billing', jsonb_build_object('event_id', '8a000000-0000-4000-8000-000000000011',
    'event_type', 'signing_key.published', 'source', 'billing', 'aggregate_type', 'signing_key', 'aggregate_id', 'x',
    'payload', jsonb_build_object('published_at', now(), 'jwks', '{"keys": [{"kid": "forged", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}'::jsonb)),
    'pgcloud.signing_key.published'), 'ignored', 'a key set forged by billing is not applied');
SELECT is(pgcloud.published_jwks(), NULL, '... and is not learnt');
SELECT is(pgcloud.consume_event('billing', jsonb_build_object('event_id', '8a000000-0000-4000-8000-000000000012',
    'event_type', 'signing_key.published', 'source', 'auth', 'aggregate_type', 'signing_key', 'aggregate_id', 'x',
    'payload', jsonb_build_object('published_at', now(), 'jwks', '{"keys": [{"kid": "forged", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}'::jsonb)),
    'pgcloud.user.created'), 'ignored', 'a key set on another subject is not applied');
SELECT is(pgcloud.published_jwks(), NULL, '... and is not learnt');
SELECT is(pg_temp.error_text_of($$SELECT pgcloud.consume_event('billing', jsonb_build_object('event_id', '8a000000-0000-4000-8000-000000000013',
    'event_type', 'signing_key.published', 'source', 'auth', 'aggregate_type', 'signing_key', 'aggregate_id', 'x',
    'payload', jsonb_build_object('published_at', now(), 'jwks', '{"keys": [{"kid": "k", "kty": "EC", "d": "secret"}]}'::jsonb)),
    'pgcloud.signing_key.published')$$), 'invalid_argument 400', 'a key set carrying a private key is refused');
SELECT is(pgcloud.consume_event('billing', e, 'pgcloud.signing_key.published'), 'ignored',
          'billing does not subscribe to signing_key.published ...')
  FROM (SELECT jsonb_build_object('event_id', event_id, 'event_type', event_type, 'source', source,
               'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'payload', payload) AS e
          FROM pgcloud.outbox WHERE event_type = 'signing_key.published' AND aggregate_id = :'rotated'::jsonb ->> 'kid') o;
SELECT is(pgcloud.published_jwks(), api.jwks(), '... but its database''s core learns the announced key set');
SELECT ok(pgcloud.published_jwks() -> 'keys' @> jsonb_build_array(jsonb_build_object('kid', :'rotated'::jsonb ->> 'kid')),
    '... which holds the new key');
SELECT is(pgcloud.learn_jwks('{"keys": []}', now() - interval '1 hour'), false, 'an older key set does not replace it');
SELECT is(pgcloud.published_jwks(), api.jwks(), '... the stored set is unchanged');
-- The event types a durable acks without a transaction (the consumer skips
-- pgcloud.consume_event for those no pattern of
-- pgcloud.nats_applied_patterns matches) are exactly those consume_event
-- would answer 'ignored' for: never one its service subscribes to, never a
-- platform event (session.revoked, signing_key.published: every database
-- applies them), whether the registry knows the type or not.
CREATE TEMP TABLE sample_types AS
    SELECT DISTINCT t FROM pgcloud.services s, unnest(s.publishes) AS t
    UNION SELECT unnest(pgcloud.platform_event_types())
    UNION SELECT unnest(ARRAY['ops.note', 'bench.tick', 'allocation.x.y', 'session.revoked.x', 'user']);
SELECT is((SELECT count(*)::int FROM pgcloud.services s, sample_types st
            WHERE (pgcloud.is_subscribed(s.name, st.t) OR st.t = ANY (pgcloud.platform_event_types()))
                  IS DISTINCT FROM EXISTS (SELECT 1 FROM pgcloud.nats_applied_patterns(s.name) AS p
                                            WHERE pgcloud.event_matches(p, st.t))), 0,
    'a durable applies exactly the types its service subscribes to and the platform events');
SELECT is(ARRAY(SELECT DISTINCT m[1] FROM regexp_matches(
              (SELECT prosrc FROM pg_proc WHERE oid = 'pgcloud.consume_event(text, jsonb, text)'::regprocedure),
              $re$envelope ->> 'event_type' = '([a-z_.]+)'$re$, 'g') AS m ORDER BY 1),
    ARRAY(SELECT unnest(pgcloud.platform_event_types()) ORDER BY 1),
    'the event types consume_event applies whatever the subscriber are exactly pgcloud.platform_event_types()');
SELECT ok((SELECT bool_and(EXISTS (SELECT 1 FROM pgcloud.nats_applied_patterns(s.name) AS p
                                    WHERE pgcloud.event_matches(p, 'signing_key.published')))
             FROM pgcloud.services s),
    'every durable applies signing_key.published');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.nats_applied_patterns('billing') AS p WHERE pgcloud.event_matches(p, 'user.created')),
    'billing applies user.created (it subscribes)');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgcloud.nats_applied_patterns('billing') AS p WHERE pgcloud.event_matches(p, 'ssh_key.added')),
    'billing skips ssh_key.added (it does not subscribe) ...');
SELECT is(pgcloud.consume_event('billing',
    '{"event_id": "8a000000-0000-4000-8000-0000000000f1", "event_type": "ssh_key.added", "source": "releases",
      "aggregate_type": "ssh_key", "aggregate_id": "x", "payload": {}}', 'pgcloud.ssh_key.added'),
    'ignored', '... which consume_event would only have ignored');
SELECT ok(NOT EXISTS (SELECT 1 FROM pgcloud.nats_applied_patterns('billing') AS p WHERE pgcloud.event_matches(p, 'ops.note')),
    'billing skips ops.note, a type no service publishes ...');
SELECT is(pgcloud.consume_event('billing',
    '{"event_id": "8a000000-0000-4000-8000-0000000000f2", "event_type": "ops.note", "source": "postgres",
      "aggregate_type": "note", "aggregate_id": "x", "payload": {}}', 'pgcloud.ops.note'),
    'ignored', '... which consume_event would only have ignored');
SELECT * FROM finish();
ROLLBACK;
