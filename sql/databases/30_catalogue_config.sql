-- The fixed template catalogue, who may see what, and config (variables and sealed secrets).

CREATE FUNCTION databases.templates() RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
    SELECT '[{"id": "postgres", "engine": "postgres", "image": "postgres", "port": 5432,
              "version": "the target server''s major version", "visibility": "private",
              "config": ["POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"]}]'::jsonb
$$;
COMMENT ON FUNCTION databases.templates() IS 'The template catalogue, fixed by the platform in code: postgres (engine postgres, port 5432, the server''s major version, private). No table holds it, so no caller can add to it.';

CREATE FUNCTION databases.template(template_id text) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$ SELECT t FROM jsonb_array_elements(databases.templates()) t WHERE t ->> 'id' = template_id $$;
COMMENT ON FUNCTION databases.template(text) IS 'One template of the catalogue, or NULL.';

-- The environment, when the caller owns it (or, with admin, any); else environment_not_found.
CREATE FUNCTION databases.environment_for(environment_id uuid, admin_ok boolean) RETURNS databases.environments
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments;
    is_admin boolean := pgcloud.authorize('user') = 'pgcloud_admin';
BEGIN
    SELECT * INTO e FROM databases.environments x WHERE x.id = environment_id;
    IF NOT FOUND OR NOT ((admin_ok AND is_admin) OR e.owner_id IS NOT DISTINCT FROM pgcloud.user_id()) THEN
        PERFORM pgcloud.raise('environment_not_found', format('no environment %s', coalesce(environment_id::text, 'NULL')));
    END IF;
    RETURN e;
END
$$;
COMMENT ON FUNCTION databases.environment_for(uuid, boolean) IS 'The environment if the caller owns it (admins too when admin_ok); another user''s is environment_not_found, as is a missing one.';

CREATE FUNCTION databases.service_for(service_id uuid, admin_ok boolean, for_update boolean DEFAULT false)
RETURNS databases.services
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services;
    is_admin boolean := pgcloud.authorize('user') = 'pgcloud_admin';
BEGIN
    IF for_update THEN
        SELECT * INTO s FROM databases.services x WHERE x.id = service_id FOR UPDATE;
    ELSE
        SELECT * INTO s FROM databases.services x WHERE x.id = service_id;
    END IF;
    IF NOT FOUND OR NOT ((admin_ok AND is_admin) OR s.owner_id IS NOT DISTINCT FROM pgcloud.user_id()) THEN
        PERFORM pgcloud.raise('database_service_not_found', format('no service %s', coalesce(service_id::text, 'NULL')));
    END IF;
    RETURN s;
END
$$;
COMMENT ON FUNCTION databases.service_for(uuid, boolean, boolean) IS 'The service if the caller owns it (admins too when admin_ok), optionally locked; else database_service_not_found.';

CREATE FUNCTION databases.config_context(environment_id uuid, service_id uuid, key text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$ SELECT format('databases.config/%s/%s/%s', environment_id, coalesce(service_id::text, '-'), key) $$;
COMMENT ON FUNCTION databases.config_context(uuid, uuid, text) IS 'The sealing context of a config secret: binds the ciphertext to its environment, service and key.';

CREATE FUNCTION databases.set_config_in_tx(environment_id uuid, service_id uuid, key text, value text, is_secret boolean)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    id uuid;
BEGIN
    IF key IS NULL OR key !~ '^[A-Z_][A-Z0-9_]{0,127}$' THEN
        PERFORM pgcloud.raise('config_key_invalid', format('%s is not a config key', coalesce(left(key, 140), 'NULL')));
    END IF;
    IF value IS NULL OR length(value) > 32768 OR value ~ '[\x00]' THEN
        PERFORM pgcloud.raise('config_value_invalid', format('the value of %s is missing or too long', key));
    END IF;
    INSERT INTO databases.config AS c (environment_id, service_id, key, kind, value, sealed)
    VALUES (environment_id, service_id, key,
            CASE WHEN is_secret THEN 'secret' ELSE 'variable' END,
            CASE WHEN is_secret THEN NULL ELSE value END,
            CASE WHEN is_secret THEN pgcloud.seal(convert_to(value, 'UTF8'),
                                                  databases.config_context(environment_id, service_id, key)) END)
    ON CONFLICT ON CONSTRAINT config_slot_key DO UPDATE
       SET kind = excluded.kind, value = excluded.value, sealed = excluded.sealed, updated_at = now()
    RETURNING c.id INTO id;
    RETURN id;
END
$$;
COMMENT ON FUNCTION databases.set_config_in_tx(uuid, uuid, text, text, boolean) IS 'Sets one config entry within the caller''s transaction: a variable in plain text, a secret sealed with pgcloud.seal. No authorization, audit or event of its own: the caller authorized and audits (create_database_service does).';

CREATE FUNCTION databases.config_secret(environment_id uuid, service_id uuid, key text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, databases
AS $$
    SELECT convert_from(pgcloud.unseal(c.sealed, databases.config_context(c.environment_id, c.service_id, c.key)), 'UTF8')
      FROM databases.config c
     WHERE c.environment_id = config_secret.environment_id AND c.service_id IS NOT DISTINCT FROM config_secret.service_id
       AND c.key = config_secret.key AND c.kind = 'secret'
$$;
COMMENT ON FUNCTION databases.config_secret(uuid, uuid, text) IS 'Internal: a config secret unsealed (NULL when there is none). Callers check ownership and audit.';

CREATE FUNCTION databases.reserved_key(service_id uuid, key text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$ SELECT service_id IS NOT NULL AND key IN ('POSTGRES_USER', 'POSTGRES_DB', 'POSTGRES_PASSWORD') $$;
COMMENT ON FUNCTION databases.reserved_key(uuid, text) IS 'Whether a service-scope key is managed by the platform (a template service''s generated credentials).';

CREATE FUNCTION databases.set_config_apply(p_environment_id uuid, p_service_id uuid, p_key text, p_value text,
                                          p_is_secret boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(p_environment_id, false);
    v_service uuid := p_service_id;
    s databases.services;
    v_key text := p_key;
    v_secret boolean := p_is_secret;
    id uuid;
BEGIN
    IF v_service IS NOT NULL THEN
        s := databases.service_for(v_service, false);
        IF s.environment_id <> e.id OR s.status <> 'active' THEN
            PERFORM pgcloud.raise('database_service_not_found', format('no active service %s in environment %s', v_service, e.id));
        END IF;
    END IF;
    IF databases.reserved_key(v_service, v_key) THEN
        PERFORM pgcloud.raise('config_key_reserved', format('%s is generated by the platform', v_key),
                              'Use api.rotate_database_credentials() for new credentials.');
    END IF;
    id := databases.set_config_in_tx(e.id, v_service, v_key, p_value, v_secret);
    PERFORM pgcloud.audit('config.set', 'config', id::text, 'ok',
        jsonb_build_object('environment_id', e.id, 'service_id', v_service, 'key', v_key,
                           'kind', CASE WHEN v_secret THEN 'secret' ELSE 'variable' END));
    PERFORM pgcloud.emit('config.changed', 'environment', e.id::text,
        jsonb_build_object('environment_id', e.id, 'service_id', v_service, 'key', v_key,
                           'kind', CASE WHEN v_secret THEN 'secret' ELSE 'variable' END, 'change', 'set'));
    RETURN jsonb_build_object('id', id, 'environment_id', e.id, 'service_id', v_service, 'key', v_key,
                              'kind', CASE WHEN v_secret THEN 'secret' ELSE 'variable' END);
END
$$;
COMMENT ON FUNCTION databases.set_config_apply(uuid, uuid, text, text, boolean) IS 'Internal to api.set_config_variable() and api.set_config_secret() (which authorize): checks ownership and reserved keys, sets the entry, audits config.set (without the value) and emits config.changed.';

CREATE FUNCTION databases.set_config_variable_apply(p_environment_id uuid, p_service_id uuid, p_key text, p_value text)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$ SELECT databases.set_config_apply(p_environment_id, p_service_id, p_key, p_value, false) $$;
COMMENT ON FUNCTION databases.set_config_variable_apply(uuid, uuid, text, text) IS 'Internal to api.set_config_variable() (which authorizes): the handler of operation databases.set_config_variable, databases.set_config_apply() for a plain variable.';

CREATE FUNCTION api.set_config_variable(environment_id uuid, key text, value text, service_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(
        pgcloud.idempotent('databases.set_config_variable',
            jsonb_build_object('environment_id', environment_id, 'service_id', service_id, 'key', key, 'value', value,
                               'is_secret', false)),
        pgcloud.idempotent_done('databases.set_config_variable',
            databases.set_config_variable_apply(environment_id, service_id, key, value)));
END
$$;
COMMENT ON FUNCTION api.set_config_variable(uuid, text, text, uuid) IS 'Sets a config variable of your environment, or of one of its services when service_id is given (a service''s entry wins over the environment''s): {id, environment_id, service_id, key, kind}. POSTGRES_USER, POSTGRES_DB and POSTGRES_PASSWORD of a template service are the platform''s. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.set_config_variable(uuid, text, text, uuid)', 'user', 'admin');

CREATE FUNCTION api.set_config_secret(environment_id uuid, key text, value text, service_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    -- No idempotency record: its request hash would be a hash of the secret.
    RETURN databases.set_config_apply(environment_id, service_id, key, value, true);
END
$$;
COMMENT ON FUNCTION api.set_config_secret(uuid, text, text, uuid) IS 'Sets a config secret (sealed with the platform''s master key; shown again only through api.reveal_config_secret()) of your environment or of one of its services. Setting it again with the same value is harmless.';
SELECT pgcloud.expose('api.set_config_secret(uuid, text, text, uuid)', 'user', 'admin');

CREATE FUNCTION api.unset_config(environment_id uuid, key text, service_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(unset_config.environment_id, false);
    id uuid;
BEGIN
    IF databases.reserved_key(unset_config.service_id, unset_config.key) THEN
        PERFORM pgcloud.raise('config_key_reserved', format('%s is generated by the platform', unset_config.key));
    END IF;
    DELETE FROM databases.config c
     WHERE c.environment_id = e.id AND c.service_id IS NOT DISTINCT FROM unset_config.service_id AND c.key = unset_config.key
    RETURNING c.id INTO id;
    IF id IS NULL THEN
        PERFORM pgcloud.raise('config_not_found', format('no config entry %s', coalesce(left(unset_config.key, 140), 'NULL')));
    END IF;
    PERFORM pgcloud.audit('config.unset', 'config', id::text, 'ok',
        jsonb_build_object('environment_id', e.id, 'service_id', unset_config.service_id, 'key', unset_config.key));
    PERFORM pgcloud.emit('config.changed', 'environment', e.id::text,
        jsonb_build_object('environment_id', e.id, 'service_id', unset_config.service_id, 'key', unset_config.key, 'change', 'unset'));
    RETURN jsonb_build_object('id', id, 'deleted', true);
END
$$;
COMMENT ON FUNCTION api.unset_config(uuid, text, uuid) IS 'Removes a config entry of your environment or of one of its services (not the platform''s POSTGRES_* of a template service). Repeating it answers config_not_found.';
SELECT pgcloud.expose('api.unset_config(uuid, text, uuid)', 'user', 'admin');

CREATE FUNCTION api.list_config(environment_id uuid, service_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(list_config.environment_id, false);
BEGIN
    IF list_config.service_id IS NOT NULL THEN
        PERFORM databases.service_for(list_config.service_id, false);
    END IF;
    -- The environment's entries, overridden by the service's own.
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_build_object('key', c.key, 'kind', c.kind,
                                            'scope', CASE WHEN c.service_id IS NULL THEN 'environment' ELSE 'service' END,
                                            'value', CASE WHEN c.kind = 'variable' THEN c.value END,
                                            'updated_at', c.updated_at) ORDER BY c.key)
          FROM (SELECT DISTINCT ON (x.key) x.*
                  FROM databases.config x
                 WHERE x.environment_id = e.id
                   AND (x.service_id IS NULL OR x.service_id = list_config.service_id)
                 ORDER BY x.key, x.service_id NULLS LAST) c), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_config(uuid, uuid) IS 'The config of your environment, or as a service sees it (its own entries over the environment''s): [{key, kind, scope, value (variables only; a secret''s is null), updated_at}].';
SELECT pgcloud.expose('api.list_config(uuid, uuid)', 'user', 'admin');

CREATE FUNCTION api.reveal_config_secret(environment_id uuid, key text, service_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(reveal_config_secret.environment_id, false);
    v text;
BEGIN
    IF reveal_config_secret.service_id IS NOT NULL THEN
        PERFORM databases.service_for(reveal_config_secret.service_id, false);
    END IF;
    v := databases.config_secret(e.id, reveal_config_secret.service_id, reveal_config_secret.key);
    IF v IS NULL THEN
        PERFORM pgcloud.raise('config_not_found', format('no secret %s', coalesce(left(reveal_config_secret.key, 140), 'NULL')));
    END IF;
    PERFORM pgcloud.audit('config.reveal_secret', 'config', reveal_config_secret.key, 'ok',
        jsonb_build_object('environment_id', e.id, 'service_id', reveal_config_secret.service_id));
    RETURN jsonb_build_object('key', reveal_config_secret.key, 'value', v);
END
$$;
COMMENT ON FUNCTION api.reveal_config_secret(uuid, text, uuid) IS 'Shows one secret of your environment or service to you, its owner (not to administrators), and audits that it was shown (config.reveal_secret).';
SELECT pgcloud.expose('api.reveal_config_secret(uuid, text, uuid)', 'user', 'admin');

CREATE FUNCTION api.list_database_templates() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN databases.templates();
END
$$;
COMMENT ON FUNCTION api.list_database_templates() IS 'The service templates the platform offers (fixed in code): [{id, engine, image, port, version, visibility, config}].';
SELECT pgcloud.expose('api.list_database_templates()', 'user', 'admin');
