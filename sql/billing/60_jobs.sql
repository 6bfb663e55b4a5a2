-- pg_cron: the accrual job.

CREATE FUNCTION billing.schedule_jobs() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'Run CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    END IF;
    -- Every minute: each run charges every complete interval due (any
    -- billing.accrual_interval_seconds), so a late or skipped run only delays.
    PERFORM cron.schedule('billing.accrue', '* * * * *', 'SELECT billing.accrue()');
    RETURN 1;
END
$$;
COMMENT ON FUNCTION billing.schedule_jobs() IS 'Schedules the accrual job (billing.accrue() every minute) with pg_cron, in the database where pg_cron is installed (cron.database_name). Idempotent: pg_cron replaces a job of the same name. Returns the number of jobs.';
