-- Scheduler jobs of terminal (the job functions live with their domain: terminal.reap_sessions() in 40_sessions.sql).

-- Lost relays are noticed by themselves: the scheduler worker runs the reaper
-- every terminal.reap_interval_seconds (heartbeats and the operators' listing
-- reap too, so a listing is never stale).
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('terminal.reap_interval_seconds', '10', 'How often the scheduler ends live terminal sessions whose relay stopped reporting (seconds).');
SELECT pgcloud.register_job('terminal.reap_sessions', 'terminal.reap_sessions()', 'terminal.reap_interval_seconds', 's',
    'Ends live terminal sessions whose relay has not reported for terminal.session_stale_seconds (reason relay_lost).');
