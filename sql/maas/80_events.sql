-- Events in: node.registered (commission), deploy.requested, release.requested,
-- user.created (the accounts deployments create on nodes). One handler per
-- subscribed event type, maas.on_<type>(pgcloud.event_envelope), called by the
-- core's delivery with the inbox row in the same transaction.

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

CREATE FUNCTION maas.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
BEGIN
    IF payload ->> 'posix_username' IS NULL THEN
        RETURN;   -- no account to create on nodes
    END IF;
    IF jsonb_typeof(payload -> 'uid') IS DISTINCT FROM 'number' OR (payload ->> 'uid') !~ '^[0-9]{4,10}$'
       OR (payload ->> 'uid')::bigint NOT BETWEEN 1000 AND 2147483647 THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field uid must be a number from 1000');
    END IF;
    INSERT INTO maas.users AS u (user_id, posix_username, uid)
    VALUES (pgcloud.payload_uuid(payload, 'user_id', aggregate_id),
            pgcloud.payload_text(payload, 'posix_username', '^[a-z_][a-z0-9_-]{0,31}$'), (payload ->> 'uid')::integer)
    ON CONFLICT (user_id) DO UPDATE
        SET posix_username = excluded.posix_username, uid = excluded.uid, updated_at = now();
END
$$;
COMMENT ON FUNCTION maas.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: the accounts read model (maas.users) deployments create on nodes.';

CREATE FUNCTION maas.on_node_registered(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    m maas.machines;
BEGIN
    m := maas.ensure_machine(pgcloud.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
                             pgcloud.payload_uuid(payload, 'node_id', aggregate_id), payload ->> 'hostname');
    -- A machine still holding allocations is not commissioned again.
    IF EXISTS (SELECT 1 FROM maas.allocations x
                WHERE x.system_id = m.system_id AND x.state IN ('deploying', 'deployed', 'releasing')) THEN
        RETURN;
    END IF;
    m := maas.set_goal(m, 'commission');
    PERFORM maas.step(m.system_id, false);
END
$$;
COMMENT ON FUNCTION maas.on_node_registered(pgcloud.event_envelope) IS 'Event handler of node.registered: commissions the machine (not while it holds allocations).';

CREATE FUNCTION maas.on_deploy_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    m maas.machines;
    a maas.allocations;
    v_alloc uuid;
    v_series text;
    v_keys text[];
    v_user uuid;
    live_other integer;
    other_series text;
    v_principal text;
BEGIN
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    v_series := pgcloud.payload_text(payload, 'distro_series', '^[a-z0-9][a-z0-9._-]{0,31}(/[a-z0-9][a-z0-9._-]{0,31})?$');
    IF jsonb_typeof(payload -> 'ssh_public_keys') NOT IN ('array', 'null')
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(payload -> 'ssh_public_keys', '[]')) e
                   WHERE jsonb_typeof(e) <> 'string'
                      OR (e #>> '{}') !~ '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$') THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field ssh_public_keys must be an array of "<type> <base64>" keys');
    END IF;
    v_keys := ARRAY(SELECT jsonb_array_elements_text(coalesce(payload -> 'ssh_public_keys', '[]')));
    v_user := CASE WHEN payload ? 'user_id' THEN pgcloud.payload_uuid(payload, 'user_id') END;
    m := maas.ensure_machine(pgcloud.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'),
                             CASE WHEN payload ? 'node_id' THEN pgcloud.payload_uuid(payload, 'node_id') END,
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
    -- The allocation's SSH principal: that of the same user's allocations
    -- in this deployment (their account on the node lists it), else a
    -- new one only this allocation's node will know.
    SELECT min(x.ssh_principal) INTO v_principal FROM maas.allocations x
     WHERE x.system_id = m.system_id AND x.state IN ('deploying', 'deployed')
       AND x.user_id IS NOT DISTINCT FROM v_user AND x.ssh_principal IS NOT NULL;
    INSERT INTO maas.allocations (allocation_id, system_id, node_id, user_id, image, distro_series, ssh_public_keys,
                                  ssh_principal, state)
    VALUES (v_alloc, m.system_id, m.node_id, v_user, payload ->> 'image', v_series, v_keys,
            coalesce(v_principal, 'pgcloud-alloc-' || v_alloc), 'deploying')
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
END
$$;
COMMENT ON FUNCTION maas.on_deploy_requested(pgcloud.event_envelope) IS 'Event handler of deploy.requested {allocation_id, maas_system_id, distro_series, ssh_public_keys, ...}: deploys the machine (or joins its deployment of the same series) and gives the allocation its SSH principal.';

CREATE FUNCTION maas.on_release_requested(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    m maas.machines;
    a maas.allocations;
    v_alloc uuid;
BEGIN
    v_alloc := pgcloud.payload_uuid(payload, 'allocation_id', aggregate_id);
    SELECT * INTO a FROM maas.allocations x WHERE x.allocation_id = v_alloc FOR UPDATE;
    IF NOT FOUND THEN
        -- Never deployed here: nothing to release.
        m := maas.ensure_machine(pgcloud.payload_text(payload, 'maas_system_id', '^[a-z0-9][a-z0-9-]{0,63}$'), NULL, NULL);
        a.allocation_id := v_alloc;
        a.distro_series := payload ->> 'distro_series';
        a.user_id := CASE WHEN payload ? 'user_id' THEN pgcloud.payload_uuid(payload, 'user_id') END;
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
END
$$;
COMMENT ON FUNCTION maas.on_release_requested(pgcloud.event_envelope) IS 'Event handler of release.requested: releases the machine when its last allocation goes (else that allocation is released at once).';
