-- pgcloud_maas: a facade over the Canonical MAAS 2.0 REST API. Schema maas,
-- owned by pgcloud_svc_maas (created by pgcloud.service_begin).
--
-- Decisions (see also src/maas/README.md):
--   * Every MAAS call is an HTTP intent (pgcloud.http_request, target maas)
--     written in the transaction that decides it; the executor sends it after
--     commit with the OAuth 1.0 PLAINTEXT header built from
--     pgcloud.maas_api_key (a fresh nonce and timestamp per request). The key
--     is configuration: never in a table, never in an intent, never logged.
--     A user transaction never waits for MAAS.
--   * Level-triggered: each machine has a goal (commission, deploy, release,
--     or none) and the last status MAAS reported. maas.step() compares the
--     two and issues the next call (read, allocate, deploy, release,
--     commission). Answers (maas.on_http_result) and the poller
--     (maas.poll(), every maas.poll_interval_ms while a goal is open) feed
--     new observations. A lost answer, a retried POST or a crash therefore
--     converge: MAAS's status decides, not our memory of what we sent.
--   * One deployment of a machine is shared by the allocations placed on
--     it (fractional GPUs): a deploy.requested for a machine deployed or
--     deploying with the same series joins it; the machine is released in
--     MAAS when its last allocation is.
--   * Timeouts (policy) fail a deployment (maas.deploy_failed; the machine
--     is released), quarantine a machine whose release does not finish
--     (stuck; alert; its allocations stay releasing until an operator
--     decides, api.admin_end_stuck_release) and fail a commissioning.
--   * MAAS status names map onto node states in maas.statuses; allocation
--     outcomes are maas.machine_deployed / maas.deploy_failed /
--     maas.machine_released.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('maas.poller_interval_ms', '250', 'How often the poller job (maas.poll) looks for machines to act on (ms); it also runs when a goal is set.'),
    ('maas.poll_interval_ms', '5000', 'How often a machine with an open goal (commission, deploy, release) is read from MAAS (ms).'),
    ('maas.commission_timeout_seconds', '1800', 'Commissioning longer than this fails the node (seconds).'),
    ('maas.deploy_timeout_seconds', '2400', 'A deployment not finished after this fails its allocations, frees their slots and releases the machine (seconds).'),
    ('maas.release_timeout_seconds', '1800', 'A release not finished after this quarantines the machine and alerts operators; its allocations stay releasing (and billed) until an operator ends them (seconds).'),
    ('maas.intent_stale_seconds', '600', 'A MAAS request without a final answer after this is forgotten and the machine read again (seconds).'),
    ('maas.erase_disks_on_release', 'false', 'Whether machines are released with erase=true (disk erasing) when their last allocation ends.'),
    ('maas.agent_name', '"pgcloud"', 'agent_name sent to MAAS with allocate and deploy.'),
    ('maas.poll_batch_size', '200', 'Machines one maas.poll() call works on at most.'),
    ('maas.ssh_trusted_user_ca_keys', '[]', 'The SSH CA public keys deployed nodes trust for user certificates (authorized_keys lines, e.g. from api.ssh_ca_public_key(); during a CA rotation the old and the new). Written by the deploy user data into /etc/ssh/pgcloud/trusted_user_ca_keys; empty: the image provides TrustedUserCAKeys itself.');
