-- Scheduler jobs of databases (the job functions live with their domain: databases.deploy() in 70_lifecycle.sql).

SELECT pgcloud.register_job('databases.deploy', 'databases.deploy()', 'databases.deployer_interval_ms', 'ms',
    'The databases deployer: provisioning attempts and their retries, deletions after the grace, removal of retired logins.',
    run_on_wake => true);
