-- pg_cron: the pending-object check.

CREATE FUNCTION storage.schedule_jobs() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    PERFORM pgcloud.require_pg_cron();
    PERFORM cron.schedule('storage.check_pending', '30 seconds', 'SELECT storage.check_pending()');
    RETURN 1;
END
$$;
COMMENT ON FUNCTION storage.schedule_jobs() IS 'Schedules storage.check_pending() every 30 seconds with pg_cron, in the database where pg_cron is installed. Idempotent: pg_cron replaces a job of the same name. Returns the number of jobs.';
