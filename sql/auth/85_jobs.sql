-- Scheduler jobs of auth (the job functions live with their domain: auth.prune() in 30_sessions.sql).

SELECT pgcloud.register_job('auth.prune', 'auth.prune()', 'core.prune_interval_seconds', 's',
    'Deletes used OpenID Connect nonces of expired ID tokens and refresh tokens expired for a day.');
