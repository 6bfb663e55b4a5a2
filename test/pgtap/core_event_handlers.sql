-- One handler per event: every subscription of the registry has its handler
-- <service>.on_<event type>(pgcloud.event_envelope), no handler lacks a
-- subscription, handlers have the one signature and run as their service;
-- the core checks the payload (a JSON object) once, before any handler runs.
-- services: core
BEGIN;
SELECT * FROM no_plan();

-- pgcloud.event_matches (C, shared with the NATS consumer's skipping of
-- events a durable does not apply) answers as the SQL definition it
-- replaced, over patterns and types cut from the registry's event types and
-- their edge cases.
CREATE FUNCTION pg_temp.event_matches_sql(pattern text, event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN pattern LIKE '%.>' THEN starts_with(event_type, left(pattern, -1))
        WHEN pattern LIKE '%.*' THEN starts_with(event_type, left(pattern, -1))
                                  AND strpos(substr(event_type, length(pattern)), '.') = 0
        ELSE pattern = event_type
    END $$;
CREATE TEMP TABLE em_types AS
    SELECT DISTINCT t FROM pgcloud.services s, unnest(s.publishes) AS t
    UNION SELECT unnest(ARRAY['', '.', 'a', 'a.', 'a.b', 'a.b.c', 'a.bc', 'ab.c', '.x', 'x.y.z.w', 'allocation', '%.x']);
CREATE TEMP TABLE em_patterns AS
    SELECT t AS p FROM em_types
    UNION SELECT split_part(t, '.', 1) || '.*' FROM em_types
    UNION SELECT split_part(t, '.', 1) || '.>' FROM em_types
    UNION SELECT event_type FROM pgcloud.subscriptions
    UNION SELECT unnest(ARRAY['.>', '.*', '>', '*', 'a.*.c', 'a.b.>', '%.>', '_.*', 'a.>x', 'a*']);
SELECT ok((SELECT count(*) FROM em_patterns) > 50 AND (SELECT count(*) FROM em_types) > 20, 'a sample of patterns and types');
SELECT is((SELECT count(*)::int FROM em_patterns, em_types
            WHERE pgcloud.event_matches(p, t) IS DISTINCT FROM pg_temp.event_matches_sql(p, t)), 0,
    'pgcloud.event_matches agrees with its SQL definition on every pattern and type of the sample');
SELECT ok((SELECT count(*) FILTER (WHERE pgcloud.event_matches(p, t)) FROM em_patterns, em_types) > 100,
    '... many of which match');
-- The outbox's check of event_type (pgcloud.is_event_type, C) accepts
-- exactly what the regular expression it replaced accepted.
SELECT is((SELECT count(*)::int FROM (SELECT t FROM em_types UNION SELECT p FROM em_patterns
                                       UNION SELECT unnest(ARRAY['A.b', 'a.B', 'a..b', 'a.b.', '1a.b', 'a.1b', 'a_.b_1',
                                                                 'a.b' || chr(10), 'a b.c', 'é.b', repeat('a', 300) || '.b'])) x
            WHERE pgcloud.is_event_type(t) IS DISTINCT FROM (t ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$')), 0,
    'pgcloud.is_event_type agrees with the regular expression it replaced');
SELECT ok((SELECT count(*) FILTER (WHERE pgcloud.is_event_type(t)) FROM em_types) > 10, '... which accepts the registry''s types');
SELECT is((SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'outbox_event_type_check'),
    'CHECK (pgcloud.is_event_type(event_type))', 'the outbox checks its event types with it');

-- The event types a subscription can receive: the concrete types published
-- (by a service, or by the core: platform.*, audit.recorded) matching it.
CREATE TEMP VIEW published AS
    SELECT DISTINCT t AS event_type FROM pgcloud.services s, unnest(s.publishes) t
    UNION SELECT 'platform.alert' UNION SELECT 'audit.recorded';
CREATE TEMP VIEW routes AS
    SELECT sub.subscriber, sub.event_type AS pattern, p.event_type, s.schema_name
      FROM pgcloud.subscriptions sub
      JOIN pgcloud.services s ON s.name = sub.subscriber
      JOIN published p ON pgcloud.event_matches(sub.event_type, p.event_type);
-- Every function of a service schema named on_* that takes an event.
CREATE TEMP VIEW handlers AS
    SELECT s.name AS service, p.oid, p.proname, p.prosecdef, p.prorettype, p.proconfig, r.rolname AS owner
      FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      JOIN pgcloud.services s ON s.schema_name = n.nspname
      JOIN pg_roles r ON r.oid = p.proowner
     WHERE p.proname LIKE 'on\_%' AND p.pronargs = 1 AND p.proargtypes[0] = 'pgcloud.event_envelope'::regtype;

SELECT is((SELECT count(*)::int FROM pgcloud.services s JOIN pg_namespace n ON n.nspname = s.schema_name), 13,
    'every service is installed here (the checks below cover all of them)');
SELECT is_empty($$
    SELECT sub.subscriber, sub.event_type FROM pgcloud.subscriptions sub
     WHERE NOT EXISTS (SELECT 1 FROM routes r WHERE r.subscriber = sub.subscriber AND r.pattern = sub.event_type)
$$, 'every subscription in the registry matches an event type someone publishes');
SELECT is_empty($$
    SELECT r.subscriber, r.event_type, format('%s.%s(pgcloud.event_envelope)', r.schema_name, pgcloud.handler_name(r.event_type))
      FROM routes r WHERE pgcloud.handler_of(r.subscriber, r.event_type) IS NULL
$$, 'every subscription has its handler <service>.on_<event type>(pgcloud.event_envelope)');
SELECT is_empty($$
    SELECT h.oid::regprocedure FROM handlers h
     WHERE NOT EXISTS (SELECT 1 FROM routes r
                        WHERE r.subscriber = h.service AND pgcloud.handler_name(r.event_type) = h.proname)
$$, 'no handler lacks a subscription');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      JOIN pgcloud.services s ON s.schema_name = n.nspname
     WHERE p.proname LIKE 'on\_%'
       AND p.oid::regprocedure::text <> format('%I.%I(pgcloud.event_envelope)', n.nspname, p.proname)
       -- HTTP result callbacks (pgcloud.http_request) are the other on_* functions
       AND p.oid::regprocedure::text <> format('%I.%I(uuid,integer,jsonb,text,jsonb,boolean)', n.nspname, p.proname)
$$, 'every on_* function is a handler with the one signature (event pgcloud.event_envelope), or an HTTP callback');
SELECT is_empty($$
    SELECT h.oid::regprocedure FROM handlers h
     WHERE h.prorettype <> 'void'::regtype OR NOT h.prosecdef OR h.owner <> 'pgcloud_svc_' || h.service
        OR NOT EXISTS (SELECT 1 FROM unnest(h.proconfig) c WHERE c LIKE 'search\_path=%')
$$, 'every handler returns void, is SECURITY DEFINER as its service and pins its search_path');
SELECT is_empty($$
    SELECT h.oid::regprocedure FROM handlers h WHERE NOT has_function_privilege('pgcloud_svc_core', h.oid, 'EXECUTE')
$$, 'the core''s delivery may call every handler');
SELECT is_empty($$
    SELECT h.oid::regprocedure FROM handlers h
     WHERE has_function_privilege('pgcloud_anon', h.oid, 'EXECUTE') OR has_function_privilege('pgcloud_user', h.oid, 'EXECUTE')
        OR has_function_privilege('pgcloud_admin', h.oid, 'EXECUTE') OR has_function_privilege('pgcloud_service', h.oid, 'EXECUTE')
        OR has_function_privilege('pgcloud_services', h.oid, 'EXECUTE')
$$, 'no API role and no other service may call a handler');
SELECT is(pgcloud.handler_of('billing', 'payment.succeeded'), 'billing.on_payment_succeeded(pgcloud.event_envelope)'::regprocedure,
    'billing''s payment.succeeded goes to billing.on_payment_succeeded');
SELECT is(pgcloud.handler_of('admin', 'allocation.releasing'), 'admin.on_allocation_releasing(pgcloud.event_envelope)'::regprocedure,
    'a pattern subscription (admin: allocation.>) has a handler per matching type');

-- ---- shared helpers live once, in core ---------------------------------------------
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      JOIN pgcloud.services s ON s.schema_name = n.nspname
     WHERE p.proname IN ('require_user', 'payload_uuid', 'payload_text', 'payload_time', 'uuid_of', 'on_event')
$$, 'no service keeps its own require_user, payload accessors or on_event dispatcher');
SELECT is((SELECT array_agg(DISTINCT p.provolatile::text) FROM pg_proc p
            WHERE p.pronamespace = 'pgcloud'::regnamespace AND p.proname IN ('payload_uuid', 'payload_text', 'payload_time')),
          ARRAY['i'], 'the payload accessors are IMMUTABLE (they read only their arguments)');
SELECT is((SELECT array_agg(code || '=' || service ORDER BY code) FROM pgcloud.error_codes
            WHERE code IN ('allocation_not_found', 'allocation_not_active', 'posix_identity_missing', 'sku_not_found',
                           'image_not_found')),
          ARRAY['allocation_not_active=core', 'allocation_not_found=core', 'image_not_found=core',
                'posix_identity_missing=core', 'sku_not_found=core'],
    'error codes several services raise are catalogued once, by the core');
SELECT is(pg_temp.error_of('SELECT pgcloud.require_user()') ->> 'code', 'unauthenticated',
    'pgcloud.require_user() refuses a request without a user');
SELECT set_config('request.jwt.claims', '{"role": "pgcloud_user", "sub": "b0000000-0000-4000-8000-0000000000aa"}', true);
SELECT is(pgcloud.require_user(), 'b0000000-0000-4000-8000-0000000000aa'::uuid, 'and returns the signed-in user');
SELECT set_config('request.jwt.claims', '', true);

-- ---- delivery: the payload is checked once, in the core ---------------------------
SELECT pgcloud.set_policy('core.max_delivery_attempts', '1');
SELECT pgcloud.set_policy('core.delivery_retry_base_ms', '0');
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;

SELECT is(pg_temp.error_of($$SELECT pgcloud.deliver('billing', gen_random_uuid(), 'user.created', 'user',
                                  'b0000000-0000-4000-8000-000000000001', '[1, 2]', '{}')$$) ->> 'code',
    'invalid_event', 'deliver() refuses a payload that is not a JSON object (invalid_event)');
SELECT is(pg_temp.error_of($$SELECT pgcloud.deliver('storage', gen_random_uuid(), 'user.created', 'user',
                                  'b0000000-0000-4000-8000-000000000001', '"text"', '{}')$$) ->> 'code',
    'invalid_event', 'for every subscriber, before its handler');
SELECT is(pgcloud.deliver('billing', gen_random_uuid(), 'something.else', 'x', 'x', '{}', '{}'), 'ignored',
    'an event type the service does not subscribe to is ignored');
SELECT is(pgcloud.deliver('billing', 'b0000000-0000-4000-8000-0000000000e1', 'user.created', 'user',
                          'b0000000-0000-4000-8000-000000000001',
                          '{"user_id": "b0000000-0000-4000-8000-000000000001"}', '{}'), 'applied',
    'a subscribed event is applied by its handler');
SELECT ok(EXISTS (SELECT 1 FROM billing.accounts WHERE account_id = 'b0000000-0000-4000-8000-000000000001'),
    'billing.on_user_created opened the account');
SELECT is(pgcloud.deliver('billing', 'b0000000-0000-4000-8000-0000000000e1', 'user.created', 'user',
                          'b0000000-0000-4000-8000-000000000001', '{}', '{}'), 'duplicate',
    'a second delivery of the same event is a duplicate (inbox)');

-- A poison event through the relay: dead-lettered for each subscriber, applied by none.
INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
VALUES ('b0000000-0000-4000-8000-0000000000e2', 'user.created', 'user', 'b0000000-0000-4000-8000-000000000002',
        '["not", "an", "object"]', '{}', 'auth');
SELECT is(pgcloud.relay_once(), 1, 'the relay settles the poison event');
SELECT is((SELECT count(*)::int FROM pgcloud.dead_letters WHERE event_id = 'b0000000-0000-4000-8000-0000000000e2'),
          (SELECT count(DISTINCT subscriber)::int FROM pgcloud.subscriptions WHERE pgcloud.event_matches(event_type, 'user.created')),
    'one dead letter per subscriber of user.created');
SELECT is_empty($$SELECT 1 FROM pgcloud.dead_letters WHERE event_id = 'b0000000-0000-4000-8000-0000000000e2'
                   AND error NOT LIKE '%the payload must be a JSON object%'$$,
    'each says the payload is not a JSON object');
SELECT is_empty($$SELECT 1 FROM pgcloud.inbox WHERE event_id = 'b0000000-0000-4000-8000-0000000000e2'$$,
    'no subscriber applied it');

-- A subscription whose handler is missing fails like a failing handler.
INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on)
VALUES ('taphandlers', 'taphandlers', 'taphandlers', 'domain', '/taphandlers', '{}', '{taph.*}', '{}');
INSERT INTO pgcloud.subscriptions (subscriber, event_type) VALUES ('taphandlers', 'taph.*');
CREATE SCHEMA taphandlers;
SELECT throws_like($$SELECT pgcloud.deliver('taphandlers', gen_random_uuid(), 'taph.missing', 'x', 'x', '{}', '{}')$$,
    '%has no handler on_taph_missing(pgcloud.event_envelope)%', 'a subscribed type without its handler is an error, not a silent no-op');

SELECT * FROM finish();
ROLLBACK;
