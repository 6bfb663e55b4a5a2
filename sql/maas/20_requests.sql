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
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, maas
AS $$
DECLARE
    ca jsonb := pgcloud.policy('maas.ssh_trusted_user_ca_keys', NULL::jsonb);
    default_keys text;
    accounts text := '';
    principal_files text := '';
    ca_lines text;
    t record;
    ud text := E'#cloud-config\n';
BEGIN
    IF jsonb_typeof(ca) IS DISTINCT FROM 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(ca) e
                   WHERE jsonb_typeof(e) <> 'string'
                      OR (e #>> '{}') !~ '^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,2}( [A-Za-z0-9@._-]{1,100})?$') THEN
        PERFORM pgcloud.raise('policy_invalid',
            'maas.ssh_trusted_user_ca_keys must be an array of SSH public keys ("<type> <base64> [comment]")');
    END IF;
    -- Keys of owners without a known account go to the image's default user
    -- (single tenancy: the node is theirs alone).
    SELECT string_agg(DISTINCT '  - "' || k || '"', E'\n' ORDER BY '  - "' || k || '"') INTO default_keys
      FROM maas.allocations a CROSS JOIN LATERAL unnest(a.ssh_public_keys) k
     WHERE a.system_id = user_data.system_id AND a.state = 'deploying'
       AND NOT EXISTS (SELECT 1 FROM maas.users u WHERE u.user_id = a.user_id);
    -- Each owner gets an account of its own, whose AuthorizedPrincipalsFile
    -- names the principals of its allocations in this deployment: sshd takes
    -- a certificate for that account only when one of them is in it.
    FOR t IN
        SELECT u.posix_username, u.uid,
               array_agg(DISTINCT a.ssh_principal ORDER BY a.ssh_principal)
                   FILTER (WHERE a.ssh_principal IS NOT NULL) AS principals,
               (SELECT array_agg(DISTINCT k ORDER BY k)
                  FROM maas.allocations b CROSS JOIN LATERAL unnest(b.ssh_public_keys) k
                 WHERE b.system_id = user_data.system_id AND b.state = 'deploying' AND b.user_id = u.user_id) AS keys
          FROM maas.allocations a JOIN maas.users u ON u.user_id = a.user_id
         WHERE a.system_id = user_data.system_id AND a.state = 'deploying'
         GROUP BY u.user_id, u.posix_username, u.uid
         ORDER BY u.posix_username
    LOOP
        accounts := accounts || format(E'  - name: %s\n    uid: %s\n    shell: /bin/bash\n    lock_passwd: true\n',
                                       t.posix_username, t.uid)
            || CASE WHEN t.keys IS NOT NULL THEN E'    ssh_authorized_keys:\n'
                    || (SELECT string_agg('      - "' || k || '"', E'\n' ORDER BY k) FROM unnest(t.keys) k) || E'\n'
                    ELSE '' END;
        principal_files := principal_files
            || format(E'  - path: /etc/ssh/pgcloud/principals/%s\n    permissions: "0644"\n    content: |\n', t.posix_username)
            || coalesce((SELECT string_agg('      ' || p, E'\n' ORDER BY p) FROM unnest(t.principals) p) || E'\n',
                        E'      # none\n');
    END LOOP;
    IF default_keys IS NULL AND accounts = '' THEN
        RETURN NULL;
    END IF;
    IF default_keys IS NOT NULL THEN
        ud := ud || E'ssh_authorized_keys:\n' || default_keys || E'\n';
    END IF;
    IF accounts <> '' THEN
        ca_lines := (SELECT string_agg('      ' || (e #>> '{}'), E'\n') FROM jsonb_array_elements(ca) e);
        ud := ud || E'users:\n  - default\n' || accounts
            || E'write_files:\n  - path: /etc/ssh/sshd_config.d/50-pgcloud.conf\n    permissions: "0644"\n    content: |\n'
            || E'      AuthorizedPrincipalsFile /etc/ssh/pgcloud/principals/%u\n'
            || CASE WHEN ca_lines IS NOT NULL THEN E'      TrustedUserCAKeys /etc/ssh/pgcloud/trusted_user_ca_keys\n'
                    || E'  - path: /etc/ssh/pgcloud/trusted_user_ca_keys\n    permissions: "0644"\n    content: |\n'
                    || ca_lines || E'\n'
                    ELSE '' END
            || principal_files
            || E'runcmd:\n  - [systemctl, reload-or-restart, ssh]\n';
    END IF;
    RETURN ud;
END
$$;
COMMENT ON FUNCTION maas.user_data(text) IS 'cloud-init user data of a deployment (#cloud-config; NULL when there is nothing to say): for each owner of the allocations deploying on the machine whose POSIX account is known (user.created) an account of its own (name, uid, locked password, its SSH keys) and /etc/ssh/pgcloud/principals/<name> listing the allocations'' principals, an sshd drop-in with AuthorizedPrincipalsFile /etc/ssh/pgcloud/principals/%u (and TrustedUserCAKeys from policy maas.ssh_trusted_user_ca_keys), then an sshd reload; keys of owners without a known account go to the image''s default user (ssh_authorized_keys). Keys were validated by releases and again on deploy.requested.';

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
