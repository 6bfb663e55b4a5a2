-- 0.1.0 -> 0.2.0: the outbox checks its event type with a C function
-- instead of a regular expression (the same shape; issue 16: the check took
-- about a sixth of an emit()). The function is created here, before the
-- table's new check needs it; the script's own definition replaces it.
CREATE FUNCTION pgcloud.is_event_type(event_type text) RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_is_event_type';
ALTER TABLE pgcloud.outbox DROP CONSTRAINT outbox_event_type_check,
    ADD CONSTRAINT outbox_event_type_check CHECK (pgcloud.is_event_type(event_type));
