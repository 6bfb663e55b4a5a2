-- Audit log: append-only (the immutable trigger guards it for every role).

CREATE TABLE pgcloud.audit_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          uuid,
    role           text NOT NULL,
    action         text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    target_type    text,
    target_id      text,
    target         text GENERATED ALWAYS AS (coalesce(target_type, '') || ':' || coalesce(target_id, '')) STORED,
    result         text NOT NULL CHECK (result IN ('ok', 'denied', 'rejected', 'failed')),
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    correlation_id text NOT NULL
);
CREATE INDEX audit_logs_at_idx ON pgcloud.audit_logs (at);
CREATE INDEX audit_logs_actor_idx ON pgcloud.audit_logs (actor, at) WHERE actor IS NOT NULL;
CREATE INDEX audit_logs_action_idx ON pgcloud.audit_logs (action, at);
COMMENT ON TABLE pgcloud.audit_logs IS 'Append-only record of every privileged mutation: UPDATE, DELETE and TRUNCATE are rejected for every role.';
COMMENT ON COLUMN pgcloud.audit_logs.id IS 'Monotonic entry number.';
COMMENT ON COLUMN pgcloud.audit_logs.at IS 'When the entry was written.';
COMMENT ON COLUMN pgcloud.audit_logs.actor IS 'The acting user or service account (JWT sub), NULL for operators and anonymous callers.';
COMMENT ON COLUMN pgcloud.audit_logs.role IS 'The role the actor used (JWT role claim, SET ROLE, or the session user).';
COMMENT ON COLUMN pgcloud.audit_logs.action IS 'Dotted action name, e.g. policy.set.';
COMMENT ON COLUMN pgcloud.audit_logs.target_type IS 'Kind of the object acted on.';
COMMENT ON COLUMN pgcloud.audit_logs.target_id IS 'Identifier of the object acted on.';
COMMENT ON COLUMN pgcloud.audit_logs.target IS 'target_type:target_id, for reading and filtering.';
COMMENT ON COLUMN pgcloud.audit_logs.result IS 'ok, denied, rejected or failed.';
COMMENT ON COLUMN pgcloud.audit_logs.details IS 'Further facts as JSON, scrubbed of secrets.';
COMMENT ON COLUMN pgcloud.audit_logs.correlation_id IS 'Correlation id of the request that acted.';

CREATE FUNCTION pgcloud.immutable() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_trigger_immutable';
COMMENT ON FUNCTION pgcloud.immutable() IS 'Trigger: rejects UPDATE, DELETE (BEFORE ... FOR EACH ROW) and TRUNCATE (BEFORE TRUNCATE) for every role, the owner included.';

CREATE FUNCTION pgcloud.transition() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_trigger_transition';
COMMENT ON FUNCTION pgcloud.transition() IS 'Trigger: pgcloud.transition(state_column, transitions_table). Allows a change of state_column only when transitions_table (from_state, to_state) lists it; from_state NULL lists initial states.';

CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON pgcloud.audit_logs
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON pgcloud.audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();

CREATE FUNCTION pgcloud.sanitize(text) RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_sanitize';
COMMENT ON FUNCTION pgcloud.sanitize(text) IS 'Scrubs secrets from text: e-mail addresses, JWTs and bearer tokens, Authorization headers and password-like fields, Stripe keys, card numbers (Luhn), passwords in URIs, private keys. The server log passes through the same scrubber.';

CREATE FUNCTION pgcloud.sanitize_json(jsonb) RETURNS jsonb
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_sanitize_json';
COMMENT ON FUNCTION pgcloud.sanitize_json(jsonb) IS 'pgcloud.sanitize() for a JSON value: the value with secrets scrubbed from its text form, or {"redacted": true} when scrubbing left text that is not JSON.';

-- In C (src/core/audit.c): every audited call writes one entry and its
-- event, and PL/pgSQL with a SECURITY DEFINER search_path switch cost
-- twice what the insert does. It writes and announces the entry as the
-- log's owner (the core service, audit.recorded's publisher) itself.
CREATE FUNCTION pgcloud.audit(action text, target_type text, target_id text,
                              result text DEFAULT 'ok', details jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_audit';
COMMENT ON FUNCTION pgcloud.audit(text, text, text, text, jsonb) IS 'Appends an audit entry for the current request (actor, role and correlation id come from the request context); details are scrubbed. Announces it as audit.recorded {database, audit_id, at, actor, role, action, target_type, target_id, result, details, correlation_id} for the admin service. Returns the entry id.';
