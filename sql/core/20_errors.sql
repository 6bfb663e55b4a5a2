-- The error catalogue and the raise function (PostgREST custom-error form).

CREATE TABLE pgcloud.error_codes (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{2,62}$'),
    http_status integer NOT NULL CHECK (http_status BETWEEN 400 AND 599),
    message     text NOT NULL CHECK (message <> ''),
    service     text NOT NULL DEFAULT 'core'
);
COMMENT ON TABLE pgcloud.error_codes IS 'The one error catalogue: every API error has a code, an HTTP status and a message. Services add their codes at install.';
COMMENT ON COLUMN pgcloud.error_codes.code IS 'Stable machine-readable code, returned as "code" in the error body.';
COMMENT ON COLUMN pgcloud.error_codes.http_status IS 'HTTP status PostgREST answers with.';
COMMENT ON COLUMN pgcloud.error_codes.message IS 'Human-readable message, returned as "message".';
COMMENT ON COLUMN pgcloud.error_codes.service IS 'The service that owns the code.';

INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('invalid_argument',          400, 'An argument is missing or not valid.'),
    ('invalid_request_context',   400, 'The request context (claims or headers) is not valid.'),
    ('invalid_event',             400, 'The event is not valid.'),
    ('idempotency_key_invalid',   400, 'The idempotency key must be 1 to 255 printable ASCII characters.'),
    ('unauthenticated',           401, 'Authentication is required.'),
    ('forbidden',                 403, 'You are not allowed to do this.'),
    ('not_found',                 404, 'The requested resource does not exist.'),
    ('conflict',                  409, 'The request conflicts with the current state.'),
    ('idempotency_key_in_use',    409, 'A request with this idempotency key is still being processed.'),
    ('invalid_state_transition',  409, 'This change of state is not allowed.'),
    ('idempotency_key_reused',    422, 'This idempotency key was already used with different arguments.'),
    ('rate_limited',              429, 'Too many requests.'),
    ('policy_missing',            500, 'A required policy value is not configured.'),
    ('policy_invalid',            500, 'A policy value has the wrong type or range.'),
    ('unknown_error_code',        500, 'An internal error occurred.');

CREATE FUNCTION pgcloud.raise(code text, details text DEFAULT NULL, hint text DEFAULT NULL, headers jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS 'MODULE_PATHNAME', 'pgcloud_error_raise';
COMMENT ON FUNCTION pgcloud.raise(text, text, text, jsonb) IS 'Raises the catalogued error "code" in PostgREST''s custom-error form: SQLSTATE PGRST, message {code, message, details, hint}, detail {status, headers}.';

-- Security boundaries (issue 10).
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('event_not_permitted',       403, 'This service may not emit this event type.'),
    ('http_target_not_permitted', 403, 'This service may not call this outbound target.'),
    ('insecure_transport',        500, 'Credentials would travel over an unencrypted connection.');

-- Codes several services raise with one meaning: catalogued once, here.
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('allocation_not_found',      404, 'The allocation does not exist.'),
    ('allocation_not_active',     409, 'The allocation is not active.'),
    ('posix_identity_missing',    409, 'Your account has no POSIX username yet.'),
    ('sku_not_found',             404, 'The SKU does not exist.'),
    ('image_not_found',           404, 'The OS image does not exist.');
