-- Scheduler jobs of maas (the job functions live with their domain: maas.poll() in 40_poll.sql).

-- The poller runs by itself: the scheduler worker calls maas.poll() every
-- maas.poller_interval_ms, and at once when a goal is set (maas.set_goal
-- wakes it at commit).
SELECT pgcloud.register_job('maas.poll', 'maas.poll()', 'maas.poller_interval_ms', 'ms',
    'The MAAS poller: one step for every machine with an open goal (commission, deploy, release).',
    run_on_wake => true);
