-- Jobs: what the platform runs by itself. Each service registers its
-- periodic jobs when it is installed; the scheduler worker (started by the
-- launcher for every database of pgcloud.databases) runs them at the
-- cadence their policy says, as the role that owns the job's function, and
-- records each outcome here. Nothing to call by hand: installing pgcloud in
-- a database its workers serve starts everything.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.job_timeout_ms', '300000', 'Statement timeout of one run of a scheduled job (ms).'),
    ('core.prune_interval_seconds', '600', 'How often the expiry and pruning jobs run (seconds).'),
    ('core.outbox_retention_seconds', '604800', 'How long a published outbox row is kept as the archive (seconds).'),
    ('core.inbox_retention_seconds', '604800', 'How long an applied event''s inbox row (its deduplication key) is kept (seconds); longer than any redelivery.'),
    ('core.http_intent_retention_seconds', '604800', 'How long a finished HTTP intent (succeeded or dead, callback done or given up) is kept (seconds).'),
    ('core.cron_history_retention_seconds', '604800', 'How long pg_cron''s run history (cron.job_run_details) is kept (seconds).');

CREATE TABLE pgcloud.scheduled_jobs (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    service          text NOT NULL,
    function         regprocedure NOT NULL,
    interval_policy  text NOT NULL,
    interval_unit    text NOT NULL CHECK (interval_unit IN ('ms', 's')),
    run_on_wake      boolean NOT NULL DEFAULT false,
    run_as_owner     boolean NOT NULL DEFAULT true,
    enabled          boolean NOT NULL DEFAULT true,
    description      text NOT NULL,
    next_run         timestamptz NOT NULL DEFAULT now(),
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_status      text CHECK (last_status IN ('succeeded', 'failed')),
    last_result      text,
    last_error       text,
    last_error_at    timestamptz,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgcloud.scheduled_jobs IS 'The periodic jobs of the services installed in this database, registered at installation (pgcloud.register_job) and run by the scheduler worker; pgcloud.jobs shows them.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.name IS '<service>.<job>, e.g. maas.poll.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.service IS 'The service that registered the job.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.function IS 'The function run, with no arguments (defaults apply); its result is kept as text.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.interval_policy IS 'The policy key whose value is the time between two runs.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.interval_unit IS 'Unit of that policy value: ms or s.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.run_on_wake IS 'Whether the job also runs at once when the scheduler is woken (pgcloud.wake_scheduler()).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.run_as_owner IS 'Whether the job runs as the owner of its function (the service role); false only for jobs that need the superuser (pg_cron''s history).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.enabled IS 'Whether the scheduler runs the job (operators may pause one with pgcloud.set_job_enabled).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.description IS 'What the job does.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.next_run IS 'When the job is due next.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_started_at IS 'Start of the last run.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_finished_at IS 'End of the last run.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_status IS 'Outcome of the last run: succeeded or failed.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_result IS 'Result of the last successful run, as text (truncated to 1,000 characters).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_error IS 'Error of the last failed run (scrubbed); kept after later successes, with last_error_at.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_error_at IS 'When the job last failed.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.runs IS 'Runs since installation.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.failures IS 'Failed runs since installation.';

-- The time between two runs of a job, read from its policy (a missing or
-- invalid value falls back to a minute rather than stopping the job).
CREATE FUNCTION pgcloud.job_interval(j pgcloud.scheduled_jobs) RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    v numeric;
BEGIN
    BEGIN
        v := pgcloud.policy(j.interval_policy, NULL::numeric);
    EXCEPTION WHEN OTHERS THEN
        RETURN interval '1 minute';
    END;
    IF v IS NULL OR v <= 0 THEN
        RETURN interval '1 minute';
    END IF;
    RETURN CASE j.interval_unit WHEN 'ms' THEN make_interval(secs => v / 1000.0) ELSE make_interval(secs => v) END;
END
$$;
COMMENT ON FUNCTION pgcloud.job_interval(pgcloud.scheduled_jobs) IS 'The time between two runs of a job, from its interval policy (one minute when the policy is missing or not a positive number).';

CREATE FUNCTION pgcloud.register_job(name text, function regprocedure, interval_policy text, interval_unit text,
                                     description text, run_on_wake boolean DEFAULT false,
                                     run_as_owner boolean DEFAULT true) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    INSERT INTO pgcloud.scheduled_jobs AS j (name, service, function, interval_policy, interval_unit, description,
                                             run_on_wake, run_as_owner)
    VALUES (register_job.name, split_part(register_job.name, '.', 1), register_job.function,
            register_job.interval_policy, register_job.interval_unit, register_job.description,
            register_job.run_on_wake, register_job.run_as_owner)
    ON CONFLICT (name) DO UPDATE
       SET function = excluded.function, interval_policy = excluded.interval_policy,
           interval_unit = excluded.interval_unit, description = excluded.description,
           run_on_wake = excluded.run_on_wake, run_as_owner = excluded.run_as_owner
$$;
COMMENT ON FUNCTION pgcloud.register_job(text, regprocedure, text, text, text, boolean, boolean) IS 'Install-time: registers (or updates) a periodic job of a service; the scheduler runs it from then on. Superuser only.';

-- A service's jobs leave with the service (DROP EXTENSION drops the
-- function; the job row must not outlive it).
CREATE FUNCTION pgcloud.forget_dropped_jobs() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF to_regclass('pgcloud.scheduled_jobs') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o WHERE o.object_type = 'function') THEN
        DELETE FROM pgcloud.scheduled_jobs j
         WHERE NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = j.function::oid);
    END IF;
END
$$;
COMMENT ON FUNCTION pgcloud.forget_dropped_jobs() IS 'Event trigger: forgets the jobs whose function was dropped (a service extension dropped).';
CREATE EVENT TRIGGER pgcloud_forget_dropped_jobs ON sql_drop EXECUTE FUNCTION pgcloud.forget_dropped_jobs();

-- When a job is due: its interval after its last run, as the policy says
-- now (a shortened interval applies at once), or next_run when sooner
-- (never run, or resumed).
CREATE FUNCTION pgcloud.job_due_at(j pgcloud.scheduled_jobs) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT least(j.next_run, j.last_finished_at + pgcloud.job_interval(j)) $$;
COMMENT ON FUNCTION pgcloud.job_due_at(pgcloud.scheduled_jobs) IS 'When a job is due: its current interval after its last run, or its next_run when that is sooner.';

CREATE FUNCTION pgcloud.due_jobs(woken boolean, OUT name text, OUT call text, OUT run_as text, OUT timeout_ms integer)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT j.name,
           quote_ident(n.nspname) || '.' || quote_ident(p.proname),
           CASE WHEN j.run_as_owner THEN pg_get_userbyid(p.proowner)::text END,
           pgcloud.policy('core.job_timeout_ms', NULL::integer)
      FROM pgcloud.scheduled_jobs j
      JOIN pg_proc p ON p.oid = j.function::oid
      JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE j.enabled AND (pgcloud.job_due_at(j) <= clock_timestamp() OR (woken AND j.run_on_wake))
     ORDER BY pgcloud.job_due_at(j), j.name
$$;
COMMENT ON FUNCTION pgcloud.due_jobs(boolean) IS 'Scheduler: the jobs due now (on a wake-up, also those that run on a wake-up), with the function to call, the role to run as and the statement timeout.';

CREATE FUNCTION pgcloud.job_finished(name text, ok boolean, result text, error text, started timestamptz)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    UPDATE pgcloud.scheduled_jobs j
       SET last_started_at = started,
           last_finished_at = clock_timestamp(),
           last_status = CASE WHEN ok THEN 'succeeded' ELSE 'failed' END,
           last_result = CASE WHEN ok THEN left(result, 1000) ELSE j.last_result END,
           last_error = CASE WHEN ok THEN j.last_error ELSE left(pgcloud.sanitize(error), 1000) END,
           last_error_at = CASE WHEN ok THEN j.last_error_at ELSE clock_timestamp() END,
           runs = j.runs + 1,
           failures = j.failures + CASE WHEN ok THEN 0 ELSE 1 END,
           next_run = clock_timestamp() + pgcloud.job_interval(j)
     WHERE j.name = job_finished.name
$$;
COMMENT ON FUNCTION pgcloud.job_finished(text, boolean, text, text, timestamptz) IS 'Scheduler: records the outcome of a run (the error scrubbed) and when the job runs next.';

CREATE FUNCTION pgcloud.jobs_next_in_ms() RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT greatest(0, ceil(extract(epoch FROM min(pgcloud.job_due_at(j)) - clock_timestamp()) * 1000))::bigint
      FROM pgcloud.scheduled_jobs j WHERE j.enabled
$$;
COMMENT ON FUNCTION pgcloud.jobs_next_in_ms() IS 'Scheduler: milliseconds until the next job is due (NULL when there is none).';

CREATE FUNCTION pgcloud.set_job_enabled(name text, enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    UPDATE pgcloud.scheduled_jobs j SET enabled = set_job_enabled.enabled, next_run = now()
     WHERE j.name = set_job_enabled.name;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('not_found', format('no job named %s', set_job_enabled.name));
    END IF;
    PERFORM pgcloud.audit(CASE WHEN enabled THEN 'job.enabled' ELSE 'job.paused' END, 'job', name, 'ok',
                          '{}'::jsonb);
    RETURN enabled;
END
$$;
COMMENT ON FUNCTION pgcloud.set_job_enabled(text, boolean) IS 'Operators: pauses or resumes a scheduled job (audited). A paused job shows in pgcloud.jobs with enabled = false.';

CREATE VIEW pgcloud.jobs AS
    SELECT j.name AS job,
           j.service,
           j.function::text AS function,
           format('every %s %s (policy %s)', pgcloud.policy(j.interval_policy, NULL::numeric), j.interval_unit,
                  j.interval_policy)
             || CASE WHEN j.run_on_wake THEN ', and when woken' ELSE '' END AS schedule,
           j.enabled,
           j.last_started_at AS last_run,
           j.last_status,
           j.last_finished_at - j.last_started_at AS last_duration,
           j.last_result,
           j.last_error,
           j.last_error_at,
           CASE WHEN j.enabled THEN pgcloud.job_due_at(j) END AS next_run,
           j.runs,
           j.failures,
           j.description
      FROM pgcloud.scheduled_jobs j;
COMMENT ON VIEW pgcloud.jobs IS 'Operators: every job the platform runs by itself in this database: its schedule, last run and outcome, last error, next run and counts. The scheduler worker runs them (pgcloud.workers, worker = scheduler).';

-- ---- expiry and pruning -----------------------------------------------------

-- One way to prune: delete the rows of a table whose time column is older
-- than a retention policy, and that satisfy a fixed condition.
CREATE FUNCTION pgcloud.prune_past_retention(rel regclass, time_column text, retention_policy text,
                                             condition text DEFAULT 'true') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('WITH gone AS (DELETE FROM %s x WHERE (%s) AND x.%I < now() - make_interval(secs => $1) RETURNING 1) '
                   'SELECT count(*) FROM gone', rel, condition, time_column)
       INTO n USING pgcloud.policy(retention_policy, NULL::numeric);
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.prune_past_retention(regclass, text, text, text) IS 'Deletes the rows of rel whose time_column is older than the retention policy (seconds) and that satisfy condition (fixed SQL of the caller, never user input); returns how many.';

CREATE FUNCTION pgcloud.prune_outbox() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.outbox', 'published_at', 'core.outbox_retention_seconds',
                                           'x.published_at IS NOT NULL') $$;
COMMENT ON FUNCTION pgcloud.prune_outbox() IS 'Deletes published outbox rows older than core.outbox_retention_seconds (unpublished rows are never touched); returns how many.';

CREATE FUNCTION pgcloud.prune_inbox() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.inbox', 'processed_at', 'core.inbox_retention_seconds') $$;
COMMENT ON FUNCTION pgcloud.prune_inbox() IS 'Deletes inbox rows (deduplication keys of applied events) older than core.inbox_retention_seconds; returns how many.';

CREATE FUNCTION pgcloud.prune_http_intents() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.http_intents', 'completed_at', 'core.http_intent_retention_seconds',
           $c$x.state IN ('succeeded', 'dead') AND (x.callback IS NULL OR x.callback_done_at IS NOT NULL
              OR x.callback_given_up_at IS NOT NULL)$c$) $$;
COMMENT ON FUNCTION pgcloud.prune_http_intents() IS 'Deletes finished HTTP intents (succeeded or dead, callback done or given up) completed longer ago than core.http_intent_retention_seconds; returns how many.';

CREATE FUNCTION pgcloud.prune_cron_history() RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n bigint := 0;
BEGIN
    IF to_regclass('cron.job_run_details') IS NULL THEN
        RETURN 0;      -- pg_cron lives in another database (cron.database_name) or not at all
    END IF;
    EXECUTE 'WITH gone AS (DELETE FROM cron.job_run_details d WHERE d.end_time < now() - make_interval(secs => $1)
             RETURNING 1) SELECT count(*) FROM gone'
       INTO n USING pgcloud.policy('core.cron_history_retention_seconds', NULL::numeric);
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.prune_cron_history() IS 'Deletes pg_cron''s run history (cron.job_run_details) older than core.cron_history_retention_seconds, where pg_cron is installed in this database; returns how many.';

SELECT pgcloud.register_job('core.prune_idempotency_keys', 'pgcloud.prune_idempotency_keys()',
    'core.prune_interval_seconds', 's', 'Deletes expired idempotency keys (core.idempotency_ttl_seconds).');
SELECT pgcloud.register_job('core.prune_revoked_sessions', 'pgcloud.prune_revoked_sessions()',
    'core.prune_interval_seconds', 's', 'Deletes session revocations whose access tokens have all expired.');
SELECT pgcloud.register_job('core.prune_outbox', 'pgcloud.prune_outbox()',
    'core.prune_interval_seconds', 's', 'Deletes published outbox rows past core.outbox_retention_seconds.');
SELECT pgcloud.register_job('core.prune_inbox', 'pgcloud.prune_inbox()',
    'core.prune_interval_seconds', 's', 'Deletes inbox rows past core.inbox_retention_seconds.');
SELECT pgcloud.register_job('core.prune_http_intents', 'pgcloud.prune_http_intents()',
    'core.prune_interval_seconds', 's', 'Deletes finished HTTP intents past core.http_intent_retention_seconds.');
SELECT pgcloud.register_job('core.prune_cron_history', 'pgcloud.prune_cron_history()',
    'core.prune_interval_seconds', 's', 'Deletes pg_cron''s run history past core.cron_history_retention_seconds.',
    run_as_owner => false);

CREATE FUNCTION pgcloud.wake_scheduler() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_wake_scheduler';
COMMENT ON FUNCTION pgcloud.wake_scheduler() IS 'Services: wakes this database''s scheduler when the transaction commits, so the jobs that run on a wake-up (the MAAS poller) run at once. False without the workers (pgcloud not preloaded).';
COMMENT ON COLUMN pgcloud.jobs.job IS 'The job''s name, <service>.<job>.';
COMMENT ON COLUMN pgcloud.jobs.service IS 'The service that registered it.';
COMMENT ON COLUMN pgcloud.jobs.function IS 'The function it runs.';
COMMENT ON COLUMN pgcloud.jobs.schedule IS 'How often it runs (its interval policy and current value), and whether a wake-up runs it too.';
COMMENT ON COLUMN pgcloud.jobs.enabled IS 'Whether it runs (pgcloud.set_job_enabled).';
COMMENT ON COLUMN pgcloud.jobs.last_run IS 'When its last run started.';
COMMENT ON COLUMN pgcloud.jobs.last_status IS 'succeeded or failed.';
COMMENT ON COLUMN pgcloud.jobs.last_duration IS 'How long the last run took.';
COMMENT ON COLUMN pgcloud.jobs.last_result IS 'What the last successful run returned.';
COMMENT ON COLUMN pgcloud.jobs.last_error IS 'The last error (scrubbed), kept after later successes; see last_error_at.';
COMMENT ON COLUMN pgcloud.jobs.last_error_at IS 'When it last failed.';
COMMENT ON COLUMN pgcloud.jobs.next_run IS 'When it runs next (NULL while paused).';
COMMENT ON COLUMN pgcloud.jobs.runs IS 'Runs since installation.';
COMMENT ON COLUMN pgcloud.jobs.failures IS 'Failed runs since installation.';
COMMENT ON COLUMN pgcloud.jobs.description IS 'What it does.';

-- Services that schedule with pg_cron themselves check it is there first.
CREATE FUNCTION pgcloud.require_pg_cron() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'Run CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    END IF;
END
$$;
COMMENT ON FUNCTION pgcloud.require_pg_cron() IS 'Raises "pg_cron is not installed in this database" (with a hint) unless pg_cron is installed in this database.';
