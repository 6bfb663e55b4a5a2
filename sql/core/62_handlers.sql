-- Event handlers: one function per (service, event type). The delivery
-- (pgcloud.deliver, pgcloud.relay_once, pgcloud.consume_event) calls
--   <service schema>.on_<event type, dots as underscores>(event pgcloud.event_envelope)
-- for each subscription of the registry (pgcloud.subscriptions), after
-- checking once, here in the core, that the payload is a JSON object.
-- Handlers read the payload with the accessors below.

CREATE TYPE pgcloud.event_envelope AS (
    event_id       uuid,
    event_type     text,
    aggregate_type text,
    aggregate_id   text,
    payload        jsonb,
    headers        jsonb
);
COMMENT ON TYPE pgcloud.event_envelope IS 'One event as a handler receives it: <service>.on_<event_type>(event pgcloud.event_envelope). The payload is always a JSON object (checked by the core before any handler runs).';

CREATE FUNCTION pgcloud.handler_name(event_type text) RETURNS name
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT ('on_' || replace(event_type, '.', '_'))::name $$;
COMMENT ON FUNCTION pgcloud.handler_name(text) IS 'The name of the handler function of an event type: on_<event type with dots as underscores>, e.g. payment.succeeded -> on_payment_succeeded.';

CREATE FUNCTION pgcloud.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    v text := coalesce(payload ->> field, fallback);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a uuid', field));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION pgcloud.payload_uuid(jsonb, text, text) IS 'Handlers: a required uuid field of an event payload (or the fallback, e.g. the aggregate id, when the field is absent); raises invalid_event when it is missing or malformed.';

CREATE FUNCTION pgcloud.payload_text(payload jsonb, field text, pattern text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF jsonb_typeof(payload -> field) IS DISTINCT FROM 'string' OR (payload ->> field) !~ pattern THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a string matching %s', field, pattern));
    END IF;
    RETURN payload ->> field;
END
$$;
COMMENT ON FUNCTION pgcloud.payload_text(jsonb, text, text) IS 'Handlers: a required string field of an event payload matching pattern; raises invalid_event otherwise.';

-- IMMUTABLE like the others: it reads only its arguments. (The text to
-- timestamptz cast depends on the session's TimeZone and DateStyle; event
-- payloads carry ISO 8601 times with an offset, which read the same in
-- every session.)
CREATE FUNCTION pgcloud.payload_time(payload jsonb, field text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF payload ->> field IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (payload ->> field)::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
    PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a timestamp', field));
END
$$;
COMMENT ON FUNCTION pgcloud.payload_time(jsonb, text) IS 'Handlers: an optional timestamp field of an event payload (NULL when absent); raises invalid_event when malformed.';
