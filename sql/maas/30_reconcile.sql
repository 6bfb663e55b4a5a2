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
                           'image', a.image, 'at', now())
        || jsonb_strip_nulls(jsonb_build_object('ssh_principal', a.ssh_principal,
                             'login', (SELECT u.posix_username FROM maas.users u WHERE u.user_id = a.user_id)))
        || extra)
$$;
COMMENT ON FUNCTION maas.allocation_event(text, maas.allocations, maas.machines, jsonb) IS 'Emits maas.machine_deployed, maas.deploy_failed or maas.machine_released for one allocation: {allocation_id, system_id, node_id, hostname, user_id, distro_series, image, ssh_principal (the certificate principal the node accepts), login (the account deployed for the owner; both absent when unknown), at} plus extra (reason, ip_addresses).';

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
CREATE FUNCTION maas.end_stuck_release_apply(p_system_id text, p_reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    m maas.machines;
    n integer;
    why text := left(btrim(coalesce(p_reason, '')), 500);
BEGIN
    IF why = '' THEN
        PERFORM pgcloud.raise('invalid_argument', 'a reason is required: it is audited and shown to the users');
    END IF;
    SELECT * INTO m FROM maas.machines x WHERE x.system_id = p_system_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('not_found', format('no machine %s', left(p_system_id, 64)));
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
COMMENT ON FUNCTION maas.end_stuck_release_apply(text, text) IS 'Internal to api.admin_end_stuck_release() (which authorizes): releases the allocations of a machine stuck in a release, audited with the reason, and commissions it afresh.';

CREATE FUNCTION api.admin_end_stuck_release(system_id text, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(
        pgcloud.idempotent('maas.end_stuck_release', jsonb_build_object('system_id', system_id, 'reason', reason)),
        pgcloud.idempotent_done('maas.end_stuck_release', maas.end_stuck_release_apply(system_id, reason)));
END
$$;
COMMENT ON FUNCTION api.admin_end_stuck_release(text, text) IS 'Operators: a release MAAS could not complete (the machine is quarantined and its allocations stay releasing and billed) ends by this decision: the allocations are released (billing stops), the machine stays quarantined and is commissioned afresh before it is placed again. Returns {system_id, allocations_released, quarantined, goal}. Not stuck: 409 invalid_state_transition; unknown: 404 not_found. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_end_stuck_release(text, text)', 'admin');
