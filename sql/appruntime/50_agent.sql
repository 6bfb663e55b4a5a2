-- The app runtime agent (termrelay/pgcloud-appagent; pgcloud_service with
-- scope apps:run) asks what to do and reports what happened.

CREATE FUNCTION api.service_app_work() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    timeout integer := pgcloud.policy('appruntime.start_timeout_seconds', NULL::integer);
BEGIN
    PERFORM pgcloud.authorize_service('apps:run');
    IF timeout IS NULL OR timeout NOT BETWEEN 5 AND 3600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'appruntime.start_timeout_seconds must be between 5 and 3600');
    END IF;
    RETURN coalesce((SELECT jsonb_agg(jsonb_build_object(
            'instance_id', i.id,
            'action', CASE i.state WHEN 'launch' THEN 'start' WHEN 'stopping' THEN 'stop'
                                   ELSE CASE WHEN i.state_since < now() - make_interval(secs => timeout) THEN 'timeout' ELSE 'probe' END END,
            'allocation_id', i.allocation_id, 'owner_id', i.owner_id, 'posix_username', u.posix_username,
            'address', coalesce(a.address, a.hostname), 'unit', i.unit, 'start', m.start_command, 'stop', m.stop_command,
            'port', m.ports[1], 'env', i.env) ORDER BY i.state_since)
          FROM appruntime.instances i
          JOIN appruntime.manifests m ON m.id = i.manifest_id
          JOIN appruntime.allocations a ON a.allocation_id = i.allocation_id AND a.state = 'active'
          LEFT JOIN appruntime.users u ON u.user_id = a.user_id
         WHERE i.state IN ('launch', 'starting', 'stopping')), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.service_app_work() IS 'The agent (scope apps:run): instances to act on, [{instance_id, action: start|probe|timeout|stop, allocation_id, owner_id, posix_username, address, unit, start, stop, port, env}]: start the process (launch), check its port (starting), give up after appruntime.start_timeout_seconds (timeout), stop it (stopping).';
SELECT pgcloud.expose('api.service_app_work()', 'service');

CREATE FUNCTION api.service_app_report(instance_id uuid, state text, detail text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, appruntime
AS $$
DECLARE
    i appruntime.instances;
BEGIN
    PERFORM pgcloud.authorize_service('apps:run');
    IF state IS NULL OR state NOT IN ('starting', 'running', 'stopped', 'failed') THEN
        PERFORM pgcloud.raise('invalid_argument', 'state must be starting, running, stopped or failed');
    END IF;
    IF detail IS NOT NULL AND length(detail) > 2000 THEN
        detail := left(detail, 2000);
    END IF;
    SELECT * INTO i FROM appruntime.instances x WHERE x.id = service_app_report.instance_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('app_instance_not_found', format('no instance %s', instance_id));
    END IF;
    -- What the agent saw applies only to the state it acted on; anything
    -- else (a stop requested meanwhile, a release) wins.
    IF (i.state = 'launch' AND state IN ('starting', 'failed'))
       OR (i.state = 'starting' AND state IN ('running', 'failed'))
       OR (i.state = 'stopping' AND state IN ('stopped', 'failed')) THEN
        i := appruntime.set_state(i, state, NULL, pgcloud.sanitize(detail));
        RETURN jsonb_build_object('applied', true, 'state', i.state);
    END IF;
    RETURN jsonb_build_object('applied', false, 'state', i.state);
END
$$;
COMMENT ON FUNCTION api.service_app_report(uuid, text, text) IS 'The agent (scope apps:run) reports: starting (process started), running (its port answers), stopped (process gone), failed (with detail). Applied only from the state the agent acted on (launch, starting, stopping); returns {applied, state}.';
SELECT pgcloud.expose('api.service_app_report(uuid, text, text)', 'service');
