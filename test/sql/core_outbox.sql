-- pgcloud.emit(): validation, headers, per-aggregate order.
BEGIN;
SET LOCAL request.headers = '{"x-correlation-id": "corr-1"}';
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "22222222-2222-4222-8222-222222222222"}';
SELECT pgcloud.emit('allocation.activated', 'allocation', 'a1', '{"price": 100}') IS NOT NULL AS emitted;
SELECT pgcloud.emit('operator.custom_thing', 'thing', 't1', NULL) IS NOT NULL AS emitted_null_payload;
COMMIT;
SELECT event_type, aggregate_type, aggregate_id, payload, headers - 'source' AS headers,
       source = current_user::text AS source_is_caller, headers ->> 'source' = source AS header_source, published_at
  FROM pgcloud.outbox ORDER BY id;
SELECT count(DISTINCT event_id) = count(*) AS unique_ids,
       bool_and(event_id::text ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$') AS v4
  FROM pgcloud.outbox;
-- emit() writes its row as an INSERT statement would (it does not plan one):
-- the identity, created_at = now(), the table's row triggers.
BEGIN;
CREATE TABLE public.outbox_seen (id bigint, created_at timestamptz, event_type text);
CREATE FUNCTION public.outbox_seen() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS
$$ BEGIN INSERT INTO public.outbox_seen VALUES (NEW.id, NEW.created_at, NEW.event_type); RETURN NEW; END $$;
CREATE TRIGGER outbox_seen AFTER INSERT ON pgcloud.outbox FOR EACH ROW EXECUTE FUNCTION public.outbox_seen();
SELECT pgcloud.emit('operator.trigger_check', 'thing', 't2', '{}') IS NOT NULL AS emitted,
       pgcloud.emit('operator.trigger_check', 'thing', 't2', NULL) IS NOT NULL AS emitted_again;
SELECT count(*) AS seen_by_row_trigger, bool_and(created_at = now()) AS at_transaction_start,
       max(id) - min(id) = 1 AS consecutive_ids, max(id) = (SELECT max(id) FROM pgcloud.outbox) AS latest,
       bool_and(event_type = 'operator.trigger_check') AS their_type
  FROM public.outbox_seen;
ROLLBACK;
-- emit() keeps the identity's sequence per backend; a new identity is used at once.
BEGIN;
SELECT pgcloud.emit('operator.identity_check', 'thing', 't3', '{}') IS NOT NULL AS emitted;
ALTER EXTENSION pgcloud_core DROP SEQUENCE pgcloud.outbox_id_seq;
ALTER TABLE pgcloud.outbox ALTER COLUMN id DROP IDENTITY;
ALTER TABLE pgcloud.outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH 5000000);
SELECT pgcloud.emit('operator.identity_check', 'thing', 't3', '{}') IS NOT NULL AS emitted_after;
SELECT max(id) AS new_identity FROM pgcloud.outbox;
ROLLBACK;
-- emit() keeps the outbox's check constraints ready per backend: a check
-- added, a function it calls replaced, or a check dropped applies at once.
BEGIN;
\set VERBOSITY terse
SELECT pgcloud.emit('operator.check_cache', 'thing', 'c1', '{}') IS NOT NULL AS emitted;
ALTER TABLE pgcloud.outbox ADD CONSTRAINT outbox_test_check CHECK (aggregate_id <> 'forbidden');
SAVEPOINT s;
SELECT pgcloud.emit('operator.check_cache', 'thing', 'forbidden', '{}');
ROLLBACK TO SAVEPOINT s;
CREATE FUNCTION public.outbox_test_ok(id text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT true $$;
ALTER TABLE pgcloud.outbox DROP CONSTRAINT outbox_test_check,
    ADD CONSTRAINT outbox_test_check CHECK (public.outbox_test_ok(aggregate_id));
SELECT pgcloud.emit('operator.check_cache', 'thing', 'c2', '{}') IS NOT NULL AS emitted_with_function_check;
CREATE OR REPLACE FUNCTION public.outbox_test_ok(id text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT id <> 'c3' $$;
SAVEPOINT s;
SELECT pgcloud.emit('operator.check_cache', 'thing', 'c3', '{}');
ROLLBACK TO SAVEPOINT s;
ALTER TABLE pgcloud.outbox DROP CONSTRAINT outbox_test_check;
SELECT pgcloud.emit('operator.check_cache', 'thing', 'forbidden', '{}') IS NOT NULL AS emitted_after_drop;
SELECT string_agg(aggregate_id, ',' ORDER BY id) AS written FROM pgcloud.outbox WHERE event_type = 'operator.check_cache';
\set VERBOSITY default
ROLLBACK;
-- aggregate_locked (the caller's lock orders the aggregate): the same row,
-- without emit()'s advisory lock; NULL means false. Input is checked alike.
BEGIN;
SELECT pgcloud.emit('operator.locked_check', 'thing', 'l1', '{"a": 1}', true) IS NOT NULL AS emitted_locked,
       pgcloud.emit('operator.locked_check', 'thing', 'l1', '{"a": 2}', NULL) IS NOT NULL AS emitted_null_flag;
SELECT count(*) FILTER (WHERE locktype = 'advisory') AS advisory_locks_held
  FROM pg_locks WHERE pid = pg_backend_pid();
SELECT string_agg(payload ->> 'a', ',' ORDER BY id) AS payloads, bool_and(headers ? 'correlation_id') AS headers
  FROM pgcloud.outbox WHERE event_type = 'operator.locked_check';
ROLLBACK;
BEGIN;
SELECT pgcloud.emit('operator.locked_check', 'thing', 'l2', '{}', true) IS NOT NULL AS emitted_locked_only;
SELECT count(*) FILTER (WHERE locktype = 'advisory') AS advisory_locks_held
  FROM pg_locks WHERE pid = pg_backend_pid();
ROLLBACK;
SELECT pgcloud.emit('Bad.Type', 'thing', 'l3', '{}', true);
SELECT pgcloud.emit('operator.locked_check', 'thing', 'l3', '[1]', true);
-- Invalid input is rejected with a catalogued error and writes nothing.
SELECT pgcloud.emit('Allocation.Activated', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation.', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('.allocation', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation..x', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation.activ-ated', 'allocation', 'a1', '{}');
SELECT pgcloud.emit(repeat('a', 130) || '.b', 'allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation.activated', 'Allocation', 'a1', '{}');
SELECT pgcloud.emit('allocation.activated', 'allocation', '', '{}');
SELECT pgcloud.emit('allocation.activated', 'allocation', repeat('x', 201), '{}');
SELECT pgcloud.emit('allocation.activated', 'allocation', 'a1', '[1,2]');
SELECT pgcloud.emit('allocation.activated', 'allocation', 'a1', '"str"');
SELECT pgcloud.emit(NULL, 'allocation', 'a1', '{}');
SELECT count(*) AS still_two FROM pgcloud.outbox;
-- Subscriptions come from the registry; patterns match like NATS subjects.
SELECT pgcloud.subscribers('allocation.activated');
SELECT pgcloud.subscribers('nobody.listens');
SELECT pgcloud.event_matches('allocation.>', 'allocation.activated'),
       pgcloud.event_matches('allocation.>', 'allocation.x.y'),
       pgcloud.event_matches('allocation.*', 'allocation.activated'),
       pgcloud.event_matches('allocation.*', 'allocation.x.y'),
       pgcloud.event_matches('allocation.*', 'allocationx.y'),
       pgcloud.event_matches('allocation.activated', 'allocation.activated');
SELECT pgcloud.event_matches('allocation.>', 'allocation') AS no_token,
       pgcloud.event_matches('allocation.*', 'allocation') AS no_token_either,
       pgcloud.event_matches('allocation.activated', 'allocation.activatedx') AS longer,
       pgcloud.event_matches('allocation.activatedx', 'allocation.activated') AS shorter,
       pgcloud.event_matches('a.*.c', 'a.b.c') AS inner_star_is_literal,
       pgcloud.event_matches('a.*.c', 'a.*.c') AS literal,
       pgcloud.event_matches('%.>', 'x.y') AS like_chars_literal,
       pgcloud.event_matches('', '') AS empty;
SELECT count(*) AS services FROM pgcloud.services;
