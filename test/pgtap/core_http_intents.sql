-- HTTP intents: who may write them, and the executor's decisions, driven
-- services: core
-- through the same functions the worker calls (pgcloud.http_claim,
-- pgcloud.http_record, pgcloud.http_run_callback, pgcloud.http_recover):
-- retry and backoff, Retry-After, dead letter, SMTP reply codes, callbacks
-- exactly once per final outcome, failing callbacks, crash recovery.
BEGIN;
SELECT * FROM no_plan();
SET LOCAL request.headers = '{"x-correlation-id": "tap-corr-1"}';

SELECT pgcloud.set_policy('core.http_max_attempts', '3');
SELECT pgcloud.set_policy('core.http_backoff_base_ms', '1000');
SELECT pgcloud.set_policy('core.http_callback_max_attempts', '2');

CREATE SCHEMA taphttp;
-- The executor's entry points run as the core, which calls the callbacks.
GRANT USAGE ON SCHEMA taphttp TO pgcloud_svc_core;
CREATE TABLE taphttp.seen (n serial, intent_id uuid, status integer, body text, context jsonb, final boolean,
                           correlation_id text, run_as name);
CREATE TABLE taphttp.switch (fail boolean NOT NULL);
INSERT INTO taphttp.switch VALUES (false);
CREATE FUNCTION taphttp.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                           context jsonb, final boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO taphttp.seen (intent_id, status, body, context, final, correlation_id, run_as)
    VALUES (intent_id, status, response_body, context, final, current_setting('pgcloud.correlation_id', true),
            current_user);
    IF (SELECT fail FROM taphttp.switch) THEN
        RAISE EXCEPTION 'callback broke while mailing bob@example.com';
    END IF;
END $$;
CREATE FUNCTION taphttp.intent(target text, tag text, method text DEFAULT 'POST') RETURNS uuid
LANGUAGE sql AS $$
    SELECT pgcloud.http_request(target, CASE WHEN target = 'smtp' THEN 'SEND' ELSE method END,
                                CASE WHEN target = 'smtp' THEN 'alice@example.com' ELSE '/v1/' || tag END,
                                'k=' || tag, NULL,
                                CASE WHEN target = 'smtp' THEN '{"mail_from": "noreply@pgcloud.invalid"}'::jsonb
                                     ELSE '{"X-Tag": "t"}'::jsonb END,
                                NULL, 'taphttp.cb(uuid, integer, jsonb, text, jsonb, boolean)',
                                jsonb_build_object('tag', tag))
$$;
-- Claims one intent (made due first) and returns its try number.
CREATE FUNCTION taphttp.claim(intent uuid) RETURNS integer LANGUAGE sql AS $$
    UPDATE pgcloud.http_intents SET next_attempt_at = now() - interval '1 second' WHERE id = intent;
    SELECT c.attempt FROM pgcloud.http_claim((SELECT target FROM pgcloud.http_intents WHERE id = intent), 1000) c
     WHERE c.id = intent;
$$;
CREATE FUNCTION taphttp.state(intent uuid) RETURNS text LANGUAGE sql AS $$
    SELECT state FROM pgcloud.http_intents WHERE id = intent $$;
CREATE FUNCTION taphttp.delay_s(intent uuid) RETURNS float8 LANGUAGE sql AS $$
    SELECT extract(epoch FROM next_attempt_at - clock_timestamp()) FROM pgcloud.http_intents WHERE id = intent $$;

-- Runs a statement as another role; returns ok or the SQLSTATE and message.
CREATE FUNCTION taphttp.as_role(role_name name, stmt text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', role_name);
    BEGIN
        EXECUTE stmt;
        RESET ROLE;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        RESET ROLE;
        RETURN SQLSTATE || ' ' || SQLERRM;
    END;
END $$;

-- ---- who may write intents ------------------------------------------------
SELECT ok(has_function_privilege('pgcloud_svc_payments',
          'pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb)', 'EXECUTE'),
    'services may call pgcloud.http_request()');
SELECT ok(NOT has_function_privilege('pgcloud_user',
          'pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_anon',
          'pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_admin',
          'pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb)', 'EXECUTE'),
    'API roles may not');
SELECT ok(has_table_privilege('pgcloud_svc_payments', 'pgcloud.http_intents', 'INSERT')
      AND NOT has_table_privilege('pgcloud_svc_payments', 'pgcloud.http_intents', 'SELECT')
      AND NOT has_table_privilege('pgcloud_svc_payments', 'pgcloud.http_intents', 'UPDATE')
      AND NOT has_table_privilege('pgcloud_svc_payments', 'pgcloud.http_intents', 'DELETE'),
    'services may insert intents, not read, change or delete them');
SELECT ok(NOT has_function_privilege('pgcloud_svc_payments',
          'pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_svc_payments', 'pgcloud.http_claim(text, integer)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_svc_payments', 'pgcloud.http_run_callback(uuid, boolean)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_svc_payments', 'pgcloud.http_recover()', 'EXECUTE'),
    'the executor''s functions are superuser-only');
SELECT ok(has_table_privilege('pgcloud_admin', 'pgcloud.http_intents_status', 'SELECT')
      AND has_table_privilege('pgcloud_admin', 'pgcloud.http_dead_intents', 'SELECT')
      AND NOT has_table_privilege('pgcloud_admin', 'pgcloud.http_intents', 'SELECT'),
    'admins see the operator views, not the intents (bodies) themselves');

-- A service writes an intent with its own callback; the intent records the service.
CREATE FUNCTION taphttp.payments_cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                    context jsonb, final boolean) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$ SELECT $$;
ALTER FUNCTION taphttp.payments_cb(uuid, integer, jsonb, text, jsonb, boolean) OWNER TO pgcloud_svc_payments;
GRANT USAGE ON SCHEMA taphttp TO pgcloud_svc_payments, pgcloud_svc_billing;
SET LOCAL ROLE pgcloud_svc_payments;
SELECT pgcloud.http_request('stripe', 'POST', '/v1/checkout/sessions', 'mode=payment', 'application/x-www-form-urlencoded',
                            '{}', 'pay-1', 'taphttp.payments_cb(uuid, integer, jsonb, text, jsonb, boolean)') AS pay_intent \gset
RESET ROLE;
SELECT is((SELECT requested_by::text FROM pgcloud.http_intents WHERE id = :'pay_intent'), 'pgcloud_svc_payments',
    'the intent records the requesting service');
SELECT alike(taphttp.as_role('pgcloud_svc_payments', $$UPDATE pgcloud.http_intents SET state = 'succeeded'$$),
    '42501 %', 'a service cannot change intents');
SELECT alike(taphttp.as_role('pgcloud_svc_payments', $$SELECT pgcloud.http_request('stripe', 'POST', '/v1/refunds',
                              callback => 'taphttp.cb(uuid, integer, jsonb, text, jsonb, boolean)')$$),
    '%the callback must belong to the requesting service%', 'a service cannot hand its results to another''s callback');
SELECT alike(taphttp.as_role('pgcloud_user', $$SELECT pgcloud.http_request('test', 'GET', '/')$$), '42501 %',
    'a user cannot write intents');
DELETE FROM pgcloud.http_intents;

-- ---- claim ------------------------------------------------------------------
SELECT taphttp.intent('test', 'a') AS a, taphttp.intent('test', 'b') AS b, taphttp.intent('test', 'c') AS c \gset
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 2)), 2, 'a claim takes at most the free capacity');
SELECT is((SELECT array_agg(state ORDER BY state) FROM pgcloud.http_intents), ARRAY['in_flight', 'in_flight', 'pending'],
    'claimed intents are in flight, the rest pending');
SELECT is((SELECT row(c.attempt, c.idempotency_key, c.header_lines, c.mail_from)::text
             FROM pgcloud.http_claim('test', 5) c),
          row(1, :'c'::text, ARRAY['X-Tag: t'], NULL::text)::text,
    'a claim returns the try number, the Idempotency-Key (the intent id when none was given) and the header lines');
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 5)), 0, 'nothing is claimed twice');

-- ---- success, exactly one callback -------------------------------------------------
SELECT is(pgcloud.http_record(:'a', 1, 200, '{"content-type": "application/json"}', '{"ok": true}', false, NULL),
    'succeeded', '2xx: succeeded');
SELECT is((SELECT row(status, body, context, final, correlation_id)::text FROM taphttp.seen WHERE intent_id = :'a'),
          row(200, '{"ok": true}', '{"tag": "a"}'::jsonb, true, 'tap-corr-1')::text,
    'the callback got status, body, context, final, under the correlation id of the request that wrote the intent');
SELECT is((SELECT run_as::text FROM taphttp.seen WHERE intent_id = :'a'), current_user::text,
    'the callback ran as its owner (SECURITY DEFINER)');
SELECT ok((SELECT callback_done_at IS NOT NULL AND completed_at IS NOT NULL FROM pgcloud.http_intents WHERE id = :'a'),
    'the callback''s run is recorded with it');
SELECT is(pgcloud.http_run_callback(:'a'), false, 'a second run of the final callback does nothing');
SELECT is(pgcloud.http_record(:'a', 1, 200, '{}', 'again', false, NULL), 'stale', 'a late second outcome is stale');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'a'), 1, 'the callback ran exactly once');

-- ---- 5xx: retry with backoff, then Retry-After, then dead letter -----------------------------
SELECT is(pgcloud.http_record(:'b', 1, 503, '{}', 'busy', false, NULL), 'failed', '503 on try 1 of 3: retried');
SELECT ok(taphttp.delay_s(:'b') BETWEEN 0.45 AND 1.55, 'first backoff: base 1 s with jitter (0.5 to 1.5 s)');
SELECT is((SELECT row(status, final)::text FROM taphttp.seen WHERE intent_id = :'b'), row(503, false)::text,
    'the callback heard of the failed try (final = false)');
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 5) WHERE id = :'b'), 0, 'not claimed before it is due');
SELECT is(taphttp.claim(:'b'), 2, 'claimed again when due: try 2');
SELECT is(pgcloud.http_record(:'b', 2, NULL, NULL, NULL, false,
          'Recv failure: Connection reset by peer; Authorization: Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc'),
    'failed', 'a connection error is retried');
SELECT ok(taphttp.delay_s(:'b') BETWEEN 0.95 AND 3.05, 'second backoff doubles: 1 to 3 s');
SELECT ok((SELECT last_error NOT LIKE '%sk_live%' AND last_error LIKE '%Connection reset by peer%'
             FROM pgcloud.http_intents WHERE id = :'b'),
    'the stored error is scrubbed of secrets');
SELECT is(taphttp.claim(:'b'), 3, 'try 3');
SELECT is(pgcloud.http_record(:'b', 3, 503, '{"retry-after": "30"}', 'later', false, NULL, 30), 'dead',
    'the last try fails: dead, whatever Retry-After says');
SELECT is((SELECT array_agg(final ORDER BY n) FROM taphttp.seen WHERE intent_id = :'b'), ARRAY[false, false, true],
    'one callback per failed try, then exactly one final');
SELECT is((SELECT payload - 'intent_id' FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'b'),
    jsonb_build_object('kind', 'http_dead', 'target', 'test', 'method', 'POST', 'path', '/v1/b', 'service',
                       current_user::text, 'attempts', 3, 'status', 503, 'error', 'HTTP 503'),
    'retries exhausted: a platform.alert for the operators');

SELECT taphttp.intent('test', 'ra') AS ra \gset
SELECT is(taphttp.claim(:'ra'), 1, 'another intent');
SELECT is(pgcloud.http_record(:'ra', 1, 429, '{"retry-after": "30"}', 'slow down', false, NULL, 30), 'failed',
    '429: retried');
SELECT ok(taphttp.delay_s(:'ra') BETWEEN 29.5 AND 30.5, 'after Retry-After (30 s), not the backoff');
SELECT ok((SELECT pgcloud.http_next_due_ms(ARRAY['test']) BETWEEN 29000 AND 30500), 'the executor knows when it is due');
SELECT is(pgcloud.http_next_due_ms(ARRAY['maas']), NULL, 'and that nothing else waits');
SELECT pgcloud.set_policy('core.http_retry_after_max_seconds', '5');
SELECT is(taphttp.claim(:'ra'), 2, 'try 2');
SELECT is(pgcloud.http_record(:'ra', 2, 503, '{}', 'x', false, NULL, 86400), 'failed', '503 with a day of Retry-After');
SELECT ok(taphttp.delay_s(:'ra') BETWEEN 4.5 AND 5.5, 'Retry-After is capped by core.http_retry_after_max_seconds');

-- ---- 4xx: final at once -----------------------------------------------------------------
SELECT taphttp.intent('test', 'nf') AS nf \gset
SELECT is(taphttp.claim(:'nf'), 1, 'an intent the target refuses');
SELECT is(pgcloud.http_record(:'nf', 1, 404, '{}', '{"error": "no such thing"}', false, NULL), 'dead',
    '404: dead on the first try, not retried');
SELECT is((SELECT last_error FROM pgcloud.http_intents WHERE id = :'nf'), 'HTTP 404 (not retried)', 'and says why');
SELECT is((SELECT row(status, body, final)::text FROM taphttp.seen WHERE intent_id = :'nf'),
          row(404, '{"error": "no such thing"}', true)::text, 'the callback gets the status and body, final');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'nf'), 0,
    'a refusal is the service''s business: no platform alert');

-- ---- SMTP reply codes -------------------------------------------------------------------
SELECT taphttp.intent('smtp', 's1') AS s1, taphttp.intent('smtp', 's2') AS s2 \gset
SELECT is((SELECT array_agg(c.mail_from) FROM pgcloud.http_claim('smtp', 5) c),
    ARRAY['noreply@pgcloud.invalid', 'noreply@pgcloud.invalid'], 'smtp claims carry the envelope sender');
SELECT is(pgcloud.http_record(:'s1', 1, 451, NULL, NULL, false, 'RCPT failed: 451'), 'failed', 'SMTP 451: retried');
SELECT is(pgcloud.http_record(:'s2', 1, 550, NULL, NULL, false, 'RCPT failed: 550'), 'dead', 'SMTP 550: dead at once');
SELECT is(taphttp.claim(:'s1'), 2, 'the 451 comes again');
SELECT is(pgcloud.http_record(:'s1', 2, 250, NULL, NULL, false, NULL), 'succeeded', 'SMTP 250: sent');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'s2'), 0,
    'no alert for a dead e-mail (alerts go out by e-mail)');

-- ---- failing callbacks ------------------------------------------------------------------
UPDATE taphttp.switch SET fail = true;
SELECT taphttp.intent('test', 'cf') AS cf \gset
SELECT is(taphttp.claim(:'cf'), 1, 'an intent whose callback fails');
SELECT is(pgcloud.http_record(:'cf', 1, 201, '{}', 'created', false, NULL), 'succeeded',
    'the outcome is recorded even though the callback failed');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'cf'), 0, 'the callback''s effect rolled back');
SELECT ok((SELECT callback_done_at IS NULL AND callback_attempts = 1 AND callback_next_at > clock_timestamp()
                  AND callback_error LIKE '%callback broke%' AND callback_error NOT LIKE '%bob@example.com%'
             FROM pgcloud.http_intents WHERE id = :'cf'),
    'the failure is counted, scrubbed, and the callback scheduled again');
UPDATE pgcloud.http_intents SET callback_next_at = now() - interval '1 second' WHERE id = :'cf';
SELECT ok(:'cf' IN (SELECT pgcloud.http_callbacks_due(10)), 'due again for the executor');
SELECT is(pgcloud.http_run_callback(:'cf'), false, 'it fails again');
SELECT ok((SELECT callback_given_up_at IS NOT NULL AND callback_attempts = 2 FROM pgcloud.http_intents WHERE id = :'cf'),
    'given up after core.http_callback_max_attempts');
SELECT is((SELECT payload ->> 'kind' FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'cf'),
    'http_callback_failed', 'with a platform alert');
SELECT ok(:'cf' NOT IN (SELECT pgcloud.http_callbacks_due(10)), 'and no more tries');

SELECT taphttp.intent('test', 'cr') AS cr \gset
SELECT is(taphttp.claim(:'cr'), 1, 'an intent whose callback fails once');
SELECT is(pgcloud.http_record(:'cr', 1, 200, '{}', 'ok', false, NULL), 'succeeded', 'recorded');
UPDATE taphttp.switch SET fail = false;
SELECT is(pgcloud.http_run_callback(:'cr'), true, 'the retried callback runs');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'cr' AND final), 1,
    'its effect is there exactly once');

-- ---- crash recovery ------------------------------------------------------------------------
SELECT taphttp.intent('test', 'rc') AS rc \gset
SELECT is(taphttp.claim(:'rc'), 1, 'an intent in flight when the worker died');
SELECT ok(pgcloud.http_recover() >= 1, 'at start, the executor puts intents in flight back');
SELECT is(taphttp.state(:'rc'), 'pending', 'pending again');
SELECT is((SELECT row(c.attempt, c.idempotency_key)::text FROM pgcloud.http_claim('test', 100) c WHERE c.id = :'rc'),
          row(2, :'rc'::text)::text, 'sent again as the next try with the same Idempotency-Key');

-- ---- operators ----------------------------------------------------------------------
SELECT is((SELECT row(succeeded, dead, retrying, in_flight)::text FROM pgcloud.http_intents_status WHERE target = 'test'),
          row(3, 2, 1, 2)::text, 'pgcloud.http_intents_status counts by state');
SELECT is((SELECT array_agg(path ORDER BY path) FROM pgcloud.http_dead_intents WHERE target = 'test'),
    ARRAY['/v1/b', '/v1/nf'], 'pgcloud.http_dead_intents lists them');

-- ---- many outcomes at once (pgcloud.http_record_all, what the executor calls) ---------------
DELETE FROM pgcloud.http_intents;
TRUNCATE taphttp.seen;
CREATE FUNCTION taphttp.cb_boom(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                context jsonb, final boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO taphttp.seen (intent_id, status, body, context, final, correlation_id, run_as)
    VALUES (intent_id, status, response_body, context, final, current_setting('pgcloud.correlation_id', true),
            current_user);
    IF context ->> 'tag' = 'boom' THEN
        RAISE EXCEPTION 'boom while mailing bob@example.com';
    END IF;
END $$;
CREATE FUNCTION taphttp.intent_boom(tag text) RETURNS uuid LANGUAGE sql AS $$
    SELECT pgcloud.http_request('test', 'POST', '/v1/' || tag, callback => 'taphttp.cb_boom(uuid, integer, jsonb, text, jsonb, boolean)',
                                context => jsonb_build_object('tag', tag)) $$;
SELECT taphttp.intent_boom('m1') AS m1, taphttp.intent_boom('m2') AS m2, taphttp.intent_boom('m3') AS m3,
       taphttp.intent_boom('boom') AS mb, taphttp.intent_boom('m5') AS m5, taphttp.intent_boom('m6') AS m6 \gset
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 10)), 6, 'six intents in flight');
UPDATE pgcloud.http_intents SET attempts = 3 WHERE id = :'m6';   -- its last try
SELECT is((SELECT array_agg(r.intent_id::text || ' ' || r.state ORDER BY r.intent_id::text)
             FROM pgcloud.http_record_all(
                  ARRAY[:'m1', :'m2', :'m3', :'mb', :'m5', :'m6']::uuid[], ARRAY[1, 1, 1, 1, 2, 3],
                  ARRAY[200, 503, 404, 201, 200, 503], ARRAY['{"a": "1"}', '{}', '{}', '{}', '{}', '{}']::jsonb[],
                  ARRAY['one', 'busy', 'nope', 'made', 'late', 'still busy'], ARRAY[false, false, false, false, false, false],
                  ARRAY[NULL, NULL, NULL, NULL, NULL, 'Authorization: Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc'],
                  ARRAY[NULL, NULL, NULL, NULL, NULL, NULL]::integer[]) r),
          (SELECT array_agg(x ORDER BY x) FROM unnest(ARRAY[:'m1' || ' succeeded', :'m2' || ' failed', :'m3' || ' dead',
                                                             :'mb' || ' succeeded', :'m6' || ' dead']) x),
    'one call records many outcomes: succeeded, retried, refused, dead after the last try; a superseded try (m5, try 2 of 1) is left out');
SELECT is(taphttp.state(:'m5'), 'in_flight', 'the superseded try changed nothing');
SELECT is((SELECT array_agg(row(s.status, s.body, s.final, s.correlation_id)::text ORDER BY s.status, s.body)
             FROM taphttp.seen s WHERE s.intent_id IN (:'m1', :'m2', :'m3', :'m6')),
          ARRAY[row(200, 'one', true, 'tap-corr-1')::text, row(404, 'nope', true, 'tap-corr-1')::text,
                row(503, 'busy', false, 'tap-corr-1')::text, row(503, 'still busy', true, 'tap-corr-1')::text],
    'each callback ran once, with its own outcome, final or not, under the correlation id of its request');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'mb'), 0,
    'the failing callback''s effect rolled back alone');
SELECT ok((SELECT callback_done_at IS NULL AND callback_attempts = 1 AND callback_next_at > clock_timestamp()
                  AND callback_error LIKE '%boom%' AND callback_error NOT LIKE '%bob@example.com%'
             FROM pgcloud.http_intents WHERE id = :'mb'),
    'and it is counted, scrubbed, and scheduled again');
SELECT is((SELECT array_agg(id::text ORDER BY id::text) FROM pgcloud.http_intents
            WHERE callback_done_at IS NOT NULL),
          (SELECT array_agg(x ORDER BY x) FROM unnest(ARRAY[:'m1', :'m3', :'m6']) x),
    'the final callbacks that ran are marked done (not the non-final one, not the failed one)');
SELECT is((SELECT row(response_status, response_headers, response_body, completed_at IS NOT NULL)::text
             FROM pgcloud.http_intents WHERE id = :'m1'),
          row(200, '{"a": "1"}'::jsonb, 'one', true)::text, 'the answer is recorded');
SELECT ok(taphttp.delay_s(:'m2') BETWEEN 0.45 AND 1.55, 'a retried try waits for its backoff');
SELECT is((SELECT last_error FROM pgcloud.http_intents WHERE id = :'m3'), 'HTTP 404 (not retried)', 'a refusal says why');
SELECT ok((SELECT last_error NOT LIKE '%sk_live%' FROM pgcloud.http_intents WHERE id = :'m6'), 'errors are scrubbed');
SELECT is((SELECT payload ->> 'kind' FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'m6'),
    'http_dead', 'retries exhausted: a platform.alert');
SELECT is((SELECT count(*)::int FROM pgcloud.outbox WHERE event_type = 'platform.alert' AND aggregate_id = :'m3'), 0,
    'a refusal: none');
SELECT is((SELECT count(*)::int FROM pgcloud.http_record_all(ARRAY[:'m1']::uuid[], ARRAY[1], ARRAY[200], ARRAY['{}']::jsonb[],
                                                             ARRAY['again'], ARRAY[false], ARRAY[NULL]::text[], ARRAY[NULL]::integer[])),
    0, 'a late second outcome is stale');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'m1'), 1, 'and its callback does not run again');
SELECT is(pgcloud.http_run_callback(:'mb'), false, 'the failed callback is run again by the executor later (it fails again)');
SELECT ok(NOT has_function_privilege('pgcloud_svc_payments',
          'pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[])', 'EXECUTE')
      AND has_function_privilege('pgcloud_worker_http',
          'pgcloud.http_record_all(uuid[], integer[], integer[], jsonb[], text[], boolean[], text[], integer[])', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_worker_http', 'pgcloud.http_callback_failed(uuid, boolean, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_worker_http',
          'pgcloud.http_call_callback(regprocedure, uuid, integer, jsonb, text, jsonb, boolean, text)', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_svc_payments',
          'pgcloud.http_call_callback(regprocedure, uuid, integer, jsonb, text, jsonb, boolean, text)', 'EXECUTE'),
    'only the executor may record outcomes, and nobody may call callbacks but the core');

-- A callback that is no longer SECURITY DEFINER would run as the core: it is not called.
SELECT taphttp.intent_boom('inv') AS inv, taphttp.intent_boom('gucs') AS gucs \gset
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 10)), 2, 'two more in flight');
ALTER FUNCTION taphttp.cb_boom(uuid, integer, jsonb, text, jsonb, boolean) SECURITY INVOKER;
SELECT is((SELECT r.state FROM pgcloud.http_record_all(ARRAY[:'inv']::uuid[], ARRAY[1], ARRAY[200], ARRAY['{}']::jsonb[],
                                                       ARRAY['x'], ARRAY[false], ARRAY[NULL]::text[], ARRAY[NULL]::integer[]) r),
    'succeeded', 'the outcome is recorded');
SELECT is((SELECT count(*)::int FROM taphttp.seen WHERE intent_id = :'inv'), 0, 'a SECURITY INVOKER callback is not run');
SELECT ok((SELECT callback_done_at IS NULL AND callback_error LIKE '%is not SECURITY DEFINER%'
             FROM pgcloud.http_intents WHERE id = :'inv'), 'and its failure is noted');
ALTER FUNCTION taphttp.cb_boom(uuid, integer, jsonb, text, jsonb, boolean) SECURITY DEFINER;
-- Settings a callback changes do not outlive it (the next callback runs under the executor's own).
CREATE OR REPLACE FUNCTION taphttp.cb_boom(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                           context jsonb, final boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO taphttp.seen (intent_id, status, body, context, final, correlation_id, run_as)
    VALUES (intent_id, status, response_body, context, final, current_setting('pgcloud.correlation_id', true),
            current_user);
    PERFORM set_config('statement_timeout', '4242', true);
    PERFORM set_config('work_mem', '4242kB', false);
END $$;
SELECT is((SELECT r.state FROM pgcloud.http_record_all(ARRAY[:'gucs']::uuid[], ARRAY[1], ARRAY[200], ARRAY['{}']::jsonb[],
                                                       ARRAY['x'], ARRAY[false], ARRAY[NULL]::text[], ARRAY[NULL]::integer[]) r),
    'succeeded', 'a callback that changes settings');
SELECT is((SELECT correlation_id FROM taphttp.seen WHERE intent_id = :'gucs'), 'tap-corr-1', 'ran under its correlation id');
SELECT ok(current_setting('statement_timeout') <> '4242ms' AND current_setting('work_mem') <> '4242kB',
    'and its settings were undone when it returned');

-- ---- the claim writes no index entry (a HOT update) ------------------------------------------
-- No index of pgcloud.http_intents names state, attempts or last_attempt_at,
-- and each page keeps room for the new row version (fillfactor): claiming
-- an intent in flight is a HOT update. An index on state would make it fail.
DELETE FROM pgcloud.http_intents;
SELECT taphttp.intent_boom('hot1') AS hot1, taphttp.intent_boom('hot2') AS hot2 \gset
SELECT pg_stat_get_xact_tuples_hot_updated('pgcloud.http_intents'::regclass) AS hot_before \gset
SELECT is((SELECT count(*)::int FROM pgcloud.http_claim('test', 10)), 2, 'two intents claimed');
SELECT is(pg_stat_get_xact_tuples_hot_updated('pgcloud.http_intents'::regclass) - :hot_before, 2::bigint,
    'both claims were HOT updates (no index entry written)');
SELECT is((SELECT array_agg(state || ' ' || attempts) FROM pgcloud.http_intents WHERE id IN (:'hot1', :'hot2')),
    ARRAY['in_flight 1', 'in_flight 1'], 'and both are in flight, first try');

SELECT * FROM finish();
ROLLBACK;
