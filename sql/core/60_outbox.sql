-- Transactional outbox, inbox and the service/subscription registry.

CREATE TABLE pgcloud.services (
    name          text PRIMARY KEY,
    schema_name   text NOT NULL UNIQUE,
    database_name text NOT NULL UNIQUE,
    layer         text NOT NULL CHECK (layer IN ('platform', 'shared', 'domain')),
    route_prefix  text NOT NULL UNIQUE,
    publishes     text[] NOT NULL,
    subscribes    text[] NOT NULL,
    depends_on    text[] NOT NULL,
    http_targets  text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE pgcloud.services IS 'The service registry (generated from registry/services.conf).';
COMMENT ON COLUMN pgcloud.services.name IS 'Service name; its extension is pgcloud_<name>.';
COMMENT ON COLUMN pgcloud.services.schema_name IS 'The one schema the service owns.';
COMMENT ON COLUMN pgcloud.services.database_name IS 'The database the service lives in when each service has its own.';
COMMENT ON COLUMN pgcloud.services.layer IS 'platform, shared or domain.';
COMMENT ON COLUMN pgcloud.services.route_prefix IS 'HTTP route prefix of the service behind the reverse proxy.';
COMMENT ON COLUMN pgcloud.services.publishes IS 'Event types the service emits.';
COMMENT ON COLUMN pgcloud.services.subscribes IS 'Event types (or patterns) the service consumes.';
COMMENT ON COLUMN pgcloud.services.depends_on IS 'Services whose events or data this one relies on.';
COMMENT ON COLUMN pgcloud.services.http_targets IS 'Outbound HTTP targets (pgcloud.http_request) the service may call; any other is refused.';

CREATE TABLE pgcloud.subscriptions (
    subscriber text NOT NULL REFERENCES pgcloud.services (name),
    event_type text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.[a-z][a-z0-9_]*|\.\*|\.>)$'),
    PRIMARY KEY (subscriber, event_type)
);
COMMENT ON TABLE pgcloud.subscriptions IS 'Which service consumes which event types (generated from registry/services.conf). A pattern may end in .* (one token) or .> (any tokens).';
COMMENT ON COLUMN pgcloud.subscriptions.subscriber IS 'The consuming service.';
COMMENT ON COLUMN pgcloud.subscriptions.event_type IS 'An event type or a NATS-style pattern.';

CREATE FUNCTION pgcloud.is_event_type(event_type text) RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_is_event_type';
COMMENT ON FUNCTION pgcloud.is_event_type(text) IS 'Whether a text is an event type: dotted lower-case words (^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$), e.g. allocation.activated. The outbox''s check.';

CREATE TABLE pgcloud.outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL CONSTRAINT outbox_event_type_check CHECK (pgcloud.is_event_type(event_type)),
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL,
    source         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished_idx ON pgcloud.outbox (id) WHERE published_at IS NULL;
COMMENT ON TABLE pgcloud.outbox IS 'Events written in the transaction of the change they describe; the relay publishes them after commit. Ordered per aggregate by id.';
COMMENT ON COLUMN pgcloud.outbox.id IS 'Position; within one aggregate, commit order.';
COMMENT ON COLUMN pgcloud.outbox.event_id IS 'Unique event id (Nats-Msg-Id, inbox key).';
COMMENT ON COLUMN pgcloud.outbox.event_type IS 'Dotted lower-case type, e.g. allocation.activated.';
COMMENT ON COLUMN pgcloud.outbox.aggregate_type IS 'Kind of the object the event is about.';
COMMENT ON COLUMN pgcloud.outbox.aggregate_id IS 'Id of the object the event is about.';
COMMENT ON COLUMN pgcloud.outbox.payload IS 'Event-carried state (a JSON object).';
COMMENT ON COLUMN pgcloud.outbox.headers IS 'correlation_id, actor, actor_role and source of the emitting request.';
COMMENT ON COLUMN pgcloud.outbox.source IS 'The emitting service (or role).';
COMMENT ON COLUMN pgcloud.outbox.created_at IS 'Time of the emitting transaction.';
COMMENT ON COLUMN pgcloud.outbox.published_at IS 'When delivery was confirmed; NULL while pending.';

CREATE TABLE pgcloud.inbox (
    subscriber   text NOT NULL,
    event_id     uuid NOT NULL,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.inbox IS 'Events each subscriber has applied: the row commits with the handler''s effect, so a redelivered event has no second effect.';
COMMENT ON COLUMN pgcloud.inbox.subscriber IS 'The consuming service.';
COMMENT ON COLUMN pgcloud.inbox.event_id IS 'The applied event.';
COMMENT ON COLUMN pgcloud.inbox.event_type IS 'Its type.';
COMMENT ON COLUMN pgcloud.inbox.processed_at IS 'When it was applied.';

CREATE FUNCTION pgcloud.emit(event_type text, aggregate_type text, aggregate_id text, payload jsonb)
RETURNS uuid
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_outbox_emit';
COMMENT ON FUNCTION pgcloud.emit(text, text, text, jsonb) IS 'Writes an event to the outbox in the current transaction and returns its id. event_type is dotted lower-case (e.g. allocation.activated); payload is a JSON object. Events of one aggregate are ordered by commit.';

CREATE FUNCTION pgcloud.emit(event_type text, aggregate_type text, aggregate_id text, payload jsonb,
                             aggregate_locked boolean)
RETURNS uuid
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_outbox_emit';
COMMENT ON FUNCTION pgcloud.emit(text, text, text, jsonb, boolean) IS 'pgcloud.emit(event_type, aggregate_type, aggregate_id, payload) for a caller whose own lock already orders the aggregate''s writers: with aggregate_locked = true (the caller inserted the aggregate''s row in this transaction, or updated it or locked it FOR UPDATE before emitting) emit() does not take its advisory lock on the aggregate. Events of one aggregate are then ordered by commit by that lock.';

CREATE FUNCTION pgcloud.event_matches(pattern text, event_type text) RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_event_matches';
COMMENT ON FUNCTION pgcloud.event_matches(text, text) IS 'Whether an event type matches a subscription pattern (exact, or ending in .* for one token or .> for any tokens).';

CREATE FUNCTION pgcloud.subscribers(event_type text) RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
     WHERE pgcloud.event_matches(s.event_type, subscribers.event_type)
     ORDER BY 1
$$;
COMMENT ON FUNCTION pgcloud.subscribers(text) IS 'The services subscribed to an event type.';

CREATE FUNCTION pgcloud.build_info() RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'pgcloud_build_info';
COMMENT ON FUNCTION pgcloud.build_info() IS 'Versions of pgcloud, PostgreSQL, libcurl, nats.c and OpenSSL this library runs with.';

CREATE FUNCTION pgcloud.seal(plain bytea, context text) RETURNS bytea
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_seal_seal';
COMMENT ON FUNCTION pgcloud.seal(bytea, text) IS 'Seals a secret with the platform master key (pgcloud.key_file, or $PGDATA/pgcloud.key created 0600 on first use): AES-256-GCM under an HKDF-SHA256 key for context. Services only.';

CREATE FUNCTION pgcloud.unseal(sealed bytea, context text) RETURNS bytea
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_seal_unseal';
COMMENT ON FUNCTION pgcloud.unseal(bytea, text) IS 'Opens a value sealed by pgcloud.seal() for the same context; an error when it was altered or sealed for another context. Services only.';

-- Event authority: which service owns (publishes) an event type. The core
-- owns platform.* and audit.recorded (announced by pgcloud.audit()); a type
-- nobody owns is an operator's own.
CREATE FUNCTION pgcloud.publisher_of(event_type text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT CASE WHEN publisher_of.event_type LIKE 'platform.%' OR publisher_of.event_type = 'audit.recorded' THEN 'core'
                ELSE (SELECT s.name FROM pgcloud.services s
                       WHERE publisher_of.event_type = ANY (s.publishes) ORDER BY s.name LIMIT 1) END
$$;
COMMENT ON FUNCTION pgcloud.publisher_of(text) IS 'The service that owns an event type (registry publishes; core for platform.* and audit.recorded), or NULL for a type no service owns (an operator''s own).';

-- pgcloud.emit() keeps each backend's answers of publisher_of(); any change
-- to the registry makes every backend forget them (relcache invalidation).
CREATE FUNCTION pgcloud.services_changed() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_relation_changed';
COMMENT ON FUNCTION pgcloud.services_changed() IS 'Statement trigger on pgcloud.services: every backend forgets the event publishers pgcloud.emit() cached.';
REVOKE ALL ON FUNCTION pgcloud.services_changed() FROM PUBLIC;
CREATE TRIGGER services_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcloud.services
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.services_changed();

CREATE FUNCTION pgcloud.event_authentic(event_type text, source text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT CASE
        WHEN coalesce(source, '') = '' THEN false
        -- a superuser (the operator) stands outside every boundary
        WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = source AND r.rolsuper) THEN true
        WHEN pgcloud.publisher_of(event_type) IS NOT NULL THEN pgcloud.publisher_of(event_type) = source
        ELSE NOT EXISTS (SELECT 1 FROM pgcloud.services s WHERE s.name = source) AND source <> 'core'
    END
$$;
COMMENT ON FUNCTION pgcloud.event_authentic(text, text) IS 'Whether an event of this type may come from this source: its registered publisher, a superuser, or (for a type no service owns) a role that is not a service. Subscribers accept nothing else, in embedded and NATS delivery.';
