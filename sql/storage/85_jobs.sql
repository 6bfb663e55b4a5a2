-- pg_cron: the pending-object check.

CREATE FUNCTION storage.schedule_jobs() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING HINT = 'Run CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    END IF;
    PERFORM cron.schedule('storage.check_pending', '30 seconds', 'SELECT storage.check_pending()');
    RETURN 1;
END
$$;
COMMENT ON FUNCTION storage.schedule_jobs() IS 'Schedules storage.check_pending() every 30 seconds with pg_cron, in the database where pg_cron is installed. Idempotent: pg_cron replaces a job of the same name. Returns the number of jobs.';
