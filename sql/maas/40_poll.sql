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
