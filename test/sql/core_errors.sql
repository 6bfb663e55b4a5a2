-- Error catalogue and the PostgREST custom-error form.
\set VERBOSITY default
-- A catalogued error: SQLSTATE PGRST, JSON message, JSON detail with status.
SELECT pgcloud.raise('forbidden', 'you may not', 'ask an admin');
\set VERBOSITY verbose
SELECT pgcloud.raise('rate_limited', NULL, NULL, '{"Retry-After": "3"}');
\set VERBOSITY default
-- Unknown codes are reported as unknown_error_code (500), never untyped.
SELECT pgcloud.raise('no_such_code');
SELECT pgcloud.raise(NULL);
-- Headers must be an object.
SELECT pgcloud.raise('forbidden', NULL, NULL, '[1,2]');
-- Details are JSON-escaped.
SELECT pgcloud.raise('invalid_argument', E'quote " backslash \\ newline \n tab \t');
-- The catalogue rejects malformed rows.
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES ('Bad Code', 400, 'x');
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES ('ok_code', 200, 'x');
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES ('ok_code', 400, '');
DO $$
DECLARE
    msg text; det text;
BEGIN
    PERFORM pgcloud.raise('idempotency_key_reused', 'first used elsewhere');
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RAISE NOTICE 'code=% message=% status=%', msg::jsonb ->> 'code', msg::jsonb ->> 'message', det::jsonb ->> 'status';
END
$$;
SELECT count(*) >= 15 AS catalogue_seeded,
       bool_and(http_status BETWEEN 400 AND 599) AS statuses_valid
  FROM pgcloud.error_codes;
