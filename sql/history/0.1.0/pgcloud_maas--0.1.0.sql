-- pgcloud_maas install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_maas" to load this file. \quit

SELECT pgcloud.service_begin('maas');
-- source: sql/maas/00_maas.sql
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
    ('maas.poll_batch_size', '200', 'Machines one maas.poll() call works on at most.');

-- source: sql/maas/10_tables.sql
-- MAAS statuses, machines, and the allocations deployed on them.

CREATE TABLE maas.statuses (
    status_code integer PRIMARY KEY,
    status_name text NOT NULL UNIQUE,
    node_state  text CHECK (node_state IN ('commissioning', 'ready', 'failed', 'broken')),
    busy_for    text CHECK (busy_for IN ('commission', 'deploy', 'release')),
    meaning     text NOT NULL
);
COMMENT ON TABLE maas.statuses IS 'MAAS 2.0 machine statuses and what they mean here: the node state inventory applies (maas.machine_status_changed carries it as node_state) and the goal the status is the work in progress of.';
COMMENT ON COLUMN maas.statuses.status_code IS 'MAAS status number.';
COMMENT ON COLUMN maas.statuses.status_name IS 'MAAS status_name.';
COMMENT ON COLUMN maas.statuses.node_state IS 'Node state it maps onto (NULL: the node''s lifecycle state does not change; deployments are allocation states).';
COMMENT ON COLUMN maas.statuses.busy_for IS 'The goal whose operation this status shows running (seen once, a later Ready / Deployed means done).';
COMMENT ON COLUMN maas.statuses.meaning IS 'What it means for pgcloud.';
INSERT INTO maas.statuses (status_code, status_name, node_state, busy_for, meaning) VALUES
    (0, 'New', NULL, NULL, 'known to MAAS, not commissioned: commissioned on registration'),
    (1, 'Commissioning', 'commissioning', 'commission', 'commissioning runs'),
    (2, 'Failed commissioning', 'failed', NULL, 'commissioning failed: node failed'),
    (3, 'Missing', 'broken', NULL, 'MAAS lost the machine: node broken'),
    (4, 'Ready', 'ready', NULL, 'commissioned and free: a commissioning or a release is done; deploy allocates it first'),
    (5, 'Reserved', NULL, NULL, 'reserved in MAAS: cannot be deployed'),
    (6, 'Deployed', NULL, NULL, 'deployed: its deploying allocations become active'),
    (7, 'Retired', 'broken', NULL, 'retired in MAAS: node broken'),
    (8, 'Broken', 'broken', NULL, 'marked broken: node broken; a deployment on it fails'),
    (9, 'Deploying', NULL, 'deploy', 'deployment runs'),
    (10, 'Allocated', NULL, NULL, 'allocated to us: deploy next (or release)'),
    (11, 'Failed deployment', NULL, NULL, 'the deployment failed: its allocations fail, the machine is released'),
    (12, 'Releasing', NULL, 'release', 'release runs'),
    (13, 'Releasing failed', 'broken', NULL, 'the release failed: machine reported stuck, node broken'),
    (14, 'Disk erasing', NULL, 'release', 'release with disk erasing runs'),
    (15, 'Failed disk erasing', 'broken', NULL, 'disk erasing failed: machine reported stuck, node broken'),
    (16, 'Rescue mode', NULL, NULL, 'in rescue mode: cannot be deployed'),
    (17, 'Entering rescue mode', NULL, NULL, 'entering rescue mode: cannot be deployed'),
    (18, 'Failed to enter rescue mode', 'broken', NULL, 'rescue failed: node broken'),
    (19, 'Exiting rescue mode', NULL, NULL, 'leaving rescue mode'),
    (20, 'Failed to exit rescue mode', 'broken', NULL, 'rescue failed: node broken'),
    (21, 'Testing', NULL, NULL, 'hardware tests run'),
    (22, 'Failed testing', 'broken', NULL, 'hardware tests failed: node broken');

CREATE TABLE maas.machines (
    system_id      text PRIMARY KEY CHECK (system_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    node_id        uuid,
    hostname       text,
    goal           text NOT NULL DEFAULT 'none' CHECK (goal IN ('none', 'commission', 'deploy', 'release')),
    goal_seq       bigint NOT NULL DEFAULT 0,
    goal_since     timestamptz,
    goal_series    text,
    goal_image     text,
    seen_busy      boolean NOT NULL DEFAULT false,
    status         integer,
    status_name    text,
    status_message text,
    distro_series  text,
    power_state    text,
    ip_addresses   jsonb NOT NULL DEFAULT '[]',
    owner          text,
    observed_at    timestamptz,
    op_intent      uuid,
    op_kind        text CHECK (op_kind IN ('read', 'allocate', 'deploy', 'release', 'commission')),
    op_sent_at     timestamptz,
    last_action    text,
    last_action_at timestamptz,
    last_error     text,
    last_error_at  timestamptz,
    stuck          boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((op_intent IS NULL) = (op_kind IS NULL)),
    CHECK ((goal = 'none') OR goal_since IS NOT NULL)
);
CREATE INDEX machines_open_idx ON maas.machines (observed_at NULLS FIRST) WHERE goal <> 'none';
COMMENT ON TABLE maas.machines IS 'MAAS machines pgcloud drives: the goal (what they should become), the last status MAAS reported, and the one request in flight. maas.step() issues the next request from the two.';
COMMENT ON COLUMN maas.machines.system_id IS 'MAAS system id.';
COMMENT ON COLUMN maas.machines.node_id IS 'Inventory''s node id.';
COMMENT ON COLUMN maas.machines.hostname IS 'Node hostname.';
COMMENT ON COLUMN maas.machines.goal IS 'commission (after registration), deploy (allocations wait for it), release (its last allocation ended) or none.';
COMMENT ON COLUMN maas.machines.goal_seq IS 'Counts goal changes.';
COMMENT ON COLUMN maas.machines.goal_since IS 'When the goal was set (timeouts count from here).';
COMMENT ON COLUMN maas.machines.goal_series IS 'distro_series of the deployment (the current or last one).';
COMMENT ON COLUMN maas.machines.goal_image IS 'Image code of that deployment.';
COMMENT ON COLUMN maas.machines.seen_busy IS 'Whether the goal''s operation has been seen running (Commissioning, Deploying, Releasing, Disk erasing) since the goal was set.';
COMMENT ON COLUMN maas.machines.status IS 'Last MAAS status number.';
COMMENT ON COLUMN maas.machines.status_name IS 'Last MAAS status_name.';
COMMENT ON COLUMN maas.machines.status_message IS 'Last MAAS status_message.';
COMMENT ON COLUMN maas.machines.distro_series IS 'distro_series MAAS reports.';
COMMENT ON COLUMN maas.machines.power_state IS 'power_state MAAS reports.';
COMMENT ON COLUMN maas.machines.ip_addresses IS 'ip_addresses MAAS reports.';
COMMENT ON COLUMN maas.machines.owner IS 'MAAS user owning the machine.';
COMMENT ON COLUMN maas.machines.observed_at IS 'When the status was read (NULL: to be read).';
COMMENT ON COLUMN maas.machines.op_intent IS 'The HTTP intent in flight for the machine, if any.';
COMMENT ON COLUMN maas.machines.op_kind IS 'What it does: read, allocate, deploy, release or commission.';
COMMENT ON COLUMN maas.machines.op_sent_at IS 'When it was written.';
COMMENT ON COLUMN maas.machines.last_action IS 'Last state-changing request for the current goal (not repeated within a poll interval).';
COMMENT ON COLUMN maas.machines.last_action_at IS 'When it was written.';
COMMENT ON COLUMN maas.machines.last_error IS 'Last error from MAAS or the executor (scrubbed).';
COMMENT ON COLUMN maas.machines.last_error_at IS 'When it happened.';
COMMENT ON COLUMN maas.machines.stuck IS 'Quarantined: a release did not finish (timeout or Releasing failed); its node is broken whatever MAAS reports, its allocations stay releasing until an operator decides (api.admin_end_stuck_release); cleared only by a completed commission.';
COMMENT ON COLUMN maas.machines.created_at IS 'When pgcloud first drove the machine.';
COMMENT ON COLUMN maas.machines.updated_at IS 'When it last changed.';

CREATE TABLE maas.allocation_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE maas.allocation_transitions IS 'Allowed changes of maas.allocations.state (from_state NULL: initial state).';
COMMENT ON COLUMN maas.allocation_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN maas.allocation_transitions.to_state IS 'State after.';
INSERT INTO maas.allocation_transitions (from_state, to_state) VALUES
    (NULL, 'deploying'), (NULL, 'failed'),
    ('deploying', 'deployed'), ('deploying', 'failed'), ('deploying', 'releasing'),
    ('deployed', 'releasing'),
    ('releasing', 'released');

CREATE TABLE maas.allocations (
    allocation_id   uuid PRIMARY KEY,
    system_id       text NOT NULL REFERENCES maas.machines (system_id),
    node_id         uuid,
    user_id         uuid,
    image           text,
    distro_series   text NOT NULL,
    ssh_public_keys text[] NOT NULL DEFAULT '{}',
    state           text NOT NULL CHECK (state IN ('deploying', 'deployed', 'releasing', 'released', 'failed')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX allocations_machine_live_idx ON maas.allocations (system_id)
    WHERE state IN ('deploying', 'deployed', 'releasing');
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON maas.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'maas.allocation_transitions');
COMMENT ON TABLE maas.allocations IS 'Allocations deployed on machines (from deploy.requested / release.requested): deploying -> deployed -> releasing -> released, or failed.';
COMMENT ON COLUMN maas.allocations.allocation_id IS 'Provisioning''s allocation id.';
COMMENT ON COLUMN maas.allocations.system_id IS 'The machine.';
COMMENT ON COLUMN maas.allocations.node_id IS 'Inventory''s node id.';
COMMENT ON COLUMN maas.allocations.user_id IS 'The allocation''s owner.';
COMMENT ON COLUMN maas.allocations.image IS 'Image code.';
COMMENT ON COLUMN maas.allocations.distro_series IS 'distro_series it needs.';
COMMENT ON COLUMN maas.allocations.ssh_public_keys IS 'Public keys for the deploy user data.';
COMMENT ON COLUMN maas.allocations.state IS 'deploying, deployed, releasing, released or failed.';
COMMENT ON COLUMN maas.allocations.reason IS 'Why it failed or how it was released.';
COMMENT ON COLUMN maas.allocations.created_at IS 'When the deploy request arrived.';
COMMENT ON COLUMN maas.allocations.updated_at IS 'When it last changed.';

SELECT pg_catalog.pg_extension_config_dump('maas.machines', '');
SELECT pg_catalog.pg_extension_config_dump('maas.allocations', '');

-- source: sql/maas/20_requests.sql
-- The MAAS 2.0 requests, each an HTTP intent answered to maas.on_http_result().

CREATE FUNCTION maas.form_encode(v text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT coalesce(string_agg(CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                                         OR b IN (45, 46, 95, 126)
                                    THEN chr(b) ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
      FROM (SELECT i, get_byte(convert_to(v, 'UTF8'), i) AS b
              FROM generate_series(0, octet_length(convert_to(v, 'UTF8')) - 1) AS i) x
$$;
COMMENT ON FUNCTION maas.form_encode(text) IS 'application/x-www-form-urlencoded value: every byte but A-Z a-z 0-9 - . _ ~ percent-encoded.';

CREATE FUNCTION maas.user_data(system_id text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT CASE WHEN count(k) > 0 THEN
        E'#cloud-config\nssh_authorized_keys:\n'
        || string_agg(DISTINCT '  - "' || k || '"', E'\n' ORDER BY '  - "' || k || '"') || E'\n' END
      FROM maas.allocations a LEFT JOIN LATERAL unnest(a.ssh_public_keys) k ON true
     WHERE a.system_id = user_data.system_id AND a.state = 'deploying'
$$;
COMMENT ON FUNCTION maas.user_data(text) IS 'cloud-init user data of a deployment: #cloud-config with the ssh_authorized_keys of the allocations deploying on the machine (sorted, each once; NULL when none has keys). The keys were validated by releases and again on deploy.requested.';

-- Writes the request of the given kind and records it as the machine's one
-- request in flight.
CREATE FUNCTION maas.issue(m maas.machines, kind text) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    machine_path text := format('/api/2.0/machines/%s/', m.system_id);
    agent text := maas.form_encode(pgcloud.policy('maas.agent_name', NULL::text));
    method text := 'POST';
    path text;
    body text;
    ud text;
    intent uuid;
BEGIN
    CASE kind
    WHEN 'read' THEN
        method := 'GET';
        path := machine_path;
    WHEN 'allocate' THEN
        path := '/api/2.0/machines/?op=allocate';
        body := 'system_id=' || maas.form_encode(m.system_id) || '&agent_name=' || agent;
    WHEN 'deploy' THEN
        path := machine_path || '?op=deploy';
        body := 'distro_series=' || maas.form_encode(m.goal_series) || '&agent_name=' || agent;
        ud := maas.user_data(m.system_id);
        IF ud IS NOT NULL THEN
            body := body || '&user_data=' || maas.form_encode(translate(encode(convert_to(ud, 'UTF8'), 'base64'), E'\n', ''));
        END IF;
    WHEN 'release' THEN
        path := machine_path || '?op=release';
        body := 'erase=' || CASE WHEN pgcloud.policy('maas.erase_disks_on_release', NULL::boolean) THEN 'true' ELSE 'false' END
                || '&comment=' || maas.form_encode('released by pgcloud');
    WHEN 'commission' THEN
        path := machine_path || '?op=commission';
        body := '';
    ELSE
        RAISE EXCEPTION 'unknown MAAS request kind %', kind;
    END CASE;
    intent := pgcloud.http_request('maas', method, path, body,
        CASE WHEN method = 'POST' THEN 'application/x-www-form-urlencoded' END, '{}'::jsonb, NULL,
        'maas.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
        jsonb_build_object('system_id', m.system_id, 'op', kind, 'goal', m.goal, 'goal_seq', m.goal_seq));
    UPDATE maas.machines x
       SET op_intent = intent, op_kind = kind, op_sent_at = now(),
           last_action = CASE WHEN kind = 'read' THEN x.last_action ELSE kind END,
           last_action_at = CASE WHEN kind = 'read' THEN x.last_action_at ELSE now() END,
           updated_at = now()
     WHERE x.system_id = m.system_id;
    RETURN intent;
END
$$;
COMMENT ON FUNCTION maas.issue(maas.machines, text) IS 'Writes one MAAS request as an HTTP intent (read: GET machines/{id}/; allocate: POST machines/?op=allocate system_id; deploy: POST machines/{id}/?op=deploy distro_series, user_data; release: POST machines/{id}/?op=release erase; commission: POST machines/{id}/?op=commission) and records it as the machine''s request in flight. The executor adds the OAuth header.';

-- source: sql/maas/30_reconcile.sql
-- Observations, goals and the step that moves a machine towards its goal.

CREATE FUNCTION maas.lock_machine(system_id text) RETURNS maas.machines
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT * FROM maas.machines m WHERE m.system_id = lock_machine.system_id FOR UPDATE
$$;
COMMENT ON FUNCTION maas.lock_machine(text) IS 'The machine, locked for update (all fields NULL when unknown).';

CREATE FUNCTION maas.allocation_event(event_type text, a maas.allocations, m maas.machines, extra jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT NULL::void FROM pgcloud.emit(event_type, 'allocation', a.allocation_id::text,
        jsonb_build_object('allocation_id', a.allocation_id, 'system_id', m.system_id, 'node_id', coalesce(a.node_id, m.node_id),
                           'hostname', m.hostname, 'user_id', a.user_id, 'distro_series', a.distro_series,
                           'image', a.image, 'at', now()) || extra)
$$;
COMMENT ON FUNCTION maas.allocation_event(text, maas.allocations, maas.machines, jsonb) IS 'Emits maas.machine_deployed, maas.deploy_failed or maas.machine_released for one allocation: {allocation_id, system_id, node_id, hostname, user_id, distro_series, image, at} plus extra (reason, ip_addresses).';

CREATE FUNCTION maas.set_goal(m maas.machines, new_goal text, series text DEFAULT NULL, image text DEFAULT NULL)
RETURNS maas.machines
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    r maas.machines;
BEGIN
    UPDATE maas.machines x
       SET goal = new_goal, goal_seq = x.goal_seq + 1, goal_since = now(),
           goal_series = coalesce(series, x.goal_series), goal_image = coalesce(image, x.goal_image),
           seen_busy = false, last_action = NULL, last_action_at = NULL, updated_at = now()
     WHERE x.system_id = m.system_id
    RETURNING * INTO r;
    IF new_goal <> 'none' THEN
        PERFORM pgcloud.wake_scheduler();   -- the poller acts at commit, not at its next tick
    END IF;
    RETURN r;
END
$$;
COMMENT ON FUNCTION maas.set_goal(maas.machines, text, text, text) IS 'Gives a machine a new goal (none, commission, deploy with series and image, release); its timeout counts from now; a goal other than none wakes the scheduler at commit so the poller acts at once. A request already in flight stays: its answer is an observation like any other.';

-- Allocations releasing on the machine are done (the machine was released,
-- or another deployment takes it over, or there is nothing left to release).
CREATE FUNCTION maas.complete_releases(m maas.machines, why text) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    a maas.allocations;
    n integer := 0;
BEGIN
    FOR a IN UPDATE maas.allocations x SET state = 'released', reason = why, updated_at = now()
              WHERE x.system_id = m.system_id AND x.state = 'releasing' RETURNING *
    LOOP
        PERFORM maas.allocation_event('maas.machine_released', a, m, jsonb_build_object('reason', why));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION maas.complete_releases(maas.machines, text) IS 'Marks the machine''s releasing allocations released and emits maas.machine_released for each; returns how many.';

CREATE FUNCTION maas.fail_deployments(m maas.machines, why text) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    a maas.allocations;
    n integer := 0;
BEGIN
    FOR a IN UPDATE maas.allocations x SET state = 'failed', reason = left(why, 500), updated_at = now()
              WHERE x.system_id = m.system_id AND x.state = 'deploying' RETURNING *
    LOOP
        PERFORM maas.allocation_event('maas.deploy_failed', a, m, jsonb_build_object('reason', a.reason));
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION maas.fail_deployments(maas.machines, text) IS 'Marks the machine''s deploying allocations failed and emits maas.deploy_failed {allocation_id, system_id, reason} for each; returns how many.';

CREATE FUNCTION maas.status_event(m maas.machines, previous text, extra jsonb DEFAULT '{}') RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT NULL::void FROM pgcloud.emit('maas.machine_status_changed', 'machine', m.system_id,
        jsonb_build_object('system_id', m.system_id, 'node_id', m.node_id, 'hostname', m.hostname,
                           'status', m.status, 'status_name', m.status_name, 'previous_status_name', previous,
                           'status_message', m.status_message,
                           'node_state', CASE WHEN m.stuck THEN 'broken'
                                              ELSE (SELECT s.node_state FROM maas.statuses s WHERE s.status_name = m.status_name) END,
                           'distro_series', m.distro_series,
                           'image', CASE WHEN m.status_name = 'Deployed' THEN m.goal_image END,
                           'ip_addresses', m.ip_addresses, 'power_state', m.power_state, 'stuck', m.stuck,
                           'observed_at', m.observed_at) || extra)
$$;
COMMENT ON FUNCTION maas.status_event(maas.machines, text, jsonb) IS 'Emits maas.machine_status_changed {system_id, node_id, hostname, status, status_name, previous_status_name, status_message, node_state (maas.statuses), distro_series, image (when Deployed), ip_addresses, power_state, stuck, observed_at} plus extra.';

-- A machine as MAAS answered it (GET or a POST's answer). Returns the row.
CREATE FUNCTION maas.observe(m maas.machines, machine jsonb) RETURNS maas.machines
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    prev text := m.status_name;
    v_name text := machine ->> 'status_name';
BEGIN
    UPDATE maas.machines x
       SET status = CASE WHEN jsonb_typeof(machine -> 'status') = 'number' AND (machine ->> 'status') ~ '^[0-9]{1,3}$'
                         THEN (machine ->> 'status')::integer END,
           status_name = v_name,
           status_message = left(machine ->> 'status_message', 500),
           distro_series = left(machine ->> 'distro_series', 64),
           power_state = left(machine ->> 'power_state', 32),
           ip_addresses = CASE WHEN jsonb_typeof(machine -> 'ip_addresses') = 'array' THEN machine -> 'ip_addresses' ELSE '[]' END,
           owner = left(machine ->> 'owner', 128),
           hostname = coalesce(x.hostname, left(machine ->> 'hostname', 253)),
           observed_at = now(),
           seen_busy = x.seen_busy OR EXISTS (SELECT 1 FROM maas.statuses s WHERE s.status_name = v_name AND s.busy_for = x.goal),
           updated_at = now()
     WHERE x.system_id = m.system_id
    RETURNING * INTO m;
    IF prev IS DISTINCT FROM v_name THEN
        PERFORM maas.status_event(m, prev);
    END IF;
    RETURN m;
END
$$;
COMMENT ON FUNCTION maas.observe(maas.machines, jsonb) IS 'Records a machine''s status as MAAS reported it (status, status_name, message, series, power, addresses, owner); a changed status_name is announced as maas.machine_status_changed.';

CREATE FUNCTION maas.record_error(m maas.machines, err text) RETURNS maas.machines
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    UPDATE maas.machines x SET last_error = left(pgcloud.sanitize(err), 1000), last_error_at = now(), updated_at = now()
     WHERE x.system_id = m.system_id
    RETURNING *
$$;
COMMENT ON FUNCTION maas.record_error(maas.machines, text) IS 'Keeps the last error of a machine (scrubbed).';

-- The goal was reached.
CREATE FUNCTION maas.goal_done(m maas.machines) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    a maas.allocations;
BEGIN
    CASE m.goal
    WHEN 'commission' THEN
        m := maas.set_goal(m, 'none');
        -- A fresh commission ends a quarantine.
        UPDATE maas.machines x SET stuck = false WHERE x.system_id = m.system_id RETURNING * INTO m;
        PERFORM pgcloud.emit('maas.machine_commissioned', 'machine', m.system_id,
            jsonb_build_object('system_id', m.system_id, 'node_id', m.node_id, 'hostname', m.hostname,
                               'status_name', m.status_name, 'at', now()));
    WHEN 'deploy' THEN
        m := maas.set_goal(m, 'none');
        FOR a IN UPDATE maas.allocations x SET state = 'deployed', updated_at = now()
                  WHERE x.system_id = m.system_id AND x.state = 'deploying' RETURNING *
        LOOP
            PERFORM maas.allocation_event('maas.machine_deployed', a, m,
                jsonb_build_object('ip_addresses', m.ip_addresses, 'deployed_distro_series', m.distro_series));
        END LOOP;
    WHEN 'release' THEN
        m := maas.set_goal(m, 'none');
        PERFORM maas.complete_releases(m, 'the machine was released in MAAS');
    ELSE
        NULL;
    END CASE;
END
$$;
COMMENT ON FUNCTION maas.goal_done(maas.machines) IS 'A goal reached: commission -> maas.machine_commissioned; deploy -> maas.machine_deployed for every deploying allocation; release -> maas.machine_released for every releasing one. The goal becomes none.';

-- The goal cannot be reached.
CREATE FUNCTION maas.goal_failed(m maas.machines, why text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
BEGIN
    m := maas.record_error(m, why);
    CASE m.goal
    WHEN 'commission' THEN
        m := maas.set_goal(m, 'none');
        PERFORM maas.status_event(m, m.status_name, jsonb_build_object('node_state', 'failed', 'reason', why));
    WHEN 'deploy' THEN
        PERFORM maas.fail_deployments(m, why);
        IF m.status_name IN ('Failed deployment', 'Deploying', 'Allocated', 'Deployed') THEN
            m := maas.set_goal(m, 'release');          -- give the machine back to MAAS
            PERFORM maas.step(m.system_id, false);
        ELSE
            m := maas.set_goal(m, 'none');
            PERFORM maas.complete_releases(m, 'nothing to release: ' || why);
        END IF;
    WHEN 'release' THEN
        -- The machine may still run the tenant's system: it is quarantined
        -- (never placed again before a fresh commission), its allocations
        -- stay releasing and billed until an operator decides
        -- (api.admin_end_stuck_release), and operators are alerted.
        UPDATE maas.machines x SET stuck = true WHERE x.system_id = m.system_id RETURNING * INTO m;
        m := maas.set_goal(m, 'none');
        PERFORM maas.status_event(m, m.status_name, jsonb_build_object('node_state', 'broken', 'reason', why,
                                                                        'quarantined', true));
        PERFORM pgcloud.alert('release_stuck', m.system_id, jsonb_build_object(
            'system_id', m.system_id, 'hostname', m.hostname, 'reason', why,
            'allocations', (SELECT coalesce(jsonb_agg(a.allocation_id), '[]') FROM maas.allocations a
                             WHERE a.system_id = m.system_id AND a.state = 'releasing'),
            'action', 'check the machine in MAAS, then SELECT api.admin_end_stuck_release(system_id, reason)'));
    ELSE
        NULL;
    END CASE;
END
$$;
COMMENT ON FUNCTION maas.goal_failed(maas.machines, text) IS 'A goal that cannot be reached: commission -> node failed; deploy -> maas.deploy_failed for the deploying allocations, then the machine is released; release -> the machine is quarantined (stuck: node broken until a fresh commission), its allocations stay releasing and billed until an operator ends them (api.admin_end_stuck_release), and a platform.alert is raised.';

-- What to do next for the goal, given the last status.
CREATE FUNCTION maas.next_action(m maas.machines) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT CASE m.goal
        WHEN 'commission' THEN CASE
            WHEN m.status_name = 'Commissioning' THEN 'wait'
            WHEN m.status_name = 'Ready' THEN CASE WHEN m.seen_busy THEN 'done' ELSE 'commission' END
            WHEN m.status_name = 'Failed commissioning' THEN CASE WHEN m.seen_busy THEN 'fail' ELSE 'commission' END
            WHEN m.status_name IN ('New', 'Broken', 'Failed deployment', 'Failed testing') THEN 'commission'
            ELSE 'wait' END
        WHEN 'deploy' THEN CASE
            WHEN m.status_name = 'Ready' THEN 'allocate'
            WHEN m.status_name = 'Allocated' THEN 'deploy'
            WHEN m.status_name IN ('Deploying', 'Releasing', 'Disk erasing') THEN 'wait'
            -- Deployed by this goal; a machine still deployed from before
            -- (another tenant's system) is released and deployed afresh.
            WHEN m.status_name = 'Deployed' THEN CASE WHEN m.seen_busy THEN 'done' ELSE 'release' END
            WHEN m.status_name = 'Failed deployment' THEN CASE WHEN m.seen_busy THEN 'fail' ELSE 'release' END
            ELSE 'fail' END
        WHEN 'release' THEN CASE
            WHEN m.status_name IN ('Ready', 'New') THEN 'done'
            WHEN m.status_name IN ('Releasing', 'Disk erasing') THEN 'wait'
            WHEN m.status_name IN ('Releasing failed', 'Failed disk erasing') THEN CASE WHEN m.seen_busy THEN 'fail' ELSE 'release' END
            WHEN m.status_name IN ('Deployed', 'Allocated', 'Deploying', 'Failed deployment', 'Broken') THEN 'release'
            ELSE 'done' END
        ELSE 'wait' END
$$;
COMMENT ON FUNCTION maas.next_action(maas.machines) IS 'The decision table: for the goal and the last MAAS status, one of wait, done, fail, or the request to make (commission, allocate, deploy, release).';

CREATE FUNCTION maas.timeout_seconds(goal text) RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    SELECT CASE goal
        WHEN 'commission' THEN pgcloud.policy('maas.commission_timeout_seconds', NULL::integer)
        WHEN 'deploy' THEN pgcloud.policy('maas.deploy_timeout_seconds', NULL::integer)
        WHEN 'release' THEN pgcloud.policy('maas.release_timeout_seconds', NULL::integer) END
$$;
COMMENT ON FUNCTION maas.timeout_seconds(text) IS 'The timeout of a goal, from policy.';

-- One step towards the machine's goal. from_poll: the poller asks, so a
-- status older than maas.poll_interval_ms is read again first. Returns what
-- was done: idle, busy (a request is in flight), read, a request kind, wait,
-- done, failed or timed_out.
CREATE FUNCTION maas.step(system_id text, from_poll boolean) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    m maas.machines := maas.lock_machine(system_id);
    interval_ms integer := pgcloud.policy('maas.poll_interval_ms', NULL::integer);
    stale integer := pgcloud.policy('maas.intent_stale_seconds', NULL::integer);
    limit_s integer;
    action text;
BEGIN
    IF m.system_id IS NULL OR m.goal = 'none' THEN
        RETURN 'idle';
    END IF;
    limit_s := maas.timeout_seconds(m.goal);
    IF now() > m.goal_since + make_interval(secs => limit_s) THEN
        UPDATE maas.machines x SET op_intent = NULL, op_kind = NULL, op_sent_at = NULL
         WHERE x.system_id = m.system_id RETURNING * INTO m;
        PERFORM maas.goal_failed(m,
            format('%s did not finish within %s s (MAAS status: %s)',
                   CASE m.goal WHEN 'commission' THEN 'commissioning' WHEN 'deploy' THEN 'the deployment' ELSE 'the release' END,
                   limit_s, coalesce(m.status_name, 'never read'))
            || CASE WHEN m.last_error IS NOT NULL AND m.last_error_at > m.goal_since
                    THEN '; last error: ' || m.last_error ELSE '' END);
        RETURN 'timed_out';
    END IF;
    IF m.op_intent IS NOT NULL THEN
        IF m.op_sent_at > now() - make_interval(secs => stale) THEN
            RETURN 'busy';
        END IF;
        -- No final answer for too long (e.g. its callback was given up): forget it.
        m := maas.record_error(m, format('no answer to the %s request within %s s', m.op_kind, stale));
        UPDATE maas.machines x SET op_intent = NULL, op_kind = NULL, op_sent_at = NULL, observed_at = NULL
         WHERE x.system_id = m.system_id RETURNING * INTO m;
    END IF;
    IF m.observed_at IS NULL OR m.observed_at < m.goal_since
       OR (from_poll AND m.observed_at < now() - make_interval(secs => interval_ms / 1000.0)) THEN
        PERFORM maas.issue(m, 'read');
        RETURN 'read';
    END IF;
    action := maas.next_action(m);
    CASE action
    WHEN 'wait' THEN
        RETURN 'wait';
    WHEN 'done' THEN
        UPDATE maas.machines x SET last_error = NULL, last_error_at = NULL WHERE x.system_id = m.system_id
        RETURNING * INTO m;
        PERFORM maas.goal_done(m);
        RETURN 'done';
    WHEN 'fail' THEN
        PERFORM maas.goal_failed(m,
            CASE m.goal WHEN 'commission' THEN 'commissioning failed' WHEN 'deploy' THEN 'deployment failed'
                        ELSE 'the release failed' END
            || format(' (MAAS status: %s%s)', m.status_name,
                      CASE WHEN coalesce(m.status_message, '') <> '' THEN ', ' || m.status_message ELSE '' END));
        RETURN 'failed';
    ELSE
        -- The same request again only after a poll interval (a refused one
        -- must not loop).
        IF action = m.last_action AND m.last_action_at > now() - make_interval(secs => interval_ms / 1000.0) THEN
            RETURN 'wait';
        END IF;
        PERFORM maas.issue(m, action);
        RETURN action;
    END CASE;
END
$$;
COMMENT ON FUNCTION maas.step(text, boolean) IS 'Moves a machine one step towards its goal: times it out, reads it when its status is stale, or makes the next request of maas.next_action(). Returns idle, busy, read, commission, allocate, deploy, release, wait, done, failed or timed_out.';

-- The operator's decision on a release MAAS could not complete.
CREATE FUNCTION maas.end_stuck_release_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    m maas.machines;
    n integer;
    why text := left(btrim(coalesce(args ->> 'reason', '')), 500);
BEGIN
    IF why = '' THEN
        PERFORM pgcloud.raise('invalid_argument', 'a reason is required: it is audited and shown to the users');
    END IF;
    SELECT * INTO m FROM maas.machines x WHERE x.system_id = args ->> 'system_id' FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('not_found', format('no machine %s', left(args ->> 'system_id', 64)));
    END IF;
    IF NOT m.stuck THEN
        PERFORM pgcloud.raise('invalid_state_transition', format('machine %s is not stuck in a release', m.system_id),
            'Only a release MAAS could not complete needs this.');
    END IF;
    n := maas.complete_releases(m, 'operator: ' || why);
    -- Still quarantined: placed again only after a fresh commission.
    m := maas.set_goal(m, 'commission');
    PERFORM pgcloud.audit('maas.stuck_release_ended', 'machine', m.system_id, 'ok',
        jsonb_build_object('reason', why, 'allocations_released', n));
    RETURN jsonb_build_object('system_id', m.system_id, 'allocations_released', n, 'quarantined', m.stuck,
                              'goal', m.goal);
END
$$;
COMMENT ON FUNCTION maas.end_stuck_release_apply(jsonb) IS 'Internal to api.admin_end_stuck_release().';

CREATE FUNCTION api.admin_end_stuck_release(system_id text, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('maas.end_stuck_release', jsonb_build_object('system_id', system_id, 'reason', reason),
                              'maas.end_stuck_release_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_end_stuck_release(text, text) IS 'Operators: a release MAAS could not complete (the machine is quarantined and its allocations stay releasing and billed) ends by this decision: the allocations are released (billing stops), the machine stays quarantined and is commissioned afresh before it is placed again. Returns {system_id, allocations_released, quarantined, goal}. Not stuck: 409 invalid_state_transition; unknown: 404 not_found. Audited; safe to retry with X-Idempotency-Key.';
GRANT EXECUTE ON FUNCTION api.admin_end_stuck_release(text, text) TO pgcloud_admin;

-- source: sql/maas/40_poll.sql
-- Answers from MAAS, the poller, and its schedule.

CREATE FUNCTION maas.parse_machine(body text, system_id text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    j jsonb;
BEGIN
    IF body IS NULL OR octet_length(body) > 1048576 THEN
        RETURN NULL;
    END IF;
    BEGIN
        j := body::jsonb;
    EXCEPTION WHEN invalid_text_representation OR program_limit_exceeded OR untranslatable_character THEN
        RETURN NULL;
    END;
    IF jsonb_typeof(j) IS DISTINCT FROM 'object' OR j ->> 'system_id' IS DISTINCT FROM system_id
       OR jsonb_typeof(j -> 'status_name') IS DISTINCT FROM 'string' OR length(j ->> 'status_name') > 64 THEN
        RETURN NULL;
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION maas.parse_machine(text, text) IS 'The machine object of a MAAS answer (JSON with the expected system_id and a status_name), or NULL when the body is not one.';

CREATE FUNCTION maas.on_http_result(intent_id uuid, status integer, response_headers jsonb, response_body text,
                                    context jsonb, final boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    m maas.machines;
    op text := context ->> 'op';
    machine jsonb;
    err text;
BEGIN
    IF NOT final THEN
        RETURN;      -- the executor retries; only the final outcome counts
    END IF;
    m := maas.lock_machine(context ->> 'system_id');
    IF m.system_id IS NULL OR m.op_intent IS DISTINCT FROM intent_id THEN
        RETURN;      -- superseded (timed out or forgotten): a newer request decides
    END IF;
    UPDATE maas.machines x SET op_intent = NULL, op_kind = NULL, op_sent_at = NULL, updated_at = now()
     WHERE x.system_id = m.system_id RETURNING * INTO m;
    IF status BETWEEN 200 AND 299 THEN
        machine := maas.parse_machine(response_body, m.system_id);
        IF machine IS NULL THEN
            PERFORM maas.record_error(m, format('MAAS answered the %s request with HTTP %s but not with machine %s',
                                                 op, status, m.system_id));
            RETURN;  -- read again at the next poll
        END IF;
        m := maas.observe(m, machine);
        PERFORM maas.step(m.system_id, false);
        RETURN;
    END IF;
    err := format('MAAS %s of %s: %s', op, m.system_id, coalesce('HTTP ' || status, 'no answer'))
           || CASE WHEN coalesce(response_body, '') <> ''
                   THEN ': ' || left(regexp_replace(response_body, '\s+', ' ', 'g'), 300) ELSE '' END;
    m := maas.record_error(m, err);
    IF status = 409 THEN
        -- The request does not fit the machine's state (e.g. a POST retried
        -- after its first answer was lost): read the machine and decide again.
        UPDATE maas.machines x SET observed_at = NULL WHERE x.system_id = m.system_id;
        PERFORM maas.step(m.system_id, false);
    ELSIF status BETWEEN 400 AND 499 THEN
        -- Refused for good (unknown machine, invalid series, credentials).
        PERFORM maas.goal_failed(m, err);
    END IF;
    -- No answer or 5xx after the executor's retries: the poller reads it again.
END
$$;
COMMENT ON FUNCTION maas.on_http_result(uuid, integer, jsonb, text, jsonb, boolean) IS 'HTTP executor callback of every MAAS request (final outcomes only): a machine in a 2xx answer is observed and the next step taken; 409 reads the machine again; another 4xx fails the goal with MAAS''s answer as the reason; no answer or 5xx is left to the poller. An answer to a request that was superseded is ignored.';

CREATE FUNCTION maas.poll() RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    sid text;
    r text;
    n integer := 0;
BEGIN
    FOR sid IN
        SELECT x.system_id FROM maas.machines x WHERE x.goal <> 'none'
         ORDER BY x.observed_at NULLS FIRST, x.system_id
         LIMIT pgcloud.policy('maas.poll_batch_size', NULL::integer)
           FOR UPDATE SKIP LOCKED
    LOOP
        r := maas.step(sid, true);
        IF r NOT IN ('idle', 'busy', 'wait') THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
COMMENT ON FUNCTION maas.poll() IS 'The poller: one step for every machine with an open goal (read when its status is older than maas.poll_interval_ms, time out, or make the next request). Returns how many machines it acted on. Run by the scheduler (job maas.poll, every maas.poller_interval_ms and when a goal is set) or directly.';

-- The poller runs by itself: the scheduler worker calls maas.poll() every
-- maas.poller_interval_ms, and at once when a goal is set (maas.set_goal
-- wakes it at commit).
SELECT pgcloud.register_job('maas.poll', 'maas.poll()', 'maas.poller_interval_ms', 'ms',
    'The MAAS poller: one step for every machine with an open goal (commission, deploy, release).',
    run_on_wake => true);

-- source: sql/maas/50_events.sql
-- Events in: node.registered (commission), deploy.requested, release.requested.

CREATE FUNCTION maas.payload_text(payload jsonb, field text, pattern text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
BEGIN
    IF jsonb_typeof(payload -> field) IS DISTINCT FROM 'string' OR (payload ->> field) !~ pattern THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a string matching %s', field, pattern));
    END IF;
    RETURN payload ->> field;
END
$$;
COMMENT ON FUNCTION maas.payload_text(jsonb, text, text) IS 'A required string field of an event payload matching pattern; raises invalid_event otherwise.';

CREATE FUNCTION maas.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    v text := coalesce(payload ->> field, fallback);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a uuid', field));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION maas.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

CREATE FUNCTION maas.ensure_machine(system_id text, node_id uuid, hostname text) RETURNS maas.machines
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
    INSERT INTO maas.machines AS x (system_id, node_id, hostname) VALUES (system_id, node_id, hostname)
    ON CONFLICT ON CONSTRAINT machines_pkey DO UPDATE
        SET node_id = coalesce(excluded.node_id, x.node_id), hostname = coalesce(excluded.hostname, x.hostname),
            updated_at = now();
    SELECT * FROM maas.machines x WHERE x.system_id = ensure_machine.system_id FOR UPDATE;
$$;
COMMENT ON FUNCTION maas.ensure_machine(text, uuid, text) IS 'The machine row (created when new, node id and hostname refreshed), locked.';

CREATE FUNCTION maas.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                              payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    m maas.machines;
    a maas.allocations;
    v_alloc uuid;
    v_series text;
    v_keys text[];
    v_user uuid;
    live_other integer;
    other_series text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'node.registered' THEN
        m := maas.ensure_machine(maas.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
                                 maas.payload_uuid(payload, 'node_id', aggregate_id), payload ->> 'hostname');
        -- A machine still holding allocations is not commissioned again.
        IF EXISTS (SELECT 1 FROM maas.allocations x
                    WHERE x.system_id = m.system_id AND x.state IN ('deploying', 'deployed', 'releasing')) THEN
            RETURN;
        END IF;
        m := maas.set_goal(m, 'commission');
        PERFORM maas.step(m.system_id, false);

    WHEN 'deploy.requested' THEN
        v_alloc := maas.payload_uuid(payload, 'allocation_id', aggregate_id);
        v_series := maas.payload_text(payload, 'distro_series', '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$');
        IF jsonb_typeof(payload -> 'ssh_public_keys') NOT IN ('array', 'null')
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(payload -> 'ssh_public_keys', '[]')) e
                       WHERE jsonb_typeof(e) <> 'string'
                          OR (e #>> '{}') !~ '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$') THEN
            PERFORM pgcloud.raise('invalid_event', 'payload field ssh_public_keys must be an array of "<type> <base64>" keys');
        END IF;
        v_keys := ARRAY(SELECT jsonb_array_elements_text(coalesce(payload -> 'ssh_public_keys', '[]')));
        v_user := CASE WHEN payload ? 'user_id' THEN maas.payload_uuid(payload, 'user_id') END;
        m := maas.ensure_machine(maas.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
                                 CASE WHEN payload ? 'node_id' THEN maas.payload_uuid(payload, 'node_id') END,
                                 payload ->> 'node_hostname');
        IF EXISTS (SELECT 1 FROM maas.allocations x WHERE x.allocation_id = v_alloc) THEN
            RETURN;  -- already known
        END IF;
        SELECT count(*), min(x.distro_series) INTO live_other, other_series FROM maas.allocations x
         WHERE x.system_id = m.system_id AND x.state IN ('deploying', 'deployed');
        IF live_other > 0 AND other_series <> v_series THEN
            -- Provisioning keeps one image per node; refuse rather than redeploy under others.
            INSERT INTO maas.allocations (allocation_id, system_id, node_id, user_id, image, distro_series,
                                          ssh_public_keys, state, reason)
            VALUES (v_alloc, m.system_id, m.node_id, v_user, payload ->> 'image', v_series,
                    v_keys, 'failed', format('machine %s is deployed with %s for other allocations', m.system_id, other_series))
            RETURNING * INTO a;
            PERFORM maas.allocation_event('maas.deploy_failed', a, m, jsonb_build_object('reason', a.reason));
            RETURN;
        END IF;
        INSERT INTO maas.allocations (allocation_id, system_id, node_id, user_id, image, distro_series, ssh_public_keys, state)
        VALUES (v_alloc, m.system_id, m.node_id, v_user, payload ->> 'image', v_series, v_keys,
                'deploying')
        RETURNING * INTO a;
        IF m.goal = 'deploy' AND m.goal_series = v_series THEN
            RETURN;  -- joins the deployment in progress
        END IF;
        IF live_other > 0 AND m.goal = 'none' AND m.goal_series = v_series AND m.status_name = 'Deployed' THEN
            -- The machine is up with this series for other allocations: nothing to wait for.
            UPDATE maas.allocations x SET state = 'deployed', updated_at = now()
             WHERE x.allocation_id = v_alloc RETURNING * INTO a;
            PERFORM maas.allocation_event('maas.machine_deployed', a, m,
                jsonb_build_object('ip_addresses', m.ip_addresses, 'deployed_distro_series', m.distro_series,
                                   'joined', true));
            RETURN;
        END IF;
        -- Allocations releasing the machine are done: this deployment takes it over.
        PERFORM maas.complete_releases(m, 'the machine was handed to another deployment');
        m := maas.set_goal(m, 'deploy', v_series, payload ->> 'image');
        PERFORM maas.step(m.system_id, false);

    WHEN 'release.requested' THEN
        v_alloc := maas.payload_uuid(payload, 'allocation_id', aggregate_id);
        SELECT * INTO a FROM maas.allocations x WHERE x.allocation_id = v_alloc FOR UPDATE;
        IF NOT FOUND THEN
            -- Never deployed here: nothing to release.
            m := maas.ensure_machine(maas.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'), NULL, NULL);
            a.allocation_id := v_alloc;
            a.distro_series := payload ->> 'distro_series';
            a.user_id := CASE WHEN payload ? 'user_id' THEN maas.payload_uuid(payload, 'user_id') END;
            PERFORM maas.allocation_event('maas.machine_released', a, m,
                jsonb_build_object('reason', 'nothing was deployed for it'));
            RETURN;
        END IF;
        IF a.state NOT IN ('deploying', 'deployed') THEN
            RETURN;  -- releasing, released or failed already
        END IF;
        m := maas.lock_machine(a.system_id);
        UPDATE maas.allocations x SET state = 'releasing', updated_at = now()
         WHERE x.allocation_id = v_alloc RETURNING * INTO a;
        IF EXISTS (SELECT 1 FROM maas.allocations x
                    WHERE x.system_id = m.system_id AND x.state IN ('deploying', 'deployed')) THEN
            -- Others still use the machine: this allocation's share is free now.
            UPDATE maas.allocations x SET state = 'released', reason = 'the machine stays deployed for other allocations',
                   updated_at = now()
             WHERE x.allocation_id = v_alloc RETURNING * INTO a;
            PERFORM maas.allocation_event('maas.machine_released', a, m, jsonb_build_object('reason', a.reason));
            RETURN;
        END IF;
        m := maas.set_goal(m, 'release');
        PERFORM maas.step(m.system_id, false);
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION maas.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): node.registered commissions the machine; deploy.requested {allocation_id, maas_system_id, distro_series, ssh_public_keys, ...} deploys it (or joins its deployment of the same series); release.requested releases it when its last allocation goes (else that allocation is released at once). Other types are ignored.';

SELECT pgcloud.service_end('maas');
