-- Embedded delivery (pgcloud.relay_once): exactly-once effect through the
-- services: core
-- inbox, per-aggregate order behind retries, dead letters after N tries.
BEGIN;
SELECT * FROM no_plan();

-- A test subscriber: registered like a service, with its handler.
INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on)
VALUES ('taprelay', 'taprelay', 'taprelay', 'domain', '/taprelay', '{}', '{tap.*}', '{}');
INSERT INTO pgcloud.subscriptions (subscriber, event_type) VALUES ('taprelay', 'tap.*');
CREATE SCHEMA taprelay;
CREATE TABLE taprelay.effects (n serial, event_id uuid, aggregate_id text, payload jsonb);
CREATE FUNCTION taprelay.apply(event pgcloud.event_envelope) RETURNS void LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
BEGIN
    IF event.payload ? 'poison' THEN
        RAISE EXCEPTION 'poisoned event for alice@example.com';
    END IF;
    INSERT INTO taprelay.effects (event_id, aggregate_id, payload) VALUES (event.event_id, event.aggregate_id, event.payload);
END $$;
-- One handler per tap.* type this test emits (<schema>.on_<type>).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['one', 'two', 'bad', 'after_bad', 'other'] LOOP
        EXECUTE format('CREATE FUNCTION taprelay.on_tap_%s(event pgcloud.event_envelope) RETURNS void LANGUAGE sql
                        SECURITY DEFINER SET search_path = pg_catalog AS $f$ SELECT taprelay.apply(event) $f$', t);
    END LOOP;
END $$;
-- Delivery runs as the core (pgcloud_svc_core), which calls the handler.
GRANT USAGE ON SCHEMA taprelay TO pgcloud_svc_core;

SELECT pgcloud.set_policy('core.max_delivery_attempts', '2');
SELECT pgcloud.set_policy('core.delivery_retry_base_ms', '0');
-- (after set_policy: its audit rows are announced as audit.recorded too)
UPDATE pgcloud.outbox SET published_at = now() WHERE published_at IS NULL;

SELECT pgcloud.emit('tap.one', 'thing', 'a', '{"i": 1}');
SELECT pgcloud.emit('tap.two', 'thing', 'b', '{"i": 2}');
SELECT pgcloud.emit('other.type', 'thing', 'c', '{"i": 3}');
SELECT is(pgcloud.relay_once(), 3, 'three events published');
SELECT is((SELECT count(*)::int FROM taprelay.effects), 2, 'the subscriber got the two it subscribes to');
SELECT is((SELECT count(*)::int FROM pgcloud.inbox WHERE subscriber = 'taprelay'), 2, 'one inbox row each');

-- Redelivery (e.g. after a crash before published_at was recorded) has no second effect.
UPDATE pgcloud.outbox SET published_at = NULL WHERE event_type LIKE 'tap.%';
SELECT is(pgcloud.relay_once(), 2, 'redelivered');
SELECT is((SELECT count(*)::int FROM taprelay.effects), 2, 'no second effect');
SELECT is(pgcloud.deliver('taprelay', (SELECT event_id FROM pgcloud.outbox WHERE event_type = 'tap.one'),
          'tap.one', 'thing', 'a', '{}', '{}'), 'duplicate', 'deliver() reports the duplicate');

-- A poison event blocks its aggregate, not the others; dead-lettered after 2 tries.
SELECT pgcloud.emit('tap.bad', 'thing', 'p', '{"poison": true}');
SELECT pgcloud.emit('tap.after_bad', 'thing', 'p', '{"i": 5}');
SELECT pgcloud.emit('tap.other', 'thing', 'q', '{"i": 6}');
SELECT is(pgcloud.relay_once(), 1, 'first pass: only the other aggregate''s event is published');
SELECT is((SELECT aggregate_id FROM taprelay.effects ORDER BY n DESC LIMIT 1), 'q', 'the other aggregate flowed');
SELECT is((SELECT attempts FROM pgcloud.delivery_failures), 1, 'the failure is counted');
SELECT ok((SELECT last_error FROM pgcloud.delivery_failures) NOT LIKE '%alice@example.com%', 'the stored error is scrubbed');
SELECT is(pgcloud.relay_once(), 2, 'second pass: dead-lettered, then the aggregate''s next event flows');
SELECT is((SELECT count(*)::int FROM pgcloud.dead_letters WHERE subscriber = 'taprelay'), 1, 'one dead letter');
SELECT is((SELECT payload ->> 'kind' FROM pgcloud.outbox WHERE event_type = 'platform.alert' ORDER BY id DESC LIMIT 1),
    'dead_letter', 'an alert event was emitted');
SELECT is((SELECT array_agg(aggregate_id ORDER BY n) FROM taprelay.effects), ARRAY['a', 'b', 'q', 'p'],
    'order: the poisoned aggregate''s later event came after the poison was settled');

SELECT * FROM finish();
ROLLBACK;
