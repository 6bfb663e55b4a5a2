-- 0.1.0 -> 0.2.0: the outbox checks its event type with a C function
-- instead of a regular expression (the same shape; issue 16: the check took
-- about a sixth of an emit()). The function is created here, before the
-- table's new check needs it; the script's own definition replaces it.
CREATE FUNCTION pgcloud.is_event_type(event_type text) RETURNS boolean
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_is_event_type';
ALTER TABLE pgcloud.outbox DROP CONSTRAINT outbox_event_type_check,
    ADD CONSTRAINT outbox_event_type_check CHECK (pgcloud.is_event_type(event_type));

-- 0.1.0 -> 0.2.0: the claim of an HTTP intent is a HOT update (issue 16
-- item 4). No index of pgcloud.http_intents names state any more: the due
-- and in-flight indexes give way to one index of open intents (completed_at
-- IS NULL), the callback index goes by completed_at too, and the table
-- leaves half of each page free for the claim's new row version (existing
-- pages keep their layout until rewritten; new rows follow the setting).
DROP INDEX pgcloud.http_intents_due_idx;
DROP INDEX pgcloud.http_intents_in_flight_idx;
DROP INDEX pgcloud.http_intents_callback_idx;
ALTER TABLE pgcloud.http_intents SET (fillfactor = 50);
