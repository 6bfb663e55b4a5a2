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
