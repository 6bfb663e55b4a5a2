-- HTTP intents: every outbound call (Stripe, MAAS, SMTP, S3; "test" for the test
-- suites) is a row written in the caller's transaction by
-- pgcloud.http_request(). After commit the HTTP executor worker
-- (bgworkers/http_executor.c, libcurl multi) claims due intents per target
-- within the target's concurrency limit, adds the target's credentials at send
-- time (they are never stored here), records each outcome with
-- pgcloud.http_record() and hands final outcomes to the owning service's
-- callback in that same new transaction, exactly once.
--
--   pending ──claim──> in_flight ──2xx──────────────> succeeded
--      ^                  │ ──retryable, tries left─> failed ──due──> in_flight
--      └──worker start────┘ ──otherwise─────────────> dead
--
-- Retryable: connection errors, timeouts, 429 and 5xx (SMTP: 4xx replies and
-- connection errors). Backoff: core.http_backoff_base_ms doubled per try,
-- with jitter, or the target's Retry-After.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.http_max_attempts', '5', 'Tries of an outbound HTTP intent before it is dead-lettered.'),
    ('core.http_backoff_base_ms', '500', 'Delay before the first retry of an HTTP intent (ms); doubles each try, with jitter (x0.5 to x1.5).'),
    ('core.http_backoff_max_ms', '300000', 'Longest delay between two tries of an HTTP intent (ms), before jitter.'),
    ('core.http_retry_after_max_seconds', '3600', 'Longest Retry-After a target may impose (seconds); longer answers are capped.'),
    ('core.http_connect_timeout_ms', '5000', 'Connect timeout of an outbound request (ms).'),
    ('core.http_total_timeout_ms', '30000', 'Total timeout of an outbound request, connect to last byte (ms).'),
    ('core.http_concurrency', '{"stripe": 8, "maas": 4, "smtp": 2, "test": 8, "s3": 4}', 'Outbound requests in flight at once, per target (JSON object target -> count).'),
    ('core.http_response_max_bytes', '65536', 'Bytes of a response body kept with its intent; the rest is dropped and the body marked truncated.'),
    ('core.http_callback_max_attempts', '5', 'Tries of a failing result callback before it is given up (with a platform.alert event).'),
    ('core.plaintext_allowed_hosts', '["127.0.0.1", "::1", "localhost"]', 'Hosts (JSON array) to which credentials may travel unencrypted: Stripe and MAAS over http://, SMTP without STARTTLS. Any other host must be https://, smtps:// or offer STARTTLS, or the request fails. Loopback only by default.');

CREATE TABLE pgcloud.http_intent_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE pgcloud.http_intent_transitions IS 'Allowed changes of pgcloud.http_intents.state (guarded by pgcloud.transition()).';
COMMENT ON COLUMN pgcloud.http_intent_transitions.from_state IS 'State before; NULL lists the initial state.';
COMMENT ON COLUMN pgcloud.http_intent_transitions.to_state IS 'State after.';
INSERT INTO pgcloud.http_intent_transitions (from_state, to_state) VALUES
    (NULL, 'pending'),
    ('pending', 'in_flight'),
    ('in_flight', 'succeeded'),
    ('in_flight', 'failed'),
    ('in_flight', 'dead'),
    ('in_flight', 'pending'),   -- left in flight by a crash or a stop: sent again
    ('failed', 'in_flight');

CREATE TABLE pgcloud.http_intents (
    id                   uuid PRIMARY KEY,
    target               text NOT NULL CHECK (target IN ('stripe', 'maas', 'smtp', 'test', 's3')),
    method               text NOT NULL,
    path                 text NOT NULL,
    body                 text CHECK (octet_length(body) <= 4194304),
    content_type         text,
    headers              jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key      text,
    callback             regprocedure,
    context              jsonb NOT NULL DEFAULT '{}'::jsonb,
    requested_by         name NOT NULL,
    correlation_id       text NOT NULL,
    state                text NOT NULL,
    attempts             integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_attempt_at      timestamptz,
    completed_at         timestamptz,
    response_status      integer,
    response_headers     jsonb,
    response_body        text,
    response_truncated   boolean NOT NULL DEFAULT false,
    last_error           text,
    callback_done_at     timestamptz,
    callback_attempts    integer NOT NULL DEFAULT 0,
    callback_next_at     timestamptz,
    callback_error       text,
    callback_given_up_at timestamptz
)
-- Room on each page for the claim's new row version: the claim changes no
-- indexed column (see below), so it is a HOT update when the page has room.
WITH (fillfactor = 50);
-- No index has state in its key or predicate, nor attempts or
-- last_attempt_at: the claim (pending/failed -> in_flight) changes only
-- those, and writes no index entry (a HOT update). An intent is open (due,
-- or in flight) until completed_at is set (succeeded or dead); the claim
-- skips the few open ones in flight by their state. The record of a final
-- outcome takes the row out of the open index.
CREATE INDEX http_intents_open_idx ON pgcloud.http_intents (target, next_attempt_at)
    WHERE completed_at IS NULL;
CREATE INDEX http_intents_callback_due_idx ON pgcloud.http_intents (callback_next_at)
    WHERE callback IS NOT NULL AND callback_done_at IS NULL AND callback_given_up_at IS NULL
      AND completed_at IS NOT NULL;
COMMENT ON INDEX pgcloud.http_intents_open_idx IS 'Open intents (pending, in flight, waiting for a retry) per target, by due time: the claim and the next due time. Its predicate is completed_at, not state, so the claim is a HOT update.';
COMMENT ON INDEX pgcloud.http_intents_callback_due_idx IS 'Final outcomes whose callback failed and waits to run again, by due time.';
COMMENT ON TABLE pgcloud.http_intents IS 'Outbound HTTP (and SMTP) calls written in the caller''s transaction with pgcloud.http_request() and carried out after commit by the HTTP executor worker. Credentials are added at send time and never stored here.';
COMMENT ON COLUMN pgcloud.http_intents.id IS 'Intent id; the Idempotency-Key sent when none was given.';
COMMENT ON COLUMN pgcloud.http_intents.target IS 'stripe, maas, smtp, s3 or test; the base URL and credentials come from pgcloud.* settings.';
COMMENT ON COLUMN pgcloud.http_intents.method IS 'GET, POST, PUT, PATCH or DELETE (and HEAD for s3); SEND for smtp.';
COMMENT ON COLUMN pgcloud.http_intents.path IS 'Path (and query) appended to the target''s base URL; for smtp the envelope recipient; for s3 "/" and the URI-encoded object key (bucket, addressing and SigV4 query signature added at send time).';
COMMENT ON COLUMN pgcloud.http_intents.body IS 'Request body; for smtp the complete RFC 5322 message.';
COMMENT ON COLUMN pgcloud.http_intents.content_type IS 'Content-Type of the body.';
COMMENT ON COLUMN pgcloud.http_intents.headers IS 'Extra request headers (name -> value); for smtp {"mail_from": envelope sender}. Never credentials.';
COMMENT ON COLUMN pgcloud.http_intents.idempotency_key IS 'Idempotency-Key header (the intent id when NULL); the same on every try.';
COMMENT ON COLUMN pgcloud.http_intents.callback IS 'SECURITY DEFINER function of the requesting service called with the final outcome: (intent_id uuid, status integer, response_headers jsonb, response_body text, context jsonb, final boolean).';
COMMENT ON COLUMN pgcloud.http_intents.context IS 'Caller''s data handed back to the callback.';
COMMENT ON COLUMN pgcloud.http_intents.requested_by IS 'The role that wrote the intent (the service role).';
COMMENT ON COLUMN pgcloud.http_intents.correlation_id IS 'Correlation id of the request that wrote the intent; set again while its callback runs.';
COMMENT ON COLUMN pgcloud.http_intents.state IS 'pending, in_flight, succeeded, failed (waiting for a retry) or dead.';
COMMENT ON COLUMN pgcloud.http_intents.attempts IS 'Tries started so far.';
COMMENT ON COLUMN pgcloud.http_intents.next_attempt_at IS 'Not sent (again) before this time.';
COMMENT ON COLUMN pgcloud.http_intents.created_at IS 'When the intent was written.';
COMMENT ON COLUMN pgcloud.http_intents.last_attempt_at IS 'When the last try started.';
COMMENT ON COLUMN pgcloud.http_intents.completed_at IS 'When it became succeeded or dead; NULL while the intent is open (pending, in flight or waiting for a retry), which is what the indexes go by.';
COMMENT ON COLUMN pgcloud.http_intents.response_status IS 'HTTP status (SMTP reply code) of the last answer; NULL after a connection error or timeout.';
COMMENT ON COLUMN pgcloud.http_intents.response_headers IS 'Headers of the last answer (lower-case name -> value).';
COMMENT ON COLUMN pgcloud.http_intents.response_body IS 'Body of the last answer, at most core.http_response_max_bytes.';
COMMENT ON COLUMN pgcloud.http_intents.response_truncated IS 'Whether the body was cut at core.http_response_max_bytes.';
COMMENT ON COLUMN pgcloud.http_intents.last_error IS 'Why the last try failed, scrubbed of secrets.';
COMMENT ON COLUMN pgcloud.http_intents.callback_done_at IS 'When the callback ran for the final outcome (committed with its effect, so it never runs twice).';
COMMENT ON COLUMN pgcloud.http_intents.callback_attempts IS 'Failed runs of the final callback.';
COMMENT ON COLUMN pgcloud.http_intents.callback_next_at IS 'When a failed final callback is run again.';
COMMENT ON COLUMN pgcloud.http_intents.callback_error IS 'The callback''s last error, scrubbed.';
COMMENT ON COLUMN pgcloud.http_intents.callback_given_up_at IS 'When a failing callback was given up after core.http_callback_max_attempts (a platform.alert was emitted).';

-- Fills the fields a caller must not choose and validates the request. Runs
-- as the inserting role (not SECURITY DEFINER), so current_user is the service.
CREATE FUNCTION pgcloud.http_intent_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    k text;
    v jsonb;
    cb record;
    forbidden text[] := ARRAY['authorization', 'proxy-authorization', 'cookie', 'host', 'content-length',
                              'content-type', 'transfer-encoding', 'connection', 'expect', 'idempotency-key',
                              'te', 'upgrade'];
BEGIN
    IF NEW.target IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'a target is required (stripe, maas, smtp, s3 or test)');
    END IF;
    IF NEW.target NOT IN ('stripe', 'maas', 'smtp', 'test', 's3') THEN
        PERFORM pgcloud.raise('invalid_argument',
            format('unknown HTTP target "%s" (stripe, maas, smtp, s3 or test)', left(NEW.target, 64)));
    END IF;
    -- Outbound authority: a service calls only the targets its registry
    -- entry grants (http_targets); superusers (the operator) any.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
       AND NOT EXISTS (SELECT 1 FROM pgcloud.services s
                        WHERE 'pgcloud_svc_' || s.name = current_user AND NEW.target = ANY (s.http_targets)) THEN
        PERFORM pgcloud.raise('http_target_not_permitted',
            format('role %s may not call target %s', current_user, NEW.target),
            'registry/services.conf lists the targets each service may call (http_targets).');
    END IF;
    IF NEW.target = 'smtp' THEN
        IF NEW.method IS DISTINCT FROM 'SEND' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the method of an smtp intent is SEND');
        END IF;
        IF NEW.path IS NULL OR length(NEW.path) > 254 OR NEW.path !~ '^[^\s<>@,;:"\\]+@[^\s<>@,;:"\\]+$' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the path of an smtp intent is the recipient''s e-mail address');
        END IF;
        IF NEW.body IS NULL OR NEW.body = '' THEN
            PERFORM pgcloud.raise('invalid_argument', 'an smtp intent needs the message as its body');
        END IF;
        IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object'
           OR (SELECT array_agg(x ORDER BY x) FROM jsonb_object_keys(NEW.headers) x) IS DISTINCT FROM ARRAY['mail_from']
           OR jsonb_typeof(NEW.headers -> 'mail_from') <> 'string'
           OR length(NEW.headers ->> 'mail_from') > 254
           OR NEW.headers ->> 'mail_from' !~ '^[^\s<>@,;:"\\]+@[^\s<>@,;:"\\]+$' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the headers of an smtp intent are {"mail_from": envelope sender address}');
        END IF;
    ELSE
        IF NEW.method IS NULL OR NEW.method NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')
           AND NOT (NEW.target = 's3' AND NEW.method = 'HEAD') THEN
            PERFORM pgcloud.raise('invalid_argument',
                format('HTTP method "%s" is not supported (GET, POST, PUT, PATCH or DELETE; HEAD for s3)', left(NEW.method, 16)));
        END IF;
        IF NEW.path IS NULL OR length(NEW.path) > 2048 OR NEW.path !~ '^/[\x21-\x7e]*$' THEN
            PERFORM pgcloud.raise('invalid_argument',
                'the path must start with / and hold at most 2048 printable ASCII characters, no spaces');
        END IF;
        IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object' THEN
            PERFORM pgcloud.raise('invalid_argument', 'headers must be a JSON object of name -> string value');
        END IF;
        IF (SELECT count(*) FROM jsonb_object_keys(NEW.headers)) > 32 THEN
            PERFORM pgcloud.raise('invalid_argument', 'at most 32 extra headers');
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(NEW.headers) LOOP
            IF k !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,64}$' THEN
                PERFORM pgcloud.raise('invalid_argument', format('"%s" is not a valid header name', left(k, 64)));
            END IF;
            IF lower(k) = ANY (forbidden) THEN
                PERFORM pgcloud.raise('invalid_argument',
                    format('header "%s" may not be set on an intent', k),
                    'The executor sets credentials and framing headers at send time; use the content_type and idempotency_key arguments.');
            END IF;
            IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > 1024 OR (v #>> '{}') !~ '^[\x20-\x7e]*$' THEN
                PERFORM pgcloud.raise('invalid_argument',
                    format('the value of header "%s" must be a string of at most 1024 printable ASCII characters', k));
            END IF;
        END LOOP;
    END IF;
    IF NEW.content_type IS NOT NULL AND NEW.content_type !~ '^[\x21-\x7e][\x20-\x7e]{0,254}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'content_type must be 1 to 255 printable ASCII characters');
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND NEW.idempotency_key !~ '^[\x21-\x7e]{1,255}$' THEN
        PERFORM pgcloud.raise('idempotency_key_invalid', NULL);
    END IF;
    IF NEW.body IS NOT NULL AND octet_length(NEW.body) > 4194304 THEN
        PERFORM pgcloud.raise('invalid_argument', 'the body may hold at most 4 MB');
    END IF;
    NEW.context := coalesce(NEW.context, '{}'::jsonb);
    IF jsonb_typeof(NEW.context) <> 'object' OR octet_length(NEW.context::text) > 65536 THEN
        PERFORM pgcloud.raise('invalid_argument', 'context must be a JSON object of at most 64 kB');
    END IF;
    IF NEW.callback IS NOT NULL THEN
        SELECT p.prorettype, pg_catalog.oidvectortypes(p.proargtypes) AS args, p.prosecdef, p.proowner, p.prokind
          INTO cb FROM pg_catalog.pg_proc p WHERE p.oid = NEW.callback;
        IF NOT FOUND OR cb.prokind <> 'f' OR cb.prorettype <> 'void'::regtype
           OR cb.args <> 'uuid, integer, jsonb, text, jsonb, boolean' THEN
            PERFORM pgcloud.raise('invalid_argument',
                'the callback must be a function (intent_id uuid, status integer, response_headers jsonb, response_body text, context jsonb, final boolean) RETURNS void');
        END IF;
        IF NOT cb.prosecdef THEN
            PERFORM pgcloud.raise('invalid_argument', 'the callback must be SECURITY DEFINER: it runs as its service');
        END IF;
        IF cb.proowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
           AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
            PERFORM pgcloud.raise('invalid_argument', 'the callback must belong to the requesting service');
        END IF;
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}'::jsonb);
    NEW.requested_by := current_user;
    NEW.correlation_id := pgcloud.correlation_id();
    NEW.state := 'pending';
    NEW.attempts := 0;
    NEW.created_at := now();
    NEW.next_attempt_at := now();
    NEW.last_attempt_at := NULL;
    NEW.completed_at := NULL;
    NEW.response_status := NULL;
    NEW.response_headers := NULL;
    NEW.response_body := NULL;
    NEW.response_truncated := false;
    NEW.last_error := NULL;
    NEW.callback_done_at := NULL;
    NEW.callback_attempts := 0;
    NEW.callback_next_at := NULL;
    NEW.callback_error := NULL;
    NEW.callback_given_up_at := NULL;
    -- However the intent is written, the executor learns of it at commit
    -- (and the relay, delivering an event whose handler wrote it, commits
    -- synchronously: bgworkers/relay.c).
    PERFORM pgcloud.http_wake();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION pgcloud.http_intent_guard() IS 'Trigger: validates a new HTTP intent (target, method, path, headers without credentials, callback signature and owner) and sets the fields the caller may not choose (requested_by, state, attempts, ...).';

CREATE TRIGGER http_intents_10_guard BEFORE INSERT ON pgcloud.http_intents
    FOR EACH ROW EXECUTE FUNCTION pgcloud.http_intent_guard();
CREATE TRIGGER http_intents_20_state BEFORE INSERT OR UPDATE OF state ON pgcloud.http_intents
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'pgcloud.http_intent_transitions');

CREATE FUNCTION pgcloud.http_wake() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_http_wake';
COMMENT ON FUNCTION pgcloud.http_wake() IS 'Wakes this database''s HTTP executor when the current transaction commits (the guard trigger of pgcloud.http_intents calls it for every new intent). False when pgcloud is not preloaded.';

CREATE FUNCTION pgcloud.http_request(target text, method text, path text, body text DEFAULT NULL,
                                     content_type text DEFAULT NULL, headers jsonb DEFAULT '{}',
                                     idempotency_key text DEFAULT NULL, callback regprocedure DEFAULT NULL,
                                     context jsonb DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    intent uuid := gen_random_uuid();
BEGIN
    -- Not SECURITY DEFINER: the intent records the calling service's role.
    INSERT INTO pgcloud.http_intents (id, target, method, path, body, content_type, headers, idempotency_key,
                                      callback, context, requested_by, correlation_id, state, next_attempt_at)
    VALUES (intent, target, method, path, body, content_type, headers, idempotency_key, callback, context,
            current_user, '', 'pending', now());
    RETURN intent;
END
$$;
COMMENT ON FUNCTION pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb) IS 'Services: writes an outbound request to target stripe, maas, smtp, s3 or test in the current transaction and returns its id; the HTTP executor sends it after commit (retries, backoff, dead letter) and calls callback(intent_id, status, response_headers, response_body, context, final) as its SECURITY DEFINER owner, once for the final outcome. Credentials are added at send time: Stripe Bearer key and Idempotency-Key, MAAS OAuth 1.0 PLAINTEXT, S3 SigV4 query signature.';

-- ---- the executor's side (superuser only) -------------------------------

CREATE FUNCTION pgcloud.http_recover() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n integer;
BEGIN
    UPDATE pgcloud.http_intents SET state = 'pending', next_attempt_at = now(),
           last_error = coalesce(last_error, 'interrupted while in flight; sent again')
     WHERE completed_at IS NULL AND state = 'in_flight';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.http_recover() IS 'HTTP executor, at start: intents left in flight by a crash or a stop go back to pending and are sent again with the same Idempotency-Key. Returns how many.';

CREATE FUNCTION pgcloud.http_claim_all(targets text[], slots integer[])
RETURNS TABLE (target text, id uuid, method text, path text, body text, content_type text, header_lines text[],
               mail_from text, idempotency_key text, attempt integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
SET plan_cache_mode = force_generic_plan   -- run every round: planned once, not per call
-- The generic plan is made once per session, perhaps while the table is
-- small: by index even so, or every claim scans the whole backlog later.
SET enable_seqscan = off
AS $$
BEGIN
    -- One statement for every target; plpgsql so that the plan is kept. The
    -- ids are collected first (each target's partial index, oldest due first,
    -- LIMIT) and the rows updated by primary key: the claim reads what it
    -- takes, not the whole backlog (a join here was planned as a hash join
    -- over every intent).
    RETURN QUERY
    UPDATE pgcloud.http_intents i
       SET state = 'in_flight', attempts = i.attempts + 1, last_attempt_at = clock_timestamp()
     WHERE i.id = ANY (ARRAY(
           SELECT c.id
             FROM unnest(targets, slots) AS t (target, n)
            CROSS JOIN LATERAL (
                  SELECT c.id FROM pgcloud.http_intents c
                   WHERE c.target = t.target AND c.completed_at IS NULL AND c.state IN ('pending', 'failed')
                     AND c.next_attempt_at <= clock_timestamp()
                   ORDER BY c.next_attempt_at
                   LIMIT greatest(t.n, 0)
                   FOR UPDATE SKIP LOCKED) c))
    RETURNING i.target, i.id, i.method, i.path, i.body, i.content_type,
              CASE WHEN i.target = 'smtp' THEN '{}'::text[]
                   ELSE ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM jsonb_each(i.headers) h ORDER BY h.key) END,
              i.headers ->> 'mail_from', coalesce(i.idempotency_key, i.id::text), i.attempts;
END
$$;
COMMENT ON FUNCTION pgcloud.http_claim_all(text[], integer[]) IS 'HTTP executor: marks due intents in flight (one more try each), at most slots[i] of targets[i], oldest due first, and returns what to send.';

CREATE FUNCTION pgcloud.http_claim(target text, max_intents integer)
RETURNS TABLE (id uuid, method text, path text, body text, content_type text, header_lines text[],
               mail_from text, idempotency_key text, attempt integer)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT c.id, c.method, c.path, c.body, c.content_type, c.header_lines, c.mail_from, c.idempotency_key, c.attempt
      FROM pgcloud.http_claim_all(ARRAY[target], ARRAY[max_intents]) c
$$;
COMMENT ON FUNCTION pgcloud.http_claim(text, integer) IS 'HTTP executor: pgcloud.http_claim_all() for one target.';

CREATE FUNCTION pgcloud.http_backoff_ms(attempt integer) RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT (least(pgcloud.policy('core.http_backoff_base_ms', NULL::bigint)::float8 * 2 ^ least(greatest(attempt - 1, 0), 30),
                  pgcloud.policy('core.http_backoff_max_ms', NULL::bigint)::float8)
            * (0.5 + random()))::bigint
$$;
COMMENT ON FUNCTION pgcloud.http_backoff_ms(integer) IS 'Delay before the next try after failed try number attempt: core.http_backoff_base_ms * 2^(attempt-1), capped at core.http_backoff_max_ms, times a jitter factor in [0.5, 1.5).';

CREATE FUNCTION pgcloud.http_call_callback(callback regprocedure, intent_id uuid, status integer,
                                           response_headers jsonb, response_body text, context jsonb,
                                           final boolean, correlation_id text) RETURNS void
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_http_call_callback';
COMMENT ON FUNCTION pgcloud.http_call_callback(regprocedure, uuid, integer, jsonb, text, jsonb, boolean, text) IS 'HTTP executor: calls callback(intent_id, status, response_headers, response_body, context, final) under the given correlation id, if it still exists, is SECURITY DEFINER and the caller may execute it; settings it changes are undone when it returns.';

-- What a callback's failure leaves behind (its own effects were rolled back
-- with its subtransaction): a final callback is tried again with backoff and
-- given up, with a platform.alert, after core.http_callback_max_attempts; a
-- non-final one (best effort) only notes the error.
CREATE FUNCTION pgcloud.http_callback_failed(intent_id uuid, final boolean, err text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    i pgcloud.http_intents;
    max_tries integer;
BEGIN
    err := left(pgcloud.sanitize(coalesce(err, 'unknown error')), 2000);
    IF NOT final THEN
        UPDATE pgcloud.http_intents h SET callback_error = err WHERE h.id = intent_id;
        RETURN;
    END IF;
    max_tries := pgcloud.policy('core.http_callback_max_attempts', NULL::integer);
    UPDATE pgcloud.http_intents h
       SET callback_done_at = NULL, callback_attempts = h.callback_attempts + 1, callback_error = err,
           callback_next_at = clock_timestamp()
               + make_interval(secs => pgcloud.http_backoff_ms(h.callback_attempts + 1) / 1000.0),
           callback_given_up_at = CASE WHEN h.callback_attempts + 1 >= max_tries THEN clock_timestamp() END
     WHERE h.id = intent_id
    RETURNING * INTO i;
    IF i.callback_given_up_at IS NOT NULL THEN
        PERFORM pgcloud.emit('platform.alert', 'http_intent', i.id::text,
            jsonb_build_object('kind', 'http_callback_failed', 'intent_id', i.id, 'target', i.target,
                               'service', i.requested_by, 'callback', i.callback::text,
                               'attempts', i.callback_attempts, 'error', err));
    END IF;
END
$$;
COMMENT ON FUNCTION pgcloud.http_callback_failed(uuid, boolean, text) IS 'HTTP executor: notes that an intent''s callback failed (error scrubbed); a final one is not done (callback_done_at cleared), and is tried again with backoff, or given up with a platform.alert after core.http_callback_max_attempts.';

-- Runs the callback of an intent in a subtransaction of the current
-- transaction. For the final outcome the run is recorded in the same
-- subtransaction as the callback's effect (callback_done_at), so it happens
-- exactly once; a failing final callback is retried with backoff and given up
-- after core.http_callback_max_attempts. A non-final call (final = false,
-- after a failed try that will be retried) is best effort.
CREATE FUNCTION pgcloud.http_run_callback(intent_id uuid, final boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    i pgcloud.http_intents;
    err text;
BEGIN
    SELECT * INTO i FROM pgcloud.http_intents h WHERE h.id = intent_id FOR UPDATE;
    IF NOT FOUND OR i.callback IS NULL THEN
        RETURN false;
    END IF;
    IF final AND (i.state NOT IN ('succeeded', 'dead') OR i.callback_done_at IS NOT NULL
                  OR i.callback_given_up_at IS NOT NULL) THEN
        RETURN false;
    END IF;
    IF NOT final AND i.state <> 'failed' THEN
        RETURN false;
    END IF;
    BEGIN
        PERFORM pgcloud.http_call_callback(i.callback, i.id, i.response_status, i.response_headers,
                                           i.response_body, i.context, final, i.correlation_id);
        IF final THEN
            UPDATE pgcloud.http_intents h SET callback_done_at = clock_timestamp(), callback_error = NULL,
                   callback_next_at = NULL
             WHERE h.id = i.id;
        END IF;
        RETURN true;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        PERFORM pgcloud.http_callback_failed(i.id, final, err);
        RETURN false;
    END;
END
$$;
COMMENT ON FUNCTION pgcloud.http_run_callback(uuid, boolean) IS 'HTTP executor: runs an intent''s callback as its SECURITY DEFINER owner in a subtransaction. Final: at most once (recorded with its effect), retried with backoff when it fails, given up with a platform.alert after core.http_callback_max_attempts. Returns whether it ran.';

CREATE FUNCTION pgcloud.http_record(intent_id uuid, attempt integer, status integer, response_headers jsonb,
                                    response_body text, truncated boolean, error text,
                                    retry_after_seconds integer DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    i pgcloud.http_intents;
    ok boolean;
    retryable boolean;
    next_state text;
    delay_ms bigint;
    clean text := CASE WHEN error IS NOT NULL THEN left(pgcloud.sanitize(error), 2000) END;
BEGIN
    SELECT * INTO i FROM pgcloud.http_intents h WHERE h.id = intent_id FOR UPDATE;
    IF NOT FOUND OR i.state <> 'in_flight' OR i.attempts <> attempt THEN
        RETURN 'stale';      -- a try that was superseded (e.g. recovered and claimed again)
    END IF;
    IF i.target = 'smtp' THEN
        ok := coalesce(error IS NULL AND status BETWEEN 200 AND 399, false);
        retryable := status IS NULL OR status < 500;         -- 4xx: transient; 5xx: permanent
    ELSE
        ok := coalesce(error IS NULL AND status BETWEEN 200 AND 299, false);
        retryable := status IS NULL OR status = 429 OR status >= 500;
    END IF;
    IF ok THEN
        next_state := 'succeeded';
    ELSIF retryable AND attempt < pgcloud.policy('core.http_max_attempts', NULL::integer) THEN
        next_state := 'failed';
    ELSE
        next_state := 'dead';
    END IF;
    IF clean IS NULL AND NOT ok THEN
        clean := CASE WHEN i.target = 'smtp' THEN format('SMTP reply %s', status)
                      ELSE format('HTTP %s', status) END
                 || CASE WHEN next_state = 'dead' AND NOT retryable THEN ' (not retried)' ELSE '' END;
    END IF;
    IF next_state = 'failed' THEN
        IF retry_after_seconds IS NOT NULL AND retry_after_seconds >= 0 THEN
            delay_ms := least(retry_after_seconds, pgcloud.policy('core.http_retry_after_max_seconds', NULL::integer))
                        * 1000::bigint;
        ELSE
            delay_ms := pgcloud.http_backoff_ms(attempt);
        END IF;
    END IF;
    UPDATE pgcloud.http_intents h
       SET state = next_state,
           response_status = status,
           response_headers = http_record.response_headers,
           response_body = http_record.response_body,
           response_truncated = coalesce(truncated, false),
           last_error = coalesce(clean, h.last_error),
           next_attempt_at = CASE WHEN next_state = 'failed'
                                  THEN clock_timestamp() + make_interval(secs => delay_ms / 1000.0)
                                  ELSE h.next_attempt_at END,
           completed_at = CASE WHEN next_state IN ('succeeded', 'dead') THEN clock_timestamp() END,
           callback_next_at = CASE WHEN next_state IN ('succeeded', 'dead') AND h.callback IS NOT NULL
                                   THEN clock_timestamp() END
     WHERE h.id = i.id;
    IF next_state = 'dead' AND retryable AND i.target <> 'smtp' THEN
        -- Retries exhausted: tell the operators (not for e-mail: alerts go out by e-mail).
        PERFORM pgcloud.emit('platform.alert', 'http_intent', i.id::text,
            jsonb_build_object('kind', 'http_dead', 'intent_id', i.id, 'target', i.target, 'method', i.method,
                               'path', pgcloud.sanitize(i.path), 'service', i.requested_by, 'attempts', attempt,
                               'status', status, 'error', clean));
    END IF;
    IF i.callback IS NOT NULL THEN
        PERFORM pgcloud.http_run_callback(i.id, next_state <> 'failed');
    END IF;
    RETURN next_state;
END
$$;
COMMENT ON FUNCTION pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer) IS 'HTTP executor: records the outcome of try number attempt (status NULL = no answer; error scrubbed before it is stored), decides succeeded, failed (retry after Retry-After or backoff with jitter) or dead, and runs the callback in the same transaction. Returns the new state, or stale for a superseded try.';

-- The batched form of pgcloud.http_record(), in two parts. The executor
-- records every transfer finished since its last wake-up with one call of
-- pgcloud.http_record_outcomes(): one UPDATE for all the outcomes, the same
-- decisions, which marks a final callback done in the same write; then each
-- callback runs in a subtransaction of its own, in the same transaction, so
-- the mark and the callback's effects commit together, exactly once. A
-- failing callback rolls back only its own effects and is noted by
-- pgcloud.http_callback_failed() (which takes the mark back).
-- pgcloud.http_record_all() does both parts, in C (bgworkers/http_callback.c:
-- no plpgsql statement and exception block per callback). A try that was
-- superseded is not in the UPDATE and not returned (stale).
CREATE FUNCTION pgcloud.http_record_outcomes(intent_ids uuid[], attempts integer[], statuses integer[],
                                             response_headers jsonb[], response_bodies text[], truncated boolean[],
                                             errors text[], retry_after_seconds integer[])
RETURNS TABLE (intent_id uuid, state text, callback regprocedure, status integer, headers jsonb, body text,
               context jsonb, correlation_id text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
SET plan_cache_mode = force_generic_plan   -- run every round: planned once, not per call
SET enable_seqscan = off                   -- by primary key, however small the table was at planning
AS $$
DECLARE
    max_attempts integer := pgcloud.policy('core.http_max_attempts', NULL::integer);
    retry_after_max integer := pgcloud.policy('core.http_retry_after_max_seconds', NULL::integer);
    r record;
BEGIN
    FOR r IN
    WITH o AS (
        SELECT u.id, u.attempt, u.status, u.headers, u.body, u.truncated, u.retry_after, i.target,
               CASE WHEN u.error IS NOT NULL THEN left(pgcloud.sanitize(u.error), 2000) END AS clean,
               CASE WHEN i.target = 'smtp' THEN coalesce(u.error IS NULL AND u.status BETWEEN 200 AND 399, false)
                    ELSE coalesce(u.error IS NULL AND u.status BETWEEN 200 AND 299, false) END AS ok,
               CASE WHEN i.target = 'smtp' THEN u.status IS NULL OR u.status < 500           -- 4xx: transient; 5xx: permanent
                    ELSE u.status IS NULL OR u.status = 429 OR u.status >= 500 END AS retryable
          FROM unnest(intent_ids, attempts, statuses, response_headers, response_bodies, truncated, errors,
                      retry_after_seconds) AS u (id, attempt, status, headers, body, truncated, error, retry_after)
          JOIN pgcloud.http_intents i ON i.id = u.id
         WHERE i.state = 'in_flight' AND i.attempts = u.attempt
    ), s AS (
        SELECT o.*, CASE WHEN o.ok THEN 'succeeded'
                         WHEN o.retryable AND o.attempt < max_attempts THEN 'failed'
                         ELSE 'dead' END AS next_state
          FROM o
    ), d AS (
        SELECT s.id, s.attempt, s.status, s.headers, s.body, s.truncated, s.target, s.retryable, s.next_state,
               CASE WHEN s.clean IS NULL AND NOT s.ok
                    THEN CASE WHEN s.target = 'smtp' THEN format('SMTP reply %s', s.status)
                              ELSE format('HTTP %s', s.status) END
                         || CASE WHEN s.next_state = 'dead' AND NOT s.retryable THEN ' (not retried)' ELSE '' END
                    ELSE s.clean END AS clean,
               CASE WHEN s.next_state <> 'failed' THEN NULL
                    WHEN s.retry_after IS NOT NULL AND s.retry_after >= 0
                    THEN least(s.retry_after, retry_after_max) * 1000::bigint
                    ELSE pgcloud.http_backoff_ms(s.attempt) END AS delay_ms
          FROM s
    )
    UPDATE pgcloud.http_intents h
       SET state = d.next_state,
           response_status = d.status,
           response_headers = d.headers,
           response_body = d.body,
           response_truncated = coalesce(d.truncated, false),
           last_error = coalesce(d.clean, h.last_error),
           next_attempt_at = CASE WHEN d.next_state = 'failed'
                                  THEN clock_timestamp() + make_interval(secs => d.delay_ms / 1000.0)
                                  ELSE h.next_attempt_at END,
           completed_at = CASE WHEN d.next_state IN ('succeeded', 'dead') THEN clock_timestamp() END,
           -- A final callback is marked done here, before it runs, in
           -- the same transaction as its effects (one write of the row,
           -- not two); should it fail, pgcloud.http_callback_failed()
           -- takes the mark back and schedules it again.
           callback_done_at = CASE WHEN d.next_state IN ('succeeded', 'dead') AND h.callback IS NOT NULL
                                   THEN clock_timestamp() END,
           callback_error = CASE WHEN d.next_state IN ('succeeded', 'dead') AND h.callback IS NOT NULL
                                 THEN NULL ELSE h.callback_error END,
           callback_next_at = NULL
      FROM d
     WHERE h.id = d.id AND h.state = 'in_flight' AND h.attempts = d.attempt
    RETURNING h.id, h.state, h.target, h.method, h.path, h.requested_by, h.attempts, h.callback,
              h.response_status, h.response_headers, h.response_body, h.context, h.correlation_id,
              d.retryable, d.clean
    LOOP
        IF r.state = 'dead' AND r.retryable AND r.target <> 'smtp' THEN
            -- Retries exhausted: tell the operators (not for e-mail: alerts go out by e-mail).
            PERFORM pgcloud.emit('platform.alert', 'http_intent', r.id::text,
                jsonb_build_object('kind', 'http_dead', 'intent_id', r.id, 'target', r.target, 'method', r.method,
                                   'path', pgcloud.sanitize(r.path), 'service', r.requested_by,
                                   'attempts', r.attempts, 'status', r.response_status, 'error', r.clean));
        END IF;
        intent_id := r.id;
        state := r.state;
        callback := r.callback;
        status := r.response_status;
        headers := r.response_headers;
        body := r.response_body;
        context := r.context;
        correlation_id := r.correlation_id;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgcloud.http_record_outcomes(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[]) IS 'HTTP executor: records many outcomes at once (element i of each array is one outcome) with one UPDATE, which marks final callbacks done, and alerts the operators of intents dead after their retries. Returns, per intent recorded, its new state and what its callback is called with; the caller runs each callback in a subtransaction of its own in the same transaction (pgcloud.http_call_callback(), and pgcloud.http_callback_failed() when one fails). Superseded tries are left out.';

CREATE FUNCTION pgcloud.http_record_all(intent_ids uuid[], attempts integer[], statuses integer[],
                                        response_headers jsonb[], response_bodies text[], truncated boolean[],
                                        errors text[], retry_after_seconds integer[])
RETURNS TABLE (intent_id uuid, state text)
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pgcloud      -- what the callbacks run under
AS 'MODULE_PATHNAME', 'pgcloud_http_record_all';
COMMENT ON FUNCTION pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[]) IS 'pgcloud.http_record() for many outcomes at once (element i of each array is one outcome): pgcloud.http_record_outcomes() (one UPDATE, which marks final callbacks done), then each callback in its own subtransaction (a failing one undone alone and its mark taken back), all in the caller''s transaction. Returns the new state of each intent recorded; superseded tries are left out.';

CREATE FUNCTION pgcloud.http_callbacks_due(max_intents integer) RETURNS SETOF uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
SET plan_cache_mode = force_generic_plan   -- run every round: planned once, not per call
AS $$
BEGIN
    RETURN QUERY
    SELECT h.id FROM pgcloud.http_intents h
     WHERE h.callback IS NOT NULL AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL
       AND h.completed_at IS NOT NULL AND h.state IN ('succeeded', 'dead') AND h.callback_next_at <= clock_timestamp()
     ORDER BY h.callback_next_at
     LIMIT max_intents;
END
$$;
COMMENT ON FUNCTION pgcloud.http_callbacks_due(integer) IS 'HTTP executor: final outcomes whose callback failed and is due again.';

CREATE FUNCTION pgcloud.http_next_due_ms(targets text[]) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
SET plan_cache_mode = force_generic_plan   -- run most rounds: planned once, not per call
AS $$
DECLARE
    due timestamptz;
BEGIN
    SELECT min(x.m) INTO due
      FROM (SELECT (SELECT h.next_attempt_at FROM pgcloud.http_intents h
                     WHERE h.target = tg AND h.completed_at IS NULL AND h.state IN ('pending', 'failed')
                     ORDER BY h.next_attempt_at LIMIT 1) AS m
              FROM unnest(targets) tg
            UNION ALL
            SELECT min(h.callback_next_at) FROM pgcloud.http_intents h
             WHERE h.callback IS NOT NULL AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL
               AND h.completed_at IS NOT NULL AND h.state IN ('succeeded', 'dead')) x;
    IF due IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(ceil(extract(epoch FROM due - clock_timestamp()) * 1000), 0)::bigint;
END
$$;
COMMENT ON FUNCTION pgcloud.http_next_due_ms(text[]) IS 'HTTP executor: milliseconds until the next intent of the given targets (those with free capacity) or failed callback is due; NULL when none waits.';

-- ---- operators ----------------------------------------------------------

CREATE VIEW pgcloud.http_intents_status AS
    SELECT t.target,
           count(h.id) FILTER (WHERE h.state = 'pending') AS pending,
           count(h.id) FILTER (WHERE h.state = 'in_flight') AS in_flight,
           count(h.id) FILTER (WHERE h.state = 'failed') AS retrying,
           count(h.id) FILTER (WHERE h.state = 'succeeded') AS succeeded,
           count(h.id) FILTER (WHERE h.state = 'dead') AS dead,
           min(h.created_at) FILTER (WHERE h.state IN ('pending', 'failed', 'in_flight')) AS oldest_pending_at,
           coalesce(extract(epoch FROM now() - min(h.created_at)
                    FILTER (WHERE h.state IN ('pending', 'failed', 'in_flight'))), 0)::numeric(12, 3)
               AS oldest_pending_seconds,
           max(h.completed_at) FILTER (WHERE h.state = 'dead') AS last_dead_at,
           count(h.id) FILTER (WHERE h.callback IS NOT NULL AND h.state IN ('succeeded', 'dead')
                                 AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL)
               AS callbacks_pending,
           count(h.id) FILTER (WHERE h.callback_given_up_at IS NOT NULL) AS callbacks_failed
      FROM (VALUES ('stripe'), ('maas'), ('smtp'), ('test'), ('s3')) AS t (target)
      LEFT JOIN pgcloud.http_intents h ON h.target = t.target
     GROUP BY t.target
     ORDER BY t.target;
COMMENT ON VIEW pgcloud.http_intents_status IS 'Operators: outbound HTTP intents per target and state, the oldest undone one, dead letters and callbacks waiting or given up.';
COMMENT ON COLUMN pgcloud.http_intents_status.target IS 'stripe, maas, smtp, s3 or test.';
COMMENT ON COLUMN pgcloud.http_intents_status.pending IS 'Intents not yet tried.';
COMMENT ON COLUMN pgcloud.http_intents_status.in_flight IS 'Intents being sent now.';
COMMENT ON COLUMN pgcloud.http_intents_status.retrying IS 'Intents that failed and wait for a retry (state failed).';
COMMENT ON COLUMN pgcloud.http_intents_status.succeeded IS 'Intents answered with success.';
COMMENT ON COLUMN pgcloud.http_intents_status.dead IS 'Intents given up (retries exhausted or refused).';
COMMENT ON COLUMN pgcloud.http_intents_status.oldest_pending_at IS 'Creation time of the oldest intent not yet done.';
COMMENT ON COLUMN pgcloud.http_intents_status.oldest_pending_seconds IS 'Its age in seconds (0 when none).';
COMMENT ON COLUMN pgcloud.http_intents_status.last_dead_at IS 'When the last intent was given up.';
COMMENT ON COLUMN pgcloud.http_intents_status.callbacks_pending IS 'Final outcomes whose callback has not run yet (failed and waiting for a retry).';
COMMENT ON COLUMN pgcloud.http_intents_status.callbacks_failed IS 'Callbacks given up after core.http_callback_max_attempts.';

CREATE VIEW pgcloud.http_dead_intents AS
    SELECT h.id, h.target, h.method, pgcloud.sanitize(h.path) AS path, h.requested_by, h.attempts,
           h.response_status, h.last_error, h.created_at, h.completed_at
      FROM pgcloud.http_intents h
     WHERE h.state = 'dead'
     ORDER BY h.completed_at DESC
     LIMIT 100;
COMMENT ON VIEW pgcloud.http_dead_intents IS 'Operators: the 100 most recent dead HTTP intents and why they died.';
COMMENT ON COLUMN pgcloud.http_dead_intents.id IS 'Intent id.';
COMMENT ON COLUMN pgcloud.http_dead_intents.target IS 'Target.';
COMMENT ON COLUMN pgcloud.http_dead_intents.method IS 'Method.';
COMMENT ON COLUMN pgcloud.http_dead_intents.path IS 'Path (scrubbed).';
COMMENT ON COLUMN pgcloud.http_dead_intents.requested_by IS 'The requesting service role.';
COMMENT ON COLUMN pgcloud.http_dead_intents.attempts IS 'Tries made.';
COMMENT ON COLUMN pgcloud.http_dead_intents.response_status IS 'Last status (NULL: no answer).';
COMMENT ON COLUMN pgcloud.http_dead_intents.last_error IS 'Last error, scrubbed.';
COMMENT ON COLUMN pgcloud.http_dead_intents.created_at IS 'When it was written.';
COMMENT ON COLUMN pgcloud.http_dead_intents.completed_at IS 'When it was given up.';

COMMENT ON COLUMN pgcloud.workers.worker IS 'relay, consumer or http (the HTTP intent executor).';
