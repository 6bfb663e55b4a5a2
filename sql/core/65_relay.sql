-- Delivery of outbox events to subscribers: embedded (pgcloud.relay_once)
-- and NATS (pgcloud.consume_event, called by the consumer worker). Both go
-- through pgcloud.deliver(): the inbox row and the handler's effect commit
-- together, so a redelivered event has no second effect.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.max_delivery_attempts', '5', 'Tries before an event delivery goes to pgcloud.dead_letters.'),
    ('core.delivery_retry_base_ms', '200', 'First retry delay of a failed delivery (doubles each try, with jitter).'),
    ('core.relay_batch_size', '200', 'Events the relay handles per transaction.');

CREATE TABLE pgcloud.delivery_failures (
    subscriber      text NOT NULL,
    event_id        uuid NOT NULL,
    attempts        integer NOT NULL,
    last_error      text NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    PRIMARY KEY (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.delivery_failures IS 'Deliveries that failed and will be retried (embedded mode; in NATS mode JetStream redelivers).';
COMMENT ON COLUMN pgcloud.delivery_failures.subscriber IS 'The subscribing service.';
COMMENT ON COLUMN pgcloud.delivery_failures.event_id IS 'The event.';
COMMENT ON COLUMN pgcloud.delivery_failures.attempts IS 'Failed tries so far.';
COMMENT ON COLUMN pgcloud.delivery_failures.last_error IS 'The last error, scrubbed.';
COMMENT ON COLUMN pgcloud.delivery_failures.next_attempt_at IS 'Not retried before this time.';

CREATE TABLE pgcloud.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber      text NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    payload         jsonb NOT NULL,
    headers         jsonb NOT NULL,
    attempts        integer NOT NULL,
    error           text NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.dead_letters IS 'Event deliveries given up after core.max_delivery_attempts tries, with their last error; each raised a platform.alert event.';
COMMENT ON COLUMN pgcloud.dead_letters.id IS 'Entry number.';
COMMENT ON COLUMN pgcloud.dead_letters.subscriber IS 'The subscribing service whose handler failed.';
COMMENT ON COLUMN pgcloud.dead_letters.event_id IS 'The event.';
COMMENT ON COLUMN pgcloud.dead_letters.event_type IS 'Its type.';
COMMENT ON COLUMN pgcloud.dead_letters.aggregate_type IS 'Its aggregate type.';
COMMENT ON COLUMN pgcloud.dead_letters.aggregate_id IS 'Its aggregate id.';
COMMENT ON COLUMN pgcloud.dead_letters.payload IS 'Its payload.';
COMMENT ON COLUMN pgcloud.dead_letters.headers IS 'Its headers.';
COMMENT ON COLUMN pgcloud.dead_letters.attempts IS 'How many tries failed.';
COMMENT ON COLUMN pgcloud.dead_letters.error IS 'The last error, scrubbed.';
COMMENT ON COLUMN pgcloud.dead_letters.dead_at IS 'When it was given up.';

-- Whether a service is installed in this database (its schema exists): a
-- subscriber that is not installed here is delivered to elsewhere.
CREATE FUNCTION pgcloud.installed_here(subscriber text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT coalesce((SELECT to_regnamespace(s.schema_name) IS NOT NULL
                       FROM pgcloud.services s WHERE s.name = subscriber), false)
$$;
COMMENT ON FUNCTION pgcloud.installed_here(text) IS 'Whether a service (its schema) is installed in this database.';

-- The handler of one event type in a subscriber: <schema>.on_<type>(pgcloud.event_envelope).
CREATE FUNCTION pgcloud.handler_of(subscriber text, event_type text) RETURNS regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT to_regprocedure(format('%I.%I(pgcloud.event_envelope)', s.schema_name, pgcloud.handler_name(event_type)))
      FROM pgcloud.services s WHERE s.name = subscriber
$$;
COMMENT ON FUNCTION pgcloud.handler_of(text, text) IS 'The handler of an event type in a subscribing service, <schema>.on_<event type with dots as underscores>(pgcloud.event_envelope), or NULL when it does not exist in this database.';

CREATE FUNCTION pgcloud.is_subscribed(subscriber text, event_type text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT EXISTS (SELECT 1 FROM pgcloud.subscriptions s
                    WHERE s.subscriber = is_subscribed.subscriber
                      AND pgcloud.event_matches(s.event_type, is_subscribed.event_type))
$$;
COMMENT ON FUNCTION pgcloud.is_subscribed(text, text) IS 'Whether a service subscribes to an event type.';

CREATE FUNCTION pgcloud.route_of(event_type text) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(x.subscriber, pgcloud.handler_of(x.subscriber, route_of.event_type)::oid::regproc::text)
                              ORDER BY x.subscriber), '[]')
      FROM (SELECT DISTINCT s.subscriber
              FROM pgcloud.subscriptions s
             WHERE pgcloud.event_matches(s.event_type, route_of.event_type)) x
     WHERE pgcloud.installed_here(x.subscriber)
$$;
COMMENT ON FUNCTION pgcloud.route_of(text) IS 'The subscribers of an event type installed in this database, with their handlers: [[subscriber, handler or null], ...].';

-- Applies one event to one subscriber: inbox row + handler, in the caller's
-- transaction. Returns applied, duplicate, ignored (the subscriber does not
-- subscribe to the type) or not_installed. The payload is checked here, once
-- for every handler; an event that fails the check, or a subscription
-- without its handler, fails like a failing handler (retried, then
-- dead-lettered).
CREATE FUNCTION pgcloud.deliver(subscriber text, event_id uuid, event_type text, aggregate_type text,
                                aggregate_id text, payload jsonb, headers jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    handler regprocedure;
BEGIN
    IF NOT pgcloud.installed_here(subscriber) THEN
        RETURN 'not_installed';
    END IF;
    IF NOT pgcloud.is_subscribed(subscriber, event_type) THEN
        RETURN 'ignored';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    handler := pgcloud.handler_of(subscriber, event_type);
    IF handler IS NULL THEN
        RAISE EXCEPTION 'service % subscribes to % but has no handler %(pgcloud.event_envelope)',
            subscriber, event_type, pgcloud.handler_name(event_type);
    END IF;
    INSERT INTO pgcloud.inbox (subscriber, event_id, event_type)
    VALUES (subscriber, event_id, event_type)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    -- The correlation id of the event follows it into the handler's audit rows and events.
    PERFORM set_config('pgcloud.correlation_id', coalesce(headers ->> 'correlation_id', ''), true);
    EXECUTE format('SELECT %s($1)', handler::oid::regproc)
      USING ROW(event_id, event_type, aggregate_type, aggregate_id, payload, headers)::pgcloud.event_envelope;
    PERFORM set_config('pgcloud.correlation_id', '', true);
    RETURN 'applied';
END
$$;
COMMENT ON FUNCTION pgcloud.deliver(text, uuid, text, text, text, jsonb, jsonb) IS 'Applies one event to one subscriber in the current transaction: checks the payload is a JSON object (else invalid_event), writes the inbox row and calls the handler <schema>.on_<type>(pgcloud.event_envelope), together; a second delivery is a no-op (duplicate). Returns applied, duplicate, ignored (not subscribed) or not_installed. Does not check the publisher (relay_once and consume_event do).';

CREATE FUNCTION pgcloud.record_delivery_failure(subscriber text, event_id uuid, event_type text,
                                                aggregate_type text, aggregate_id text, payload jsonb,
                                                headers jsonb, error text, attempts integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    tries integer;
    clean text := left(pgcloud.sanitize(coalesce(error, 'unknown error')), 2000);
    base_ms integer := pgcloud.policy('core.delivery_retry_base_ms', NULL::integer);
BEGIN
    IF attempts IS NULL THEN
        INSERT INTO pgcloud.delivery_failures AS f (subscriber, event_id, attempts, last_error, next_attempt_at)
        VALUES (subscriber, event_id, 1, clean, clock_timestamp() + make_interval(secs => base_ms / 1000.0))
        ON CONFLICT ON CONSTRAINT delivery_failures_pkey DO UPDATE
           SET attempts = f.attempts + 1, last_error = excluded.last_error,
               next_attempt_at = clock_timestamp()
                   + make_interval(secs => least(base_ms * 2 ^ f.attempts * (0.5 + random()), 300000) / 1000.0)
        RETURNING f.attempts INTO tries;
    ELSE
        tries := attempts;
    END IF;
    IF tries < pgcloud.policy('core.max_delivery_attempts', NULL::integer) THEN
        RETURN false;
    END IF;
    INSERT INTO pgcloud.dead_letters (subscriber, event_id, event_type, aggregate_type, aggregate_id,
                                      payload, headers, attempts, error)
    VALUES (subscriber, event_id, event_type, aggregate_type, aggregate_id, payload, headers, tries, clean)
    ON CONFLICT DO NOTHING;
    DELETE FROM pgcloud.delivery_failures f WHERE f.subscriber = record_delivery_failure.subscriber
                                              AND f.event_id = record_delivery_failure.event_id;
    PERFORM pgcloud.emit('platform.alert', 'dead_letter', event_id::text,
        jsonb_build_object('kind', 'dead_letter', 'subscriber', subscriber, 'event_id', event_id,
                           'event_type', event_type, 'attempts', tries, 'error', clean));
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgcloud.record_delivery_failure(text, uuid, text, text, text, jsonb, jsonb, text, integer) IS 'Counts a failed delivery (or takes the transport''s count); after core.max_delivery_attempts moves it to pgcloud.dead_letters and emits platform.alert. Returns true when dead-lettered.';

CREATE FUNCTION pgcloud.relay_once(max_events integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    e pgcloud.outbox;
    sub record;
    done integer := 0;
    complete boolean;
    blocked text[] := '{}';
    agg text;
    err text;
    batch integer := coalesce(max_events, pgcloud.policy('core.relay_batch_size', NULL::integer));
    routes jsonb := '{}';       -- event type -> [[subscriber, handler], ...] (installed subscribers only)
    route jsonb;
    r jsonb;
    any_failures boolean := EXISTS (SELECT 1 FROM pgcloud.delivery_failures);
    any_dead boolean := EXISTS (SELECT 1 FROM pgcloud.dead_letters);
    authentic jsonb := '{}';    -- type/source -> whether the source may publish the type
    ok jsonb;
    marked bigint[] := '{}';
BEGIN
    -- Fast path: the whole batch in one subtransaction. When nothing is being
    -- retried and no handler fails, this is all there is to it.
    IF NOT any_failures THEN
        BEGIN
            FOR e IN
                SELECT * FROM pgcloud.outbox o WHERE o.published_at IS NULL
                 ORDER BY o.id LIMIT batch FOR UPDATE SKIP LOCKED
            LOOP
                ok := authentic -> (e.event_type || '/' || e.source);
                IF ok IS NULL THEN
                    ok := to_jsonb(pgcloud.event_authentic(e.event_type, e.source));
                    authentic := authentic || jsonb_build_object(e.event_type || '/' || e.source, ok);
                END IF;
                IF NOT ok::boolean THEN
                    RAISE EXCEPTION 'forged event';   -- the slow path dead-letters it
                END IF;
                route := routes -> e.event_type;
                IF route IS NULL THEN
                    route := pgcloud.route_of(e.event_type);
                    routes := routes || jsonb_build_object(e.event_type, route);
                END IF;
                FOR r IN SELECT * FROM jsonb_array_elements(route) LOOP
                    CONTINUE WHEN any_dead AND EXISTS (SELECT 1 FROM pgcloud.dead_letters d
                                                        WHERE d.subscriber = r ->> 0 AND d.event_id = e.event_id);
                    IF r ->> 1 IS NULL OR jsonb_typeof(e.payload) IS DISTINCT FROM 'object' THEN
                        RAISE EXCEPTION 'poison event';   -- the slow path (pgcloud.deliver) retries and dead-letters it
                    END IF;
                    INSERT INTO pgcloud.inbox (subscriber, event_id, event_type)
                    VALUES (r ->> 0, e.event_id, e.event_type) ON CONFLICT DO NOTHING;
                    IF FOUND THEN
                        PERFORM set_config('pgcloud.correlation_id', coalesce(e.headers ->> 'correlation_id', ''), true);
                        EXECUTE format('SELECT %s($1)', r ->> 1)
                          USING ROW(e.event_id, e.event_type, e.aggregate_type, e.aggregate_id, e.payload,
                                    e.headers)::pgcloud.event_envelope;
                    END IF;
                END LOOP;
                marked := marked || e.id;
                done := done + 1;
            END LOOP;
            -- One mark for the batch (the rows are locked: FOR UPDATE above),
            -- planned at each call: a cached generic plan, made while the
            -- outbox was small (a fresh installation), is a sequential scan,
            -- and it stayed one as the outbox grew (every mark then read the
            -- whole outbox, and the relay fell behind its emitters).
            EXECUTE 'UPDATE pgcloud.outbox SET published_at = pg_catalog.clock_timestamp() WHERE id = ANY ($1)'
              USING marked;
            PERFORM set_config('pgcloud.correlation_id', '', true);
            RETURN done;
        EXCEPTION WHEN OTHERS THEN
            done := 0;   -- a handler failed: redo the batch one delivery at a time
        END;
    END IF;

    FOR e IN
        SELECT * FROM pgcloud.outbox o WHERE o.published_at IS NULL
         ORDER BY o.id LIMIT batch FOR UPDATE SKIP LOCKED
    LOOP
        agg := e.aggregate_type || '/' || e.aggregate_id;
        CONTINUE WHEN agg = ANY (blocked);   -- keep per-aggregate order behind a retry
        complete := true;
        IF NOT pgcloud.event_authentic(e.event_type, e.source) THEN
            -- Not from the event type's registered publisher: no subscriber
            -- applies it; each gets a dead letter (and operators an alert).
            FOR sub IN SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
                        WHERE pgcloud.event_matches(s.event_type, e.event_type) ORDER BY 1
            LOOP
                PERFORM pgcloud.record_delivery_failure(sub.subscriber, e.event_id, e.event_type, e.aggregate_type,
                    e.aggregate_id, e.payload, e.headers,
                    format('refused: event type %s is published by %s, but this event came from %s',
                           e.event_type, coalesce(pgcloud.publisher_of(e.event_type), 'no service'), e.source),
                    greatest(pgcloud.policy('core.max_delivery_attempts', NULL::integer), 1));
            END LOOP;
            UPDATE pgcloud.outbox SET published_at = clock_timestamp() WHERE id = e.id;
            done := done + 1;
            CONTINUE;
        END IF;
        FOR sub IN SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
                    WHERE pgcloud.event_matches(s.event_type, e.event_type) ORDER BY 1
        LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM pgcloud.dead_letters d WHERE d.subscriber = sub.subscriber AND d.event_id = e.event_id);
            IF EXISTS (SELECT 1 FROM pgcloud.delivery_failures f
                        WHERE f.subscriber = sub.subscriber AND f.event_id = e.event_id
                          AND f.next_attempt_at > clock_timestamp()) THEN
                complete := false;
                CONTINUE;
            END IF;
            BEGIN
                PERFORM pgcloud.deliver(sub.subscriber, e.event_id, e.event_type, e.aggregate_type, e.aggregate_id,
                                        e.payload, e.headers);
                DELETE FROM pgcloud.delivery_failures f WHERE f.subscriber = sub.subscriber AND f.event_id = e.event_id;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                IF NOT pgcloud.record_delivery_failure(sub.subscriber, e.event_id, e.event_type, e.aggregate_type,
                                                       e.aggregate_id, e.payload, e.headers, err) THEN
                    complete := false;
                END IF;
            END;
        END LOOP;
        IF complete THEN
            UPDATE pgcloud.outbox SET published_at = clock_timestamp() WHERE id = e.id;
            done := done + 1;
        ELSE
            blocked := blocked || agg;
        END IF;
    END LOOP;
    RETURN done;
END
$$;
COMMENT ON FUNCTION pgcloud.relay_once(integer) IS 'Embedded delivery: hands pending outbox events, in id order, to every subscribing service installed in this database (inbox row + handler in one transaction), marks them published, retries failures with backoff and dead-letters them after core.max_delivery_attempts. Returns the number of events published. The relay worker calls it; tests may too.';

-- NATS mode: the consumer worker hands each message to this function.
-- The tokens_valid_until of a session.revoked payload, or NULL when it is not a time.
CREATE FUNCTION pgcloud.revocation_until(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    RETURN least(value::timestamptz, now() + interval '7 days');
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgcloud.revocation_until(text) IS 'NATS mode: how long a session revoked in another database stays refused here: its tokens_valid_until (at most 7 days ahead), or NULL when that is not a time.';

CREATE FUNCTION pgcloud.platform_event_types() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT ARRAY['session.revoked', 'signing_key.published']
$$;
COMMENT ON FUNCTION pgcloud.platform_event_types() IS 'The event types whose platform effect pgcloud.consume_event applies in every database, subscribed or not (a revoked session, a published signing key). pgTAP core_multicluster checks that consume_event handles no other type so.';

CREATE FUNCTION pgcloud.consume_event(subscriber text, envelope jsonb, subject text) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF envelope IS NULL OR jsonb_typeof(envelope) <> 'object' OR envelope ->> 'event_id' IS NULL
       OR envelope ->> 'event_type' IS NULL
       OR envelope ->> 'event_id' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'message is not a pgcloud event envelope');
    END IF;
    -- Platform effects every database applies, whatever services it holds
    -- (database-per-service): a session revoked in the auth database is
    -- refused by this database's pgcloud.pre_request() too. Idempotent, so
    -- each durable of the database may apply it.
    IF envelope ->> 'event_type' = 'session.revoked' AND subject = 'pgcloud.session.revoked'
       AND pgcloud.event_authentic('session.revoked', envelope ->> 'source')
       AND envelope -> 'payload' ->> 'session_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        PERFORM pgcloud.revoke_session((envelope -> 'payload' ->> 'session_id')::uuid,
            coalesce(pgcloud.revocation_until(envelope -> 'payload' ->> 'tokens_valid_until'), now() + interval '1 day'));
    END IF;
    -- A signing key announced by auth (rotation): every database learns the
    -- published key set before the new key signs, for its PostgREST.
    IF envelope ->> 'event_type' = 'signing_key.published' AND subject = 'pgcloud.signing_key.published'
       AND pgcloud.event_authentic('signing_key.published', envelope ->> 'source')
       AND jsonb_typeof(envelope -> 'payload' -> 'jwks' -> 'keys') = 'array' THEN
        PERFORM pgcloud.learn_jwks(envelope -> 'payload' -> 'jwks',
            coalesce(pgcloud.revocation_until(envelope -> 'payload' ->> 'published_at'), now()));
    END IF;
    IF NOT pgcloud.is_subscribed(subscriber, envelope ->> 'event_type') THEN
        RETURN 'ignored';
    END IF;
    -- The broker lets a service's NATS user publish only the subjects of the
    -- event types it owns (deploy/nats/nats-server.conf, generated from the
    -- registry): the subject vouches for the publisher, the envelope must
    -- agree with it.
    IF subject IS DISTINCT FROM 'pgcloud.' || (envelope ->> 'event_type') THEN
        PERFORM pgcloud.raise('event_not_permitted',
            format('the message came on subject %s, not on the subject of its event type %s',
                   left(subject, 200), left(envelope ->> 'event_type', 200)));
    END IF;
    IF NOT pgcloud.event_authentic(envelope ->> 'event_type', envelope ->> 'source') THEN
        PERFORM pgcloud.raise('event_not_permitted',
            format('event type %s is published by %s, but this event came from %s',
                   envelope ->> 'event_type', coalesce(pgcloud.publisher_of(envelope ->> 'event_type'), 'no service'),
                   coalesce(envelope ->> 'source', 'nobody')));
    END IF;
    RETURN pgcloud.deliver(subscriber, (envelope ->> 'event_id')::uuid, envelope ->> 'event_type',
                           coalesce(envelope ->> 'aggregate_type', ''), coalesce(envelope ->> 'aggregate_id', ''),
                           coalesce(envelope -> 'payload', '{}'::jsonb), coalesce(envelope -> 'headers', '{}'::jsonb));
END
$$;
COMMENT ON FUNCTION pgcloud.consume_event(text, jsonb, text) IS 'NATS mode: applies one message (the event envelope, received on subject) to one subscriber; returns applied, duplicate, ignored or not_installed. A session.revoked from auth also marks the session revoked in this database (pgcloud.revoked_sessions), for every database''s pgcloud.pre_request(); a signing_key.published from auth stores the published key set (pgcloud.learn_jwks) for this database''s PostgREST. Refuses (event_not_permitted) a message whose subject is not its event type''s or whose source is not the type''s registered publisher.';

-- Operator views.
CREATE FUNCTION pgcloud.worker_status(OUT database text, OUT worker text, OUT pid integer, OUT state text,
                                      OUT started_at timestamptz, OUT last_activity timestamptz,
                                      OUT processed bigint, OUT failures bigint, OUT last_error text)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_worker_status';
COMMENT ON FUNCTION pgcloud.worker_status() IS 'Operators: every pgcloud background worker, its state, counters and last (scrubbed) error.';

CREATE FUNCTION pgcloud.wake_workers() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_wake_workers';
COMMENT ON FUNCTION pgcloud.wake_workers() IS 'Operators: wakes the launcher and every worker when the current transaction commits (installing pgcloud does this). False when pgcloud is not preloaded.';

CREATE VIEW pgcloud.outbox_lag AS
    SELECT count(*) AS pending,
           min(created_at) AS oldest_pending_at,
           coalesce(extract(epoch FROM now() - min(created_at)), 0)::numeric(12, 3) AS oldest_pending_seconds,
           (SELECT max(published_at) FROM pgcloud.outbox) AS last_published_at,
           (SELECT count(*) FROM pgcloud.delivery_failures) AS retrying,
           (SELECT count(*) FROM pgcloud.dead_letters) AS dead_letters
      FROM pgcloud.outbox WHERE published_at IS NULL;
COMMENT ON VIEW pgcloud.outbox_lag IS 'Operators: undelivered events, the oldest one and its age, deliveries being retried, dead letters.';
COMMENT ON COLUMN pgcloud.outbox_lag.pending IS 'Events not yet published.';
COMMENT ON COLUMN pgcloud.outbox_lag.oldest_pending_at IS 'Creation time of the oldest undelivered event.';
COMMENT ON COLUMN pgcloud.outbox_lag.oldest_pending_seconds IS 'Its age in seconds (0 when none).';
COMMENT ON COLUMN pgcloud.outbox_lag.last_published_at IS 'When the last event was published.';
COMMENT ON COLUMN pgcloud.outbox_lag.retrying IS 'Deliveries waiting for a retry.';
COMMENT ON COLUMN pgcloud.outbox_lag.dead_letters IS 'Deliveries given up.';

CREATE VIEW pgcloud.oldest_undelivered AS
    SELECT o.id, o.event_id, o.event_type, o.aggregate_type, o.aggregate_id, o.created_at,
           now() - o.created_at AS age
      FROM pgcloud.outbox o WHERE o.published_at IS NULL ORDER BY o.id LIMIT 20;
COMMENT ON VIEW pgcloud.oldest_undelivered IS 'Operators: the 20 oldest undelivered events.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.id IS 'Outbox position.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.event_id IS 'Event id.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.event_type IS 'Event type.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.aggregate_type IS 'Aggregate type.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.aggregate_id IS 'Aggregate id.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.created_at IS 'When it was emitted.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.age IS 'How long it has waited.';

CREATE VIEW pgcloud.workers AS SELECT * FROM pgcloud.worker_status();
COMMENT ON VIEW pgcloud.workers IS 'Operators: pgcloud background workers (see pgcloud.worker_status()).';
COMMENT ON COLUMN pgcloud.workers.database IS 'Database the worker serves.';
COMMENT ON COLUMN pgcloud.workers.worker IS 'relay or consumer.';
COMMENT ON COLUMN pgcloud.workers.pid IS 'Process id while running.';
COMMENT ON COLUMN pgcloud.workers.state IS 'running, stopped or not installed.';
COMMENT ON COLUMN pgcloud.workers.started_at IS 'When it started.';
COMMENT ON COLUMN pgcloud.workers.last_activity IS 'When it last did work.';
COMMENT ON COLUMN pgcloud.workers.processed IS 'Events handled since start.';
COMMENT ON COLUMN pgcloud.workers.failures IS 'Failures since start.';
COMMENT ON COLUMN pgcloud.workers.last_error IS 'Last error, scrubbed.';

-- NATS mode: a message that could not be applied. Returns true when it was
-- dead-lettered (the consumer then terminates it), false to redeliver.
CREATE FUNCTION pgcloud.consume_failed(subscriber text, msg_id text, body text, error text, deliveries integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    env jsonb;
BEGIN
    BEGIN
        env := body::jsonb;
    EXCEPTION WHEN OTHERS THEN
        env := jsonb_build_object('unparsable_body', left(body, 1000));
    END;
    IF jsonb_typeof(env) <> 'object' THEN
        env := jsonb_build_object('unparsable_body', left(body, 1000));
    END IF;
    RETURN pgcloud.record_delivery_failure(
        subscriber,
        CASE WHEN coalesce(env ->> 'event_id', msg_id) ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
             THEN coalesce(env ->> 'event_id', msg_id)::uuid ELSE gen_random_uuid() END,
        coalesce(env ->> 'event_type', 'unknown.event'), coalesce(env ->> 'aggregate_type', ''),
        coalesce(env ->> 'aggregate_id', ''), coalesce(env -> 'payload', env), coalesce(env -> 'headers', '{}'::jsonb),
        error, deliveries);
END
$$;
COMMENT ON FUNCTION pgcloud.consume_failed(text, text, text, text, integer) IS 'NATS mode: records a message that failed for a subscriber; with JetStream''s delivery count at core.max_delivery_attempts it is dead-lettered (returns true).';

CREATE FUNCTION pgcloud.nats_subscribers() RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    -- A database whose services subscribe to nothing (e.g. databases alone
    -- in its own database) still needs the platform effects every database
    -- applies (session.revoked, pgcloud.consume_event): it gets a durable of
    -- its own, unless it publishes session.revoked itself (auth).
    SELECT s.name FROM pgcloud.services s
     WHERE pgcloud.installed_here(s.name)
       AND (s.subscribes <> '{}'
            OR (NOT 'session.revoked' = ANY (s.publishes)
                AND NOT EXISTS (SELECT 1 FROM pgcloud.services o
                                 WHERE o.subscribes <> '{}' AND pgcloud.installed_here(o.name))))
     ORDER BY s.name
$$;
COMMENT ON FUNCTION pgcloud.nats_subscribers() IS 'NATS mode: the services installed in this database that have a durable JetStream consumer named after them: the subscribing ones; in a database where none subscribes, the services installed there unless they publish session.revoked themselves (so that every database learns of revoked sessions).';

CREATE FUNCTION pgcloud.nats_applied_patterns(subscriber text) RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    -- pgcloud.consume_event answers 'ignored' for any event this subscriber
    -- does not subscribe to, unless it is a platform event (which every
    -- durable applies): these patterns are everything else.
    SELECT s.event_type FROM pgcloud.subscriptions s WHERE s.subscriber = nats_applied_patterns.subscriber
    UNION
    SELECT unnest(pgcloud.platform_event_types())
    ORDER BY 1
$$;
COMMENT ON FUNCTION pgcloud.nats_applied_patterns(text) IS 'NATS mode: the event types and patterns (as pgcloud.event_matches() reads them) a subscriber''s durable hands to pgcloud.consume_event: its subscriptions and the platform event types. Its durable receives every event (it filters on pgcloud.>); the consumer acknowledges the others at once, without a transaction, registry types or not.';

-- Operator alerts from any service: platform.alert is the core's type, so a
-- service raises one through this function (it runs as the core).
CREATE FUNCTION pgcloud.alert(kind text, subject text, details jsonb DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF kind IS NULL OR kind !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'kind must be a lower-case word such as release_stuck');
    END IF;
    RETURN pgcloud.emit('platform.alert', 'alert', left(coalesce(subject, kind), 200),
        coalesce(details, '{}'::jsonb) || jsonb_build_object('kind', kind));
END
$$;
COMMENT ON FUNCTION pgcloud.alert(text, text, jsonb) IS 'Services: raises an operator alert (a platform.alert event, emitted as the core) of a kind, e.g. release_stuck, about subject, with details. Returns the event id.';
