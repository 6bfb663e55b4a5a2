-- pgcloud_databases install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_databases" to load this file. \quit

SELECT pgcloud.service_begin('databases');
-- source: sql/databases/00_catalogue.sql
-- pgcloud_databases: managed PostgreSQL databases for customers (seed 003).
-- Schema databases, owned by pgcloud_svc_databases (created by pgcloud.service_begin).
--
-- Decisions:
--   * Environments belong to a user; services live in an environment and on
--     a target server an operator registered (admin password sealed with
--     pgcloud.seal, the server checked reachable and its version recorded).
--   * The template catalogue is code (databases.templates()), not a table:
--     nobody can add an engine, an image or a public port. A template
--     service's visibility is private: its URI names the server's private
--     host, and nothing public is routed to it.
--   * Credentials come from pg_strong_random (C). The password is a sealed
--     secret (config POSTGRES_PASSWORD and the credential row), never stored
--     in plaintext; the target server only ever receives its SCRAM-SHA-256
--     verifier. The URI with the password is returned once by the create and
--     the rotate call (never stored in the idempotency response) and
--     afterwards only through the audited api.get_database_connection().
--   * On the target server a service is a database owned by a NOLOGIN owner
--     role, and LOGIN roles that are members of it (ALTER ROLE ... SET role),
--     so a credential rotation is a new login role while the old one stays
--     valid for the grace period. The owner role, the login role and the
--     database's ownership are made in one remote transaction, after the
--     database: a role never exists without its database.
--   * create_database_service() commits the service row, credentials,
--     config and first deployment together and then provisions inline, so
--     the database exists when the call returns; a failed attempt is retried
--     by the deployer job databases.deploy, run by the scheduler (backoff, policy) until running or failed.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('environment_name_invalid',     400, 'The environment name must be 1 to 63 letters, digits, spaces, dots, dashes or underscores.', 'databases'),
    ('environment_exists',           409, 'You already have an environment with this name.', 'databases'),
    ('environment_not_found',        404, 'The environment does not exist.', 'databases'),
    ('database_server_invalid',      400, 'The database server registration is not valid.', 'databases'),
    ('database_server_exists',       409, 'A database server with this name is already registered.', 'databases'),
    ('database_server_unreachable',  503, 'The database server could not be reached or refused the platform''s administrator.', 'databases'),
    ('database_server_not_found',    404, 'The database server does not exist or takes no new services.', 'databases'),
    ('database_template_not_found',  404, 'There is no such service template.', 'databases'),
    ('database_service_name_invalid',400, 'The service name must be 1 to 63 characters and start with a letter.', 'databases'),
    ('database_service_exists',      409, 'This environment already has a service with this name.', 'databases'),
    ('database_service_limit',       409, 'This environment has as many services as policy allows.', 'databases'),
    ('database_service_not_found',   404, 'The service does not exist.', 'databases'),
    ('database_service_not_active',  409, 'The service is being deleted or was deleted.', 'databases'),
    ('deployment_not_found',         404, 'The deployment does not exist.', 'databases'),
    ('config_key_invalid',           400, 'A config key is 1 to 128 upper-case letters, digits and underscores, starting with a letter or underscore.', 'databases'),
    ('config_key_reserved',          409, 'This config key is managed by the platform.', 'databases'),
    ('config_value_invalid',         400, 'A config value is at most 32768 characters of text.', 'databases'),
    ('config_not_found',             404, 'The config entry does not exist.', 'databases');

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('databases.connection_limit', '20', 'Connection limit of each customer database and its login roles on the target server.'),
    ('databases.remote_timeout_ms', '10000', 'Time allowed for one conversation with a target server (connect and statements), in milliseconds.'),
    ('databases.deploy_max_attempts', '6', 'Provisioning attempts of a deployment before it is failed.'),
    ('databases.deploy_retry_base_seconds', '2', 'First retry delay of a deployment (seconds); doubles per attempt up to 300.'),
    ('databases.inline_provisioning', 'true', 'Whether create_database_service() and deploy_database_service() provision before they return (else the deployer job does it after commit).'),
    ('databases.verify_login', 'true', 'Whether a deployment is only running once the generated credentials logged in to the new database.'),
    ('databases.rotation_grace_seconds', '3600', 'How long the previous password stays valid after api.rotate_database_credentials() (seconds).'),
    ('databases.delete_grace_seconds', '3600', 'How long after api.delete_service() the database and its roles are dropped on the server (seconds).'),
    ('databases.max_services_per_environment', '50', 'Services (not deleted) an environment may hold.'),
    ('databases.deployer_interval_ms', '1000', 'How often the scheduler runs the deployer job databases.deploy (ms); it also runs at once when a create, deploy, rotation or deletion commits.');

-- source: sql/databases/10_tables.sql
-- Environments, target servers, services, credentials, config, deployments.

CREATE TABLE databases.environments (
    id         uuid PRIMARY KEY,
    owner_id   uuid NOT NULL,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
COMMENT ON TABLE databases.environments IS 'Environments: a user''s group of database services and their shared config.';
COMMENT ON COLUMN databases.environments.id IS 'Environment id.';
COMMENT ON COLUMN databases.environments.owner_id IS 'The user who owns it (JWT sub).';
COMMENT ON COLUMN databases.environments.name IS 'Name, unique per owner.';
COMMENT ON COLUMN databases.environments.created_at IS 'When it was created.';

CREATE TABLE databases.servers (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    host                  text NOT NULL CHECK (host ~ '^[^\s[:cntrl:]]{1,255}$'),
    port                  integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    private_host          text CHECK (private_host ~ '^[^\s[:cntrl:]/@:]{1,255}$'),
    maintenance_db        text NOT NULL DEFAULT 'postgres',
    admin_user            text NOT NULL CHECK (length(admin_user) BETWEEN 1 AND 63),
    admin_password_sealed bytea NOT NULL,
    major_version         integer NOT NULL,
    server_version_num    integer NOT NULL,
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    registered_by         uuid,
    created_at            timestamptz NOT NULL DEFAULT now(),
    checked_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE databases.servers IS 'Target PostgreSQL servers the platform manages, registered by operators.';
COMMENT ON COLUMN databases.servers.id IS 'Server id.';
COMMENT ON COLUMN databases.servers.name IS 'Operator''s name for it.';
COMMENT ON COLUMN databases.servers.host IS 'Host (or socket directory) the platform connects to as administrator.';
COMMENT ON COLUMN databases.servers.port IS 'Port.';
COMMENT ON COLUMN databases.servers.private_host IS 'Host customers reach it at on the private network (the URI''s host); NULL: host.';
COMMENT ON COLUMN databases.servers.maintenance_db IS 'Database the platform connects to for CREATE/DROP DATABASE.';
COMMENT ON COLUMN databases.servers.admin_user IS 'Administrator role (superuser, or CREATEROLE and CREATEDB).';
COMMENT ON COLUMN databases.servers.admin_password_sealed IS 'Administrator password, sealed with pgcloud.seal (context databases.server/<id>).';
COMMENT ON COLUMN databases.servers.major_version IS 'PostgreSQL major version found at registration.';
COMMENT ON COLUMN databases.servers.server_version_num IS 'server_version_num found at registration.';
COMMENT ON COLUMN databases.servers.status IS 'active (takes new services) or disabled.';
COMMENT ON COLUMN databases.servers.registered_by IS 'The operator who registered it (NULL at psql).';
COMMENT ON COLUMN databases.servers.created_at IS 'When it was registered.';
COMMENT ON COLUMN databases.servers.checked_at IS 'When it was last found reachable.';

CREATE TABLE databases.services (
    id             uuid PRIMARY KEY,
    environment_id uuid NOT NULL REFERENCES databases.environments (id),
    owner_id       uuid NOT NULL,
    name           text NOT NULL,
    slug           text NOT NULL CHECK (slug ~ '^[a-z][a-z0-9_]{0,39}$'),
    template_id    text NOT NULL,
    server_id      uuid NOT NULL REFERENCES databases.servers (id),
    engine         text NOT NULL,
    version        integer NOT NULL,
    port           integer NOT NULL,
    visibility     text NOT NULL DEFAULT 'private' CHECK (visibility = 'private'),
    database_name  text NOT NULL CHECK (database_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    owner_role     text NOT NULL CHECK (owner_role ~ '^[a-z][a-z0-9_]{0,62}$'),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleting', 'deleted')),
    delete_after   timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    UNIQUE (server_id, database_name)
);
CREATE UNIQUE INDEX services_name_idx ON databases.services (environment_id, name) WHERE status <> 'deleted';
CREATE INDEX services_deleting_idx ON databases.services (delete_after) WHERE status = 'deleting';
COMMENT ON TABLE databases.services IS 'Database services made from a template: one database on a target server.';
COMMENT ON COLUMN databases.services.id IS 'Service id.';
COMMENT ON COLUMN databases.services.environment_id IS 'Its environment.';
COMMENT ON COLUMN databases.services.owner_id IS 'The environment''s owner.';
COMMENT ON COLUMN databases.services.name IS 'Name, unique in the environment among services not deleted.';
COMMENT ON COLUMN databases.services.slug IS 'Name made safe for identifiers; the database name starts with it.';
COMMENT ON COLUMN databases.services.template_id IS 'The template it was made from (databases.templates()).';
COMMENT ON COLUMN databases.services.server_id IS 'The target server.';
COMMENT ON COLUMN databases.services.engine IS 'Engine fixed by the template (postgres).';
COMMENT ON COLUMN databases.services.version IS 'Major version (the server''s).';
COMMENT ON COLUMN databases.services.port IS 'Port customers connect to.';
COMMENT ON COLUMN databases.services.visibility IS 'Always private for template services.';
COMMENT ON COLUMN databases.services.database_name IS 'Database on the target server.';
COMMENT ON COLUMN databases.services.owner_role IS 'NOLOGIN role on the target server that owns the database; login roles are its members.';
COMMENT ON COLUMN databases.services.status IS 'active, deleting (drop due at delete_after) or deleted.';
COMMENT ON COLUMN databases.services.delete_after IS 'When the deployer job drops the database (after api.delete_service and the grace; pushed back after a failed try).';
COMMENT ON COLUMN databases.services.last_error IS 'Why the last drop attempt failed.';
COMMENT ON COLUMN databases.services.created_at IS 'When it was created.';
COMMENT ON COLUMN databases.services.deleted_at IS 'When its database was dropped.';

CREATE TABLE databases.credentials (
    id              uuid PRIMARY KEY,
    service_id      uuid NOT NULL REFERENCES databases.services (id),
    username        text NOT NULL CHECK (username ~ '^[a-z][a-z0-9_]{0,62}$'),
    password_sealed bytea,
    status          text NOT NULL CHECK (status IN ('active', 'retiring', 'removed')),
    remove_after    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    removed_at      timestamptz,
    CHECK ((status = 'removed') = (password_sealed IS NULL))
);
CREATE UNIQUE INDEX credentials_active_idx ON databases.credentials (service_id) WHERE status = 'active';
CREATE INDEX credentials_retiring_idx ON databases.credentials (remove_after) WHERE status = 'retiring';
COMMENT ON TABLE databases.credentials IS 'Login roles of a service on its server: one active, retiring ones valid until remove_after, removed ones (password forgotten).';
COMMENT ON COLUMN databases.credentials.id IS 'Credential id.';
COMMENT ON COLUMN databases.credentials.service_id IS 'The service.';
COMMENT ON COLUMN databases.credentials.username IS 'Login role (from the CSPRNG).';
COMMENT ON COLUMN databases.credentials.password_sealed IS 'Its password, sealed (context databases.credential/<id>); NULL once removed.';
COMMENT ON COLUMN databases.credentials.status IS 'active, retiring or removed.';
COMMENT ON COLUMN databases.credentials.remove_after IS 'Retiring: when the deployer drops the role (pushed back after a failed try).';
COMMENT ON COLUMN databases.credentials.last_error IS 'Why the last removal attempt failed.';
COMMENT ON COLUMN databases.credentials.created_at IS 'When it was generated.';
COMMENT ON COLUMN databases.credentials.removed_at IS 'When its role was dropped.';

CREATE TABLE databases.config (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    environment_id uuid NOT NULL REFERENCES databases.environments (id),
    service_id     uuid REFERENCES databases.services (id),
    key            text NOT NULL CHECK (key ~ '^[A-Z_][A-Z0-9_]{0,127}$'),
    kind           text NOT NULL CHECK (kind IN ('variable', 'secret')),
    value          text,
    sealed         bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'variable' AND value IS NOT NULL AND sealed IS NULL)
        OR (kind = 'secret' AND value IS NULL AND sealed IS NOT NULL)),
    CONSTRAINT config_slot_key UNIQUE NULLS NOT DISTINCT (environment_id, service_id, key)
);
COMMENT ON TABLE databases.config IS 'Config: variables and secrets, of an environment (service_id NULL) or of one service. Secrets are sealed; a service''s own entries win over its environment''s.';
COMMENT ON COLUMN databases.config.id IS 'Entry id.';
COMMENT ON COLUMN databases.config.environment_id IS 'The environment.';
COMMENT ON COLUMN databases.config.service_id IS 'The service, or NULL for an environment-wide entry.';
COMMENT ON COLUMN databases.config.key IS 'Name, e.g. POSTGRES_USER.';
COMMENT ON COLUMN databases.config.kind IS 'variable (plain value) or secret (sealed).';
COMMENT ON COLUMN databases.config.value IS 'A variable''s value.';
COMMENT ON COLUMN databases.config.sealed IS 'A secret''s value, sealed with pgcloud.seal (context databases.config/<environment>/<service or ->/<key>).';
COMMENT ON COLUMN databases.config.created_at IS 'When it was first set.';
COMMENT ON COLUMN databases.config.updated_at IS 'When it was last set.';

CREATE TABLE databases.deployment_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE databases.deployment_transitions IS 'Allowed changes of databases.deployments.status (from_state NULL: initial state).';
COMMENT ON COLUMN databases.deployment_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN databases.deployment_transitions.to_state IS 'State after.';
INSERT INTO databases.deployment_transitions (from_state, to_state) VALUES
    (NULL, 'pending'),
    ('pending', 'provisioning'), ('pending', 'failed'), ('pending', 'stopped'), ('pending', 'deleted'),
    ('provisioning', 'running'), ('provisioning', 'failed'), ('provisioning', 'stopped'), ('provisioning', 'deleted'),
    ('running', 'stopped'), ('running', 'deleted'),
    ('failed', 'deleted'), ('stopped', 'deleted');

CREATE TABLE databases.deployments (
    id              uuid PRIMARY KEY,
    service_id      uuid NOT NULL REFERENCES databases.services (id),
    number          integer NOT NULL CHECK (number > 0),
    status          text NOT NULL CHECK (status IN ('pending', 'provisioning', 'running', 'failed', 'stopped', 'deleted')),
    reason          text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    requested_by    uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    running_at      timestamptz,
    claimed_at      timestamptz,
    UNIQUE (service_id, number)
);
CREATE INDEX deployments_due_idx ON databases.deployments (next_attempt_at) WHERE status IN ('pending', 'provisioning');
CREATE TRIGGER deployments_status BEFORE INSERT OR UPDATE OF status ON databases.deployments
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('status', 'databases.deployment_transitions');
COMMENT ON TABLE databases.deployments IS 'Deployments of a service: pending -> provisioning -> running, or failed; stopped when superseded or the service is being deleted; deleted with it.';
COMMENT ON COLUMN databases.deployments.id IS 'Deployment id.';
COMMENT ON COLUMN databases.deployments.service_id IS 'The service.';
COMMENT ON COLUMN databases.deployments.number IS '1 for the first deployment of the service, then 2, 3, ...';
COMMENT ON COLUMN databases.deployments.status IS 'pending, provisioning, running, failed, stopped or deleted.';
COMMENT ON COLUMN databases.deployments.reason IS 'Why the last attempt failed (or why it stopped).';
COMMENT ON COLUMN databases.deployments.attempts IS 'Provisioning attempts so far.';
COMMENT ON COLUMN databases.deployments.next_attempt_at IS 'When the deployer job (databases.deploy) tries (again); while an attempt is claimed, the end of its lease.';
COMMENT ON COLUMN databases.deployments.claimed_at IS 'When the deployer job began the current attempt (provisioning, committed); its next run does the remote work and clears it. NULL otherwise.';
COMMENT ON COLUMN databases.deployments.requested_by IS 'Who asked for it.';
COMMENT ON COLUMN databases.deployments.created_at IS 'When it was requested.';
COMMENT ON COLUMN databases.deployments.updated_at IS 'Last change.';
COMMENT ON COLUMN databases.deployments.running_at IS 'When it reached running.';

CREATE TABLE databases.deployment_history (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment_id uuid NOT NULL REFERENCES databases.deployments (id),
    from_state    text,
    to_state      text NOT NULL,
    reason        text,
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deployment_history_idx ON databases.deployment_history (deployment_id, id);
COMMENT ON TABLE databases.deployment_history IS 'Every state change and failed attempt of a deployment, in order (api.get_deployment shows it).';
COMMENT ON COLUMN databases.deployment_history.id IS 'Order.';
COMMENT ON COLUMN databases.deployment_history.deployment_id IS 'The deployment.';
COMMENT ON COLUMN databases.deployment_history.from_state IS 'State before.';
COMMENT ON COLUMN databases.deployment_history.to_state IS 'State after (the same for a failed attempt that will be retried).';
COMMENT ON COLUMN databases.deployment_history.reason IS 'Why (the error of a failed attempt).';
COMMENT ON COLUMN databases.deployment_history.at IS 'When.';

SELECT pg_catalog.pg_extension_config_dump('databases.environments', '');
SELECT pg_catalog.pg_extension_config_dump('databases.servers', '');
SELECT pg_catalog.pg_extension_config_dump('databases.services', '');
SELECT pg_catalog.pg_extension_config_dump('databases.credentials', '');
SELECT pg_catalog.pg_extension_config_dump('databases.config', '');
SELECT pg_catalog.pg_extension_config_dump('databases.deployments', '');
SELECT pg_catalog.pg_extension_config_dump('databases.deployment_history', '');

-- source: sql/databases/20_c.sql
-- C: the target-server connection, SCRAM verifiers, the CSPRNG (src/databases/).

CREATE FUNCTION databases.remote_exec(host text, port integer, admin_user text, admin_password text,
                                      dbname text, statements text[], timeout_ms integer) RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_databases_remote_exec';
COMMENT ON FUNCTION databases.remote_exec(text, integer, text, text, text, text[], integer) IS 'Runs statements in order on one libpq connection to a target server (interruptible, timeout_ms for the whole conversation, remote notices discarded) and returns the first value of the last one; a remote error is raised with its SQLSTATE and the server''s message, never the password.';

CREATE FUNCTION databases.scram_secret(password text) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_scram_secret';
COMMENT ON FUNCTION databases.scram_secret(text) IS 'The SCRAM-SHA-256 verifier of a password (fresh salt): what the target server is given instead of the password.';

CREATE FUNCTION databases.random_token(nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_random_token';
COMMENT ON FUNCTION databases.random_token(integer) IS 'nbytes (1-256) from pg_strong_random() as unpadded base64url: generated passwords.';

CREATE FUNCTION databases.random_hex(nbytes integer) RETURNS text
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_databases_random_hex';
COMMENT ON FUNCTION databases.random_hex(integer) IS 'nbytes (1-256) from pg_strong_random() as lower-case hex: generated role and database name suffixes.';

-- source: sql/databases/30_catalogue_config.sql
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

CREATE FUNCTION databases.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'this call needs a signed-in user (the JWT sub claim)');
    END IF;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION databases.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

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

CREATE FUNCTION databases.set_config_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for((args ->> 'environment_id')::uuid, false);
    v_service uuid := (args ->> 'service_id')::uuid;
    s databases.services;
    v_key text := args ->> 'key';
    v_secret boolean := (args ->> 'is_secret')::boolean;
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
    id := databases.set_config_in_tx(e.id, v_service, v_key, args ->> 'value', v_secret);
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
COMMENT ON FUNCTION databases.set_config_apply(jsonb) IS 'Internal to api.set_config_variable() and api.set_config_secret(): checks ownership and reserved keys, sets the entry, audits config.set (without the value) and emits config.changed.';

CREATE FUNCTION api.set_config_variable(environment_id uuid, key text, value text, service_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('databases.set_config_variable',
        jsonb_build_object('environment_id', environment_id, 'service_id', service_id, 'key', key, 'value', value, 'is_secret', false),
        'databases.set_config_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.set_config_variable(uuid, text, text, uuid) IS 'Sets a config variable of your environment, or of one of its services when service_id is given (a service''s entry wins over the environment''s): {id, environment_id, service_id, key, kind}. POSTGRES_USER, POSTGRES_DB and POSTGRES_PASSWORD of a template service are the platform''s. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.set_config_secret(environment_id uuid, key text, value text, service_id uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    -- No idempotency record: its request hash would be a hash of the secret.
    RETURN databases.set_config_apply(
        jsonb_build_object('environment_id', environment_id, 'service_id', service_id, 'key', key, 'value', value, 'is_secret', true));
END
$$;
COMMENT ON FUNCTION api.set_config_secret(uuid, text, text, uuid) IS 'Sets a config secret (sealed with the platform''s master key; shown again only through api.reveal_config_secret()) of your environment or of one of its services. Setting it again with the same value is harmless.';

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

-- source: sql/databases/40_environments_servers.sql
-- Environments (users) and target servers (operators).

CREATE FUNCTION databases.environment_json(e databases.environments) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT jsonb_build_object('id', e.id, 'name', e.name, 'owner_id', e.owner_id, 'created_at', e.created_at,
                              'services', (SELECT count(*) FROM databases.services s
                                            WHERE s.environment_id = e.id AND s.status <> 'deleted'))
$$;
COMMENT ON FUNCTION databases.environment_json(databases.environments) IS 'An environment as the API shows it.';

CREATE FUNCTION databases.create_environment_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_user uuid := databases.require_user();
    v_name text := btrim(args ->> 'name');
    e databases.environments;
BEGIN
    IF v_name IS NULL OR v_name !~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$' THEN
        PERFORM pgcloud.raise('environment_name_invalid', format('%s is not a valid environment name', coalesce(left(args ->> 'name', 80), 'NULL')));
    END IF;
    BEGIN
        INSERT INTO databases.environments (id, owner_id, name) VALUES (gen_random_uuid(), v_user, v_name)
        RETURNING * INTO e;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('environment_exists', format('you already have an environment named %s', v_name));
    END;
    PERFORM pgcloud.audit('environment.create', 'environment', e.id::text, 'ok', jsonb_build_object('name', e.name));
    PERFORM pgcloud.emit('environment.created', 'environment', e.id::text,
        jsonb_build_object('environment_id', e.id, 'owner_id', e.owner_id, 'name', e.name));
    RETURN databases.environment_json(e);
END
$$;
COMMENT ON FUNCTION databases.create_environment_apply(jsonb) IS 'Internal to api.create_environment(): creates it for the calling user, audits environment.create, emits environment.created.';

CREATE FUNCTION api.create_environment(name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('databases.create_environment', jsonb_build_object('name', name),
                              'databases.create_environment_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.create_environment(text) IS 'Creates an environment you own (name: 1-63 letters, digits, spaces, dots, dashes, underscores; unique among yours): {id, name, owner_id, created_at, services}. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.list_environments() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := databases.require_user();
    RETURN coalesce((SELECT jsonb_agg(databases.environment_json(e) ORDER BY e.created_at, e.id)
                       FROM databases.environments e WHERE e.owner_id = v_user), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_environments() IS 'Your environments: [{id, name, owner_id, created_at, services}].';

CREATE FUNCTION api.get_environment(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    RETURN databases.environment_json(databases.environment_for(get_environment.id, true));
END
$$;
COMMENT ON FUNCTION api.get_environment(uuid) IS 'One of your environments (admins: any); another user''s is environment_not_found.';

CREATE FUNCTION databases.server_admin_password(s databases.servers) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT convert_from(pgcloud.unseal(s.admin_password_sealed, 'databases.server/' || s.id), 'UTF8') $$;
COMMENT ON FUNCTION databases.server_admin_password(databases.servers) IS 'Internal: the server''s administrator password, unsealed for one conversation with it.';

-- Connects as the administrator and returns {version_num, privileged}.
CREATE FUNCTION databases.probe_server(host text, port integer, admin_user text, admin_password text, dbname text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r text;
BEGIN
    r := databases.remote_exec(host, port, admin_user, admin_password, dbname,
        ARRAY[$q$SELECT pg_catalog.json_build_object('version_num', pg_catalog.current_setting('server_version_num')::int,
                  'privileged', r.rolsuper OR (r.rolcreaterole AND r.rolcreatedb))
                FROM pg_catalog.pg_roles r WHERE r.rolname = current_user$q$],
        pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    RETURN r::jsonb;
END
$$;
COMMENT ON FUNCTION databases.probe_server(text, integer, text, text, text) IS 'Internal: connects to a server as its administrator; {version_num, privileged (superuser, or CREATEROLE and CREATEDB)}. Errors propagate.';

CREATE FUNCTION databases.register_server_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid := gen_random_uuid();
    v_name text := args ->> 'name';
    v_host text := args ->> 'host';
    v_port integer := (args ->> 'port')::integer;
    v_user text := args ->> 'admin_user';
    v_private text := nullif(args ->> 'private_host', '');
    probe jsonb;
    err text;
    s databases.servers;
BEGIN
    IF v_name IS NULL OR v_name !~ '^[a-z][a-z0-9-]{0,62}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'name must be 1-63 lower-case letters, digits and dashes, starting with a letter');
    END IF;
    IF v_host IS NULL OR v_host !~ '^[^\s[:cntrl:]]{1,255}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'host must be 1-255 characters without spaces or control characters');
    END IF;
    IF v_private IS NOT NULL AND v_private !~ '^[^\s[:cntrl:]/@:]{1,255}$' THEN
        PERFORM pgcloud.raise('database_server_invalid', 'private_host must be a host name or address');
    END IF;
    IF v_port IS NULL OR v_port NOT BETWEEN 1 AND 65535 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'port must be between 1 and 65535');
    END IF;
    IF v_user IS NULL OR length(v_user) NOT BETWEEN 1 AND 63 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'admin_user must be 1-63 characters');
    END IF;
    IF args ->> 'admin_password' IS NULL OR length(args ->> 'admin_password') NOT BETWEEN 1 AND 1024 THEN
        PERFORM pgcloud.raise('database_server_invalid', 'admin_password must be 1-1024 characters');
    END IF;
    IF EXISTS (SELECT 1 FROM databases.servers x WHERE x.name = v_name) THEN
        PERFORM pgcloud.raise('database_server_exists', format('a server named %s is registered', v_name));
    END IF;
    BEGIN
        probe := databases.probe_server(v_host, v_port, v_user, args ->> 'admin_password', 'postgres');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        PERFORM pgcloud.raise('database_server_unreachable', pgcloud.sanitize(err));
    END;
    IF NOT (probe ->> 'privileged')::boolean THEN
        PERFORM pgcloud.raise('database_server_invalid', format('role %s is neither a superuser nor has CREATEROLE and CREATEDB', v_user));
    END IF;
    BEGIN
        INSERT INTO databases.servers (id, name, host, port, private_host, admin_user, admin_password_sealed,
                                       major_version, server_version_num, registered_by)
        VALUES (v_id, v_name, v_host, v_port, v_private, v_user,
                pgcloud.seal(convert_to(args ->> 'admin_password', 'UTF8'), 'databases.server/' || v_id),
                (probe ->> 'version_num')::int / 10000, (probe ->> 'version_num')::int, pgcloud.user_id())
        RETURNING * INTO s;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('database_server_exists', format('a server named %s is registered', v_name));
    END;
    PERFORM pgcloud.audit('database_server.register', 'database_server', s.id::text, 'ok',
        jsonb_build_object('name', s.name, 'host', s.host, 'port', s.port, 'private_host', s.private_host,
                           'admin_user', s.admin_user, 'major_version', s.major_version));
    PERFORM pgcloud.emit('database_server.registered', 'database_server', s.id::text,
        jsonb_build_object('server_id', s.id, 'name', s.name, 'major_version', s.major_version));
    RETURN jsonb_build_object('id', s.id, 'name', s.name, 'major_version', s.major_version,
                              'server_version_num', s.server_version_num);
END
$$;
COMMENT ON FUNCTION databases.register_server_apply(jsonb) IS 'Internal to api.admin_register_database_server(): validates, connects as the administrator (reachable, privileged, version), stores the password sealed, audits database_server.register (without the password), emits database_server.registered.';

CREATE FUNCTION api.admin_register_database_server(name text, host text, port integer, admin_user text,
                                                   admin_password text, private_host text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('databases.admin_register_database_server',
        jsonb_build_object('name', name, 'host', host, 'port', port, 'admin_user', admin_user,
                           'admin_password', admin_password, 'private_host', private_host),
        'databases.register_server_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_register_database_server(text, text, integer, text, text, text) IS 'Operators: registers a target PostgreSQL server (admin_user: a superuser, or a role with CREATEROLE and CREATEDB). The server is checked reachable and its major version recorded; the password is stored sealed. private_host is what customers'' URIs name (default: host). Returns {id, name, major_version, server_version_num}.';

CREATE FUNCTION api.admin_list_database_servers() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce((
        SELECT jsonb_agg(jsonb_build_object('id', s.id, 'name', s.name, 'host', s.host, 'port', s.port,
                                            'private_host', s.private_host, 'admin_user', s.admin_user,
                                            'major_version', s.major_version, 'status', s.status,
                                            'services', (SELECT count(*) FROM databases.services x
                                                          WHERE x.server_id = s.id AND x.status <> 'deleted'),
                                            'running_deployments', (SELECT count(*) FROM databases.deployments d
                                                                      JOIN databases.services x ON x.id = d.service_id
                                                                     WHERE x.server_id = s.id AND d.status = 'running'),
                                            'created_at', s.created_at, 'checked_at', s.checked_at)
                         ORDER BY s.name)
          FROM databases.servers s), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.admin_list_database_servers() IS 'Operators: the target servers with their load: [{id, name, host, port, private_host, admin_user, major_version, status, services, running_deployments, created_at, checked_at}] (never the password).';

-- source: sql/databases/50_services.sql
-- Database services from the postgres template: one transaction for the row, credentials, config and first deployment.

CREATE FUNCTION databases.service_json(s databases.services) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT jsonb_build_object(
        'id', s.id, 'environment_id', s.environment_id, 'name', s.name, 'slug', s.slug,
        'template_id', s.template_id, 'server_id', s.server_id, 'engine', s.engine, 'version', s.version,
        'host', (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
        'port', s.port, 'visibility', s.visibility, 'database', s.database_name,
        'user', (SELECT c.username FROM databases.credentials c WHERE c.service_id = s.id AND c.status = 'active'),
        'status', s.status, 'created_at', s.created_at, 'delete_after', s.delete_after, 'deleted_at', s.deleted_at,
        'latest_deployment', (SELECT jsonb_build_object('id', d.id, 'number', d.number, 'status', d.status)
                                FROM databases.deployments d WHERE d.service_id = s.id ORDER BY d.number DESC LIMIT 1))
$$;
COMMENT ON FUNCTION databases.service_json(databases.services) IS 'A service as the API shows it (never a password).';

CREATE FUNCTION databases.connection_uri(s databases.services, username text, password text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, databases
AS $$
    SELECT format('postgresql://%s:%s@%s:%s/%s', username, password,
                  (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
                  s.port, s.database_name)
$$;
COMMENT ON FUNCTION databases.connection_uri(databases.services, text, text) IS 'postgresql://user:password@private-host:port/database (generated names and base64url passwords need no escaping).';

-- The URI a create or rotate shows once travels beside the idempotency
-- record, never in it: the handler leaves it here and the api function takes it.
CREATE FUNCTION databases.stash_once(value text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog
AS $$ SELECT set_config('pgcloud_databases.shown_once', coalesce(value, ''), false); $$;
COMMENT ON FUNCTION databases.stash_once(text) IS 'Internal: keeps a value to be shown once (a connection URI) for the api function of the same call; never stored in a table. Rolled back with the transaction.';

CREATE FUNCTION databases.take_once() RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog
AS $$
DECLARE
    v text := nullif(current_setting('pgcloud_databases.shown_once', true), '');
BEGIN
    PERFORM set_config('pgcloud_databases.shown_once', '', false);
    RETURN v;
END
$$;
COMMENT ON FUNCTION databases.take_once() IS 'Internal: takes (and clears) the value databases.stash_once() kept in this call; NULL on an idempotent replay.';

CREATE FUNCTION databases.slug(name text) RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN x ~ '^[a-z]' THEN x ELSE 'db_' || x END
      FROM (SELECT left(btrim(regexp_replace(lower(name), '[^a-z0-9]+', '_', 'g'), '_'), 36) AS x) t
$$;
COMMENT ON FUNCTION databases.slug(text) IS 'A service name made into an identifier stem: lower case, runs of other characters as _, at most 36 characters (39 with the db_ prefix a leading digit gets).';

CREATE FUNCTION databases.new_deployment(service_id uuid) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid := gen_random_uuid();
BEGIN
    INSERT INTO databases.deployments (id, service_id, number, status, next_attempt_at, requested_by)
    VALUES (v_id, service_id,
            coalesce((SELECT max(d.number) FROM databases.deployments d WHERE d.service_id = new_deployment.service_id), 0) + 1,
            'pending', now(), pgcloud.user_id());
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state) VALUES (v_id, NULL, 'pending');
    PERFORM pgcloud.emit('deployment.state_changed', 'database_service', service_id::text,
        jsonb_build_object('deployment_id', v_id, 'service_id', service_id, 'from', NULL, 'to', 'pending'));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION databases.new_deployment(uuid) IS 'Internal: a pending deployment of a service (next number), its history row and deployment.state_changed; wakes the deployer at commit.';

CREATE FUNCTION databases.create_service_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for((args ->> 'environment_id')::uuid, false);
    v_name text := btrim(args ->> 'name');
    tpl jsonb := databases.template(args ->> 'template_id');
    srv databases.servers;
    s databases.services;
    v_slug text;
    v_db text;
    v_user text := 'u' || databases.random_hex(8);
    v_password text := databases.random_token(32);
    v_cred uuid := gen_random_uuid();
    v_deployment uuid;
    v_status text;
BEGIN
    IF tpl IS NULL THEN
        PERFORM pgcloud.raise('database_template_not_found', format('no template %s', coalesce(left(args ->> 'template_id', 80), 'NULL')),
                              'api.list_database_templates() lists them.');
    END IF;
    IF v_name IS NULL OR v_name !~ '^[A-Za-z][A-Za-z0-9 ._-]{0,62}$' THEN
        PERFORM pgcloud.raise('database_service_name_invalid', format('%s is not a valid service name', coalesce(left(args ->> 'name', 80), 'NULL')));
    END IF;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = (args ->> 'server_id')::uuid AND x.status = 'active';
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('database_server_not_found', format('no active server %s', coalesce(args ->> 'server_id', 'NULL')));
    END IF;
    IF (SELECT count(*) FROM databases.services x WHERE x.environment_id = e.id AND x.status <> 'deleted')
       >= pgcloud.policy('databases.max_services_per_environment', NULL::int) THEN
        PERFORM pgcloud.raise('database_service_limit', format('environment %s is full', e.id));
    END IF;
    v_slug := databases.slug(v_name);
    v_db := v_slug || '_' || databases.random_hex(4);
    BEGIN
        INSERT INTO databases.services (id, environment_id, owner_id, name, slug, template_id, server_id, engine, version,
                                        port, visibility, database_name, owner_role)
        VALUES (gen_random_uuid(), e.id, e.owner_id, v_name, v_slug, tpl ->> 'id', srv.id, tpl ->> 'engine',
                srv.major_version, srv.port, 'private', v_db, v_db || '_owner')
        RETURNING * INTO s;
    EXCEPTION WHEN unique_violation THEN
        PERFORM pgcloud.raise('database_service_exists', format('environment %s has a service named %s', e.id, v_name));
    END;
    INSERT INTO databases.credentials (id, service_id, username, password_sealed, status)
    VALUES (v_cred, s.id, v_user, pgcloud.seal(convert_to(v_password, 'UTF8'), 'databases.credential/' || v_cred), 'active');
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_USER', v_user, false);
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_DB', v_db, false);
    PERFORM databases.set_config_in_tx(e.id, s.id, 'POSTGRES_PASSWORD', v_password, true);
    IF (args ->> 'deploy_now')::boolean THEN
        v_deployment := databases.new_deployment(s.id);
    END IF;
    PERFORM pgcloud.audit('service.create_database', 'database_service', s.id::text, 'ok',
        jsonb_build_object('environment_id', e.id, 'name', s.name, 'template_id', s.template_id, 'server_id', srv.id,
                           'database', v_db, 'user', v_user, 'deployment_id', v_deployment));
    PERFORM pgcloud.emit('service.created', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'environment_id', e.id, 'owner_id', e.owner_id, 'name', s.name,
                           'template_id', s.template_id, 'server_id', srv.id, 'engine', s.engine, 'version', s.version,
                           'visibility', s.visibility, 'deployment_id', v_deployment));
    IF v_deployment IS NOT NULL AND pgcloud.policy('databases.inline_provisioning', NULL::boolean) THEN
        v_status := databases.provision(v_deployment);
    END IF;
    PERFORM databases.stash_once(databases.connection_uri(s, v_user, v_password));
    RETURN jsonb_build_object('service', databases.service_json(s), 'deployment_id', v_deployment,
                              'deployment_status', (SELECT d.status FROM databases.deployments d WHERE d.id = v_deployment));
END
$$;
COMMENT ON FUNCTION databases.create_service_apply(jsonb) IS 'Internal to api.create_database_service(): in one transaction the service row, credentials from the CSPRNG (password sealed), config POSTGRES_USER, POSTGRES_DB (variables) and POSTGRES_PASSWORD (secret), the first deployment when deploy_now, the audit row service.create_database and service.created; then provisions inline (policy databases.inline_provisioning). The URI is handed beside the result, never stored.';

CREATE FUNCTION api.create_database_service(environment_id uuid, name text, template_id text, server_id uuid,
                                            deploy_now boolean) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM pgcloud.authorize('user');
    PERFORM databases.stash_once(NULL);
    r := pgcloud.idempotent('databases.create_database_service',
        jsonb_build_object('environment_id', environment_id, 'name', name, 'template_id', template_id,
                           'server_id', server_id, 'deploy_now', coalesce(deploy_now, false)),
        'databases.create_service_apply(jsonb)');
    RETURN r || jsonb_build_object('connection_uri', databases.take_once());
END
$$;
COMMENT ON FUNCTION api.create_database_service(uuid, text, text, uuid, boolean) IS 'Creates a managed PostgreSQL database from a template (postgres) in your environment on a registered server: {service, deployment_id, deployment_status, connection_uri}. Credentials are generated; the URI postgresql://user:password@host:port/db is returned this once (a retry with the same X-Idempotency-Key returns the same service and deployment with connection_uri null; api.get_database_connection() shows it again). With deploy_now the database exists on the server when the call returns (deployment_status running), or the deployer keeps trying (api.get_deployment()). Unknown template, another user''s environment, an unknown server or a denied caller: an error and nothing written.';

CREATE FUNCTION api.get_service(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    RETURN databases.service_json(databases.service_for(get_service.id, true));
END
$$;
COMMENT ON FUNCTION api.get_service(uuid) IS 'One of your database services (admins: any): {id, environment_id, name, slug, template_id, server_id, engine, version, host, port, visibility, database, user, status, created_at, delete_after, deleted_at, latest_deployment}. Never a password.';

CREATE FUNCTION api.list_services(environment_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    e databases.environments := databases.environment_for(list_services.environment_id, true);
BEGIN
    RETURN coalesce((SELECT jsonb_agg(databases.service_json(s) ORDER BY s.created_at, s.id)
                       FROM databases.services s WHERE s.environment_id = e.id AND s.status <> 'deleted'), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_services(uuid) IS 'The services of one of your environments (admins: any) that are not deleted, oldest first.';

CREATE FUNCTION api.get_database_connection(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for(get_database_connection.service_id, false);
    c databases.credentials;
    pw text;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    SELECT * INTO c FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active';
    pw := convert_from(pgcloud.unseal(c.password_sealed, 'databases.credential/' || c.id), 'UTF8');
    PERFORM pgcloud.audit('service.reveal_connection', 'database_service', s.id::text, 'ok',
        jsonb_build_object('user', c.username));
    RETURN jsonb_build_object('host', (SELECT coalesce(v.private_host, v.host) FROM databases.servers v WHERE v.id = s.server_id),
                              'port', s.port, 'user', c.username, 'database', s.database_name,
                              'connection_uri', databases.connection_uri(s, c.username, pw));
END
$$;
COMMENT ON FUNCTION api.get_database_connection(uuid) IS 'How to connect to your database service: {host (the server''s private host), port, user, database, connection_uri (with the password)}. Owner only (not administrators); every call is audited as service.reveal_connection.';

-- source: sql/databases/60_deployments.sql
-- Deployments: the state machine and the provisioning that really happens on the target server.

CREATE FUNCTION databases.set_deployment_state(deployment_id uuid, to_state text, why text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF d.status = to_state THEN
        RETURN;
    END IF;
    UPDATE databases.deployments x
       SET status = to_state, reason = coalesce(why, x.reason), updated_at = now(),
           running_at = CASE WHEN to_state = 'running' THEN now() ELSE x.running_at END,
           next_attempt_at = CASE WHEN to_state IN ('pending', 'provisioning') THEN x.next_attempt_at END
     WHERE x.id = deployment_id;
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state, reason)
    VALUES (deployment_id, d.status, to_state, why);
    PERFORM pgcloud.emit('deployment.state_changed', 'database_service', d.service_id::text,
        jsonb_build_object('deployment_id', d.id, 'service_id', d.service_id, 'from', d.status, 'to', to_state,
                           'reason', why));
END
$$;
COMMENT ON FUNCTION databases.set_deployment_state(uuid, text, text) IS 'Internal: moves a deployment to a state (the transition trigger guards it), with a history row and deployment.state_changed.';

-- The remote transaction that makes the owner role, hands it the database and
-- (re)creates the service's active login role: all or nothing, after the database exists.
CREATE FUNCTION databases.roles_sql(s databases.services, username text, verifier text, conn_limit integer) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $body$
    SELECT format($f$DO $pgcloud$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %1$L) THEN
        CREATE ROLE %1$I NOLOGIN;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE pg_catalog.format('GRANT %%I TO %%I', %1$L, current_user);
    END IF;
    ALTER DATABASE %2$I OWNER TO %1$I;
    ALTER DATABASE %2$I CONNECTION LIMIT %5$s;
    REVOKE ALL ON DATABASE %2$I FROM PUBLIC;
    GRANT CONNECT, TEMPORARY ON DATABASE %2$I TO %1$I;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %3$L) THEN
        CREATE ROLE %3$I LOGIN PASSWORD %4$L CONNECTION LIMIT %5$s IN ROLE %1$I;
    ELSE
        ALTER ROLE %3$I LOGIN PASSWORD %4$L CONNECTION LIMIT %5$s;
        GRANT %1$I TO %3$I;
    END IF;
    ALTER ROLE %3$I SET role = %1$L;
    COMMENT ON DATABASE %2$I IS %6$L;
END
$pgcloud$$f$, s.owner_role, s.database_name, username, verifier, conn_limit,
               format('pgcloud databases service %s', s.id))
$body$;
COMMENT ON FUNCTION databases.roles_sql(databases.services, text, text, integer) IS 'Internal: the DO block (one remote transaction) that creates the owner role, gives it the database (CONNECT revoked from PUBLIC), and creates or re-keys a login role in it with a SCRAM verifier; idempotent.';

-- A provisioning attempt in two steps, so that "provisioning" is visible while
-- the server is being talked to: begin_attempt (the deployer job commits it in
-- one run and does the remote work in the next; next_attempt_at is the lease and the backoff)
-- and finish_attempt. Inline (create, deploy) both run in the caller's transaction.
CREATE FUNCTION databases.begin_attempt(deployment_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
    s databases.services;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF NOT FOUND OR d.status NOT IN ('pending', 'provisioning') THEN
        RETURN false;
    END IF;
    SELECT * INTO s FROM databases.services x WHERE x.id = d.service_id;
    IF s.status <> 'active' THEN
        PERFORM databases.set_deployment_state(d.id, 'stopped', 'the service is being deleted');
        RETURN false;
    END IF;
    PERFORM databases.set_deployment_state(d.id, 'provisioning');
    UPDATE databases.deployments x
       SET attempts = x.attempts + 1, updated_at = now(),
           next_attempt_at = now() + greatest(databases.retry_delay(x.attempts + 1),
                                              make_interval(secs => 2 * pgcloud.policy('databases.remote_timeout_ms', NULL::int) / 1000.0))
     WHERE x.id = d.id;
    RETURN true;
END
$$;
COMMENT ON FUNCTION databases.begin_attempt(uuid) IS 'Internal: starts a provisioning attempt (provisioning, attempts + 1, next_attempt_at = the retry time, which is also the lease should the attempt never finish). False when there is nothing to do.';

CREATE FUNCTION databases.finish_attempt(deployment_id uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
    s databases.services;
    srv databases.servers;
    c databases.credentials;
    admin_pw text;
    pw text;
    timeout_ms int := pgcloud.policy('databases.remote_timeout_ms', NULL::int);
    conn_limit int := pgcloud.policy('databases.connection_limit', NULL::int);
    max_attempts int := pgcloud.policy('databases.deploy_max_attempts', NULL::int);
    err text;
BEGIN
    SELECT * INTO d FROM databases.deployments x WHERE x.id = deployment_id FOR UPDATE;
    IF NOT FOUND OR d.status <> 'provisioning' THEN
        RETURN d.status;
    END IF;
    SELECT * INTO s FROM databases.services x WHERE x.id = d.service_id;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    SELECT * INTO c FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active';
    BEGIN
        admin_pw := databases.server_admin_password(srv);
        pw := convert_from(pgcloud.unseal(c.password_sealed, 'databases.credential/' || c.id), 'UTF8');
        -- 1. The database (CREATE DATABASE cannot run in a transaction block).
        IF databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
               ARRAY[format('SELECT count(*) FROM pg_catalog.pg_database WHERE datname = %L', s.database_name)],
               timeout_ms) = '0' THEN
            PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
                ARRAY[format('CREATE DATABASE %I CONNECTION LIMIT %s', s.database_name, conn_limit)], timeout_ms);
        END IF;
        -- 2. Owner role, ownership, CONNECT, login role: one remote transaction.
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, admin_pw, srv.maintenance_db,
            ARRAY[databases.roles_sql(s, c.username, databases.scram_secret(pw), conn_limit)], timeout_ms);
        -- 3. The generated credentials really log in.
        IF pgcloud.policy('databases.verify_login', NULL::boolean) THEN
            PERFORM databases.remote_exec(srv.host, srv.port, c.username, pw, s.database_name,
                ARRAY['SELECT 1'], timeout_ms);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        err := left(pgcloud.sanitize(err), 500);
    END;
    IF err IS NULL THEN
        PERFORM databases.set_deployment_state(d.id, 'running');
        UPDATE databases.deployments x SET reason = NULL WHERE x.id = d.id;
        UPDATE databases.servers x SET checked_at = now() WHERE x.id = srv.id;
        -- A newer running deployment supersedes the older ones.
        PERFORM databases.set_deployment_state(o.id, 'stopped', format('superseded by deployment %s', d.number))
           FROM databases.deployments o
          WHERE o.service_id = s.id AND o.id <> d.id AND o.status IN ('running', 'pending', 'provisioning') AND o.number < d.number;
        PERFORM pgcloud.audit('deployment.running', 'deployment', d.id::text, 'ok',
            jsonb_build_object('service_id', s.id, 'attempts', d.attempts));
        RETURN 'running';
    END IF;
    IF d.attempts >= max_attempts THEN
        PERFORM databases.set_deployment_state(d.id, 'failed', err);
        PERFORM pgcloud.audit('deployment.failed', 'deployment', d.id::text, 'failed',
            jsonb_build_object('service_id', s.id, 'attempts', d.attempts, 'reason', err));
        RETURN 'failed';
    END IF;
    UPDATE databases.deployments x
       SET reason = err, updated_at = now(), next_attempt_at = now() + databases.retry_delay(d.attempts)
     WHERE x.id = d.id;
    INSERT INTO databases.deployment_history (deployment_id, from_state, to_state, reason)
    VALUES (d.id, 'provisioning', 'provisioning', err);
    RETURN 'provisioning';
END
$$;
COMMENT ON FUNCTION databases.finish_attempt(uuid) IS 'Internal: the remote work of a provisioning attempt, as the server''s administrator: the database (CONNECTION LIMIT from policy) if missing, then in one remote transaction the owner role, ownership, CONNECT revoked from PUBLIC, and the login role with the SCRAM verifier of the generated password; then a login with the generated credentials. Idempotent. Success: running (older deployments stopped). Failure: the reason recorded and a retry scheduled with backoff, or failed after databases.deploy_max_attempts.';

CREATE FUNCTION databases.provision(deployment_id uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    IF NOT databases.begin_attempt(deployment_id) THEN
        RETURN (SELECT d.status FROM databases.deployments d WHERE d.id = deployment_id);
    END IF;
    RETURN databases.finish_attempt(deployment_id);
END
$$;
COMMENT ON FUNCTION databases.provision(uuid) IS 'One whole provisioning attempt in the caller''s transaction (create and deploy do it inline); returns the deployment''s status afterwards.';

CREATE FUNCTION databases.deploy_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for((args ->> 'service_id')::uuid, false, true);
    v_deployment uuid;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    v_deployment := databases.new_deployment(s.id);
    PERFORM pgcloud.audit('service.deploy', 'database_service', s.id::text, 'ok', jsonb_build_object('deployment_id', v_deployment));
    IF pgcloud.policy('databases.inline_provisioning', NULL::boolean) THEN
        PERFORM databases.provision(v_deployment);
    END IF;
    RETURN jsonb_build_object('service_id', s.id, 'deployment_id', v_deployment,
                              'deployment_status', (SELECT d.status FROM databases.deployments d WHERE d.id = v_deployment));
END
$$;
COMMENT ON FUNCTION databases.deploy_apply(jsonb) IS 'Internal to api.deploy_database_service(): a new deployment of an active service, audited as service.deploy, provisioned inline when policy says so.';

CREATE FUNCTION api.deploy_database_service(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('databases.deploy_database_service', jsonb_build_object('service_id', service_id),
                              'databases.deploy_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.deploy_database_service(uuid) IS 'Deploys your service (again): a new deployment that provisions whatever is missing on the server (the data stays); {service_id, deployment_id, deployment_status}. A service created without deploy_now gets its database this way. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.get_deployment(id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    d databases.deployments;
BEGIN
    PERFORM pgcloud.authorize('user');
    SELECT * INTO d FROM databases.deployments x WHERE x.id = get_deployment.id;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('deployment_not_found', format('no deployment %s', get_deployment.id));
    END IF;
    BEGIN
        PERFORM databases.service_for(d.service_id, true);
    EXCEPTION WHEN SQLSTATE 'PGRST' THEN
        PERFORM pgcloud.raise('deployment_not_found', format('no deployment %s', get_deployment.id));
    END;
    RETURN jsonb_build_object('id', d.id, 'service_id', d.service_id, 'number', d.number, 'status', d.status,
                              'reason', d.reason, 'attempts', d.attempts, 'next_attempt_at', d.next_attempt_at,
                              'created_at', d.created_at, 'updated_at', d.updated_at, 'running_at', d.running_at,
                              'history', (SELECT jsonb_agg(jsonb_build_object('from', h.from_state, 'to', h.to_state,
                                                                              'reason', h.reason, 'at', h.at) ORDER BY h.id)
                                            FROM databases.deployment_history h WHERE h.deployment_id = d.id));
END
$$;
COMMENT ON FUNCTION api.get_deployment(uuid) IS 'A deployment of your service (admins: any): {id, service_id, number, status (pending, provisioning, running, failed, stopped, deleted), reason (why the last attempt failed), attempts, next_attempt_at, created_at, updated_at, running_at, history [{from, to, reason, at}]}.';

-- source: sql/databases/70_lifecycle.sql
-- Credential rotation, deletion, and the deployer job (databases.deploy, run by the scheduler).

CREATE FUNCTION databases.rotate_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for((args ->> 'service_id')::uuid, false, true);
    srv databases.servers;
    old databases.credentials;
    v_user text := 'u' || databases.random_hex(8);
    v_password text := databases.random_token(32);
    v_cred uuid := gen_random_uuid();
    v_until timestamptz := now() + make_interval(secs => pgcloud.policy('databases.rotation_grace_seconds', NULL::int));
    provisioned boolean;
    err text;
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    SELECT * INTO old FROM databases.credentials x WHERE x.service_id = s.id AND x.status = 'active' FOR UPDATE;
    provisioned := EXISTS (SELECT 1 FROM databases.deployments d WHERE d.service_id = s.id AND d.status = 'running');
    UPDATE databases.credentials x SET status = 'retiring', remove_after = v_until WHERE x.id = old.id;
    INSERT INTO databases.credentials (id, service_id, username, password_sealed, status)
    VALUES (v_cred, s.id, v_user, pgcloud.seal(convert_to(v_password, 'UTF8'), 'databases.credential/' || v_cred), 'active');
    PERFORM databases.set_config_in_tx(s.environment_id, s.id, 'POSTGRES_USER', v_user, false);
    PERFORM databases.set_config_in_tx(s.environment_id, s.id, 'POSTGRES_PASSWORD', v_password, true);
    -- The new login works when the call returns: made now on the server (the old one stays until v_until).
    IF provisioned THEN
        BEGIN
            PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
                srv.maintenance_db,
                ARRAY[databases.roles_sql(s, v_user, databases.scram_secret(v_password),
                                          pgcloud.policy('databases.connection_limit', NULL::int))],
                pgcloud.policy('databases.remote_timeout_ms', NULL::int));
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            PERFORM pgcloud.raise('database_server_unreachable', left(pgcloud.sanitize(err), 500),
                                  'Nothing was changed; try again.');
        END;
    END IF;
    PERFORM pgcloud.audit('service.rotate_credentials', 'database_service', s.id::text, 'ok',
        jsonb_build_object('user', v_user, 'previous_user', old.username, 'previous_valid_until', v_until));
    PERFORM pgcloud.emit('database.credentials_rotated', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'user', v_user, 'previous_user', old.username,
                           'previous_valid_until', v_until));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    PERFORM databases.stash_once(databases.connection_uri(s, v_user, v_password));
    RETURN jsonb_build_object('service_id', s.id, 'user', v_user, 'previous_user', old.username,
                              'previous_valid_until', v_until, 'applied', provisioned);
END
$$;
COMMENT ON FUNCTION databases.rotate_apply(jsonb) IS 'Internal to api.rotate_database_credentials(): a new login role and password (CSPRNG, sealed; config POSTGRES_USER and POSTGRES_PASSWORD updated) made on the server before the call returns; the previous one retires at now + databases.rotation_grace_seconds. Audited as service.rotate_credentials, announced as database.credentials_rotated. If the server cannot be reached nothing changes.';

CREATE FUNCTION api.rotate_database_credentials(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    r jsonb;
BEGIN
    PERFORM pgcloud.authorize('user');
    PERFORM databases.stash_once(NULL);
    r := pgcloud.idempotent('databases.rotate_database_credentials', jsonb_build_object('service_id', service_id),
                            'databases.rotate_apply(jsonb)');
    RETURN r || jsonb_build_object('connection_uri', databases.take_once());
END
$$;
COMMENT ON FUNCTION api.rotate_database_credentials(uuid) IS 'New credentials for your service: {service_id, user, previous_user, previous_valid_until, applied, connection_uri}. The new login works when the call returns; the previous one keeps working until previous_valid_until (policy databases.rotation_grace_seconds) and is then dropped. The URI is shown this once (a replay with the same X-Idempotency-Key gives connection_uri null).';

CREATE FUNCTION databases.delete_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services := databases.service_for((args ->> 'service_id')::uuid, true, true);
    v_after timestamptz := now() + make_interval(secs => pgcloud.policy('databases.delete_grace_seconds', NULL::int));
BEGIN
    IF s.status <> 'active' THEN
        PERFORM pgcloud.raise('database_service_not_active', format('service %s is %s', s.id, s.status));
    END IF;
    UPDATE databases.services x SET status = 'deleting', delete_after = v_after WHERE x.id = s.id;
    PERFORM databases.set_deployment_state(d.id, 'stopped', 'the service is being deleted')
       FROM databases.deployments d WHERE d.service_id = s.id AND d.status IN ('pending', 'provisioning', 'running');
    PERFORM pgcloud.audit('service.delete', 'database_service', s.id::text, 'ok',
        jsonb_build_object('name', s.name, 'database', s.database_name, 'delete_after', v_after));
    PERFORM pgcloud.emit('service.deletion_scheduled', 'database_service', s.id::text,
        jsonb_build_object('service_id', s.id, 'environment_id', s.environment_id, 'delete_after', v_after));
    PERFORM pgcloud.wake_scheduler();   -- the deployer job runs at commit
    RETURN jsonb_build_object('service_id', s.id, 'status', 'deleting', 'delete_after', v_after);
END
$$;
COMMENT ON FUNCTION databases.delete_apply(jsonb) IS 'Internal to api.delete_service(): marks the service deleting (its deployments stopped) and schedules the drop after databases.delete_grace_seconds; audited as service.delete, announced as service.deletion_scheduled.';

CREATE FUNCTION api.delete_service(service_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('databases.delete_service', jsonb_build_object('service_id', service_id),
                              'databases.delete_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.delete_service(uuid) IS 'Deletes your database service (admins: any): {service_id, status: deleting, delete_after}. After the grace period (policy databases.delete_grace_seconds) the deployer job drops the database and its roles on the server and the service becomes deleted (service.deleted). Safe to retry with X-Idempotency-Key.';

-- Drops a service's database and roles on its server (idempotent).
CREATE FUNCTION databases.drop_remote(s databases.services) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $body$
DECLARE
    srv databases.servers;
    roles text := '';
    r record;
BEGIN
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    FOR r IN SELECT c.username FROM databases.credentials c WHERE c.service_id = s.id LOOP
        roles := roles || format('    DROP ROLE IF EXISTS %I;%s', r.username, chr(10));
    END LOOP;
    PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
        srv.maintenance_db,
        ARRAY[format('DROP DATABASE IF EXISTS %I WITH (FORCE)', s.database_name),
              format($f$DO $pgcloud$
BEGIN
%s    DROP ROLE IF EXISTS %I;
END
$pgcloud$$f$, roles, s.owner_role)],
        pgcloud.policy('databases.remote_timeout_ms', NULL::int));
END
$body$;
COMMENT ON FUNCTION databases.drop_remote(databases.services) IS 'Internal: DROP DATABASE ... WITH (FORCE) and the drop of its login and owner roles on the server; idempotent.';

-- Drops one retired login role (its sessions ended, anything it owns handed to the owner role).
CREATE FUNCTION databases.retire_remote(s databases.services, username text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $body$
DECLARE
    srv databases.servers;
    stmt text;
BEGIN
    SELECT * INTO srv FROM databases.servers x WHERE x.id = s.server_id;
    stmt := format($f$DO $pgcloud$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %1$L) THEN
        PERFORM pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a WHERE a.usename = %1$L;
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %2$L) THEN
            REASSIGN OWNED BY %1$I TO %2$I;
        END IF;
        DROP OWNED BY %1$I;
        DROP ROLE %1$I;
    END IF;
END
$pgcloud$$f$, username, s.owner_role);
    BEGIN
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
            s.database_name, ARRAY[stmt], pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    EXCEPTION WHEN invalid_catalog_name THEN
        -- The database was never made: the role can only be in the maintenance database's view.
        PERFORM databases.remote_exec(srv.host, srv.port, srv.admin_user, databases.server_admin_password(srv),
            srv.maintenance_db, ARRAY[stmt], pgcloud.policy('databases.remote_timeout_ms', NULL::int));
    END;
END
$body$;
COMMENT ON FUNCTION databases.retire_remote(databases.services, text) IS 'Internal: ends a retired login role''s sessions, reassigns what it owns to the owner role and drops it; idempotent.';

CREATE FUNCTION databases.retry_delay(attempt integer) RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT make_interval(secs => least(300, pgcloud.policy('databases.deploy_retry_base_seconds', NULL::int) * power(2, greatest(attempt, 1) - 1))) $$;
COMMENT ON FUNCTION databases.retry_delay(integer) IS 'Backoff before retry number attempt of the deployer job''s remote work.';

CREATE FUNCTION databases.remove_due() RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    s databases.services;
    c databases.credentials;
    err text;
BEGIN
    -- 1. A service whose deletion grace is over.
    SELECT * INTO s FROM databases.services x
     WHERE x.status = 'deleting' AND x.delete_after <= now()
     ORDER BY x.delete_after LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        BEGIN
            PERFORM databases.drop_remote(s);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            err := left(pgcloud.sanitize(err), 500);
        END;
        IF err IS NOT NULL THEN
            UPDATE databases.services x SET last_error = err, delete_after = now() + databases.retry_delay(2) WHERE x.id = s.id;
            PERFORM pgcloud.audit('service.delete_failed', 'database_service', s.id::text, 'failed', jsonb_build_object('reason', err));
            RETURN format('service %s: deletion failed, retried later', s.id);
        END IF;
        UPDATE databases.services x SET status = 'deleted', deleted_at = now(), last_error = NULL WHERE x.id = s.id;
        PERFORM databases.set_deployment_state(d.id, 'deleted', 'the service was deleted')
           FROM databases.deployments d WHERE d.service_id = s.id AND d.status <> 'deleted';
        UPDATE databases.credentials x SET status = 'removed', password_sealed = NULL, removed_at = now()
         WHERE x.service_id = s.id AND x.status <> 'removed';
        DELETE FROM databases.config x WHERE x.service_id = s.id;
        PERFORM pgcloud.audit('service.deleted', 'database_service', s.id::text, 'ok',
            jsonb_build_object('database', s.database_name, 'server_id', s.server_id));
        PERFORM pgcloud.emit('service.deleted', 'database_service', s.id::text,
            jsonb_build_object('service_id', s.id, 'environment_id', s.environment_id));
        RETURN format('service %s: deleted', s.id);
    END IF;
    -- 2. A retired credential whose grace is over.
    SELECT * INTO c FROM databases.credentials x
     WHERE x.status = 'retiring' AND x.remove_after <= now()
     ORDER BY x.remove_after LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        SELECT * INTO s FROM databases.services x WHERE x.id = c.service_id;
        IF s.status = 'active' THEN
            BEGIN
                PERFORM databases.retire_remote(s, c.username);
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                err := left(pgcloud.sanitize(err), 500);
            END;
        ELSE
            -- Deleting: the drop takes every role of the service; deleted: gone already.
            IF s.status = 'deleting' THEN
                UPDATE databases.credentials x SET remove_after = s.delete_after WHERE x.id = c.id;
                RETURN format('service %s: retired login left to the deletion', s.id);
            END IF;
        END IF;
        IF err IS NOT NULL THEN
            UPDATE databases.credentials x SET last_error = err, remove_after = now() + databases.retry_delay(2) WHERE x.id = c.id;
            RETURN format('service %s: removal of a retired login failed, retried later', s.id);
        END IF;
        UPDATE databases.credentials x SET status = 'removed', password_sealed = NULL, removed_at = now(), last_error = NULL
         WHERE x.id = c.id;
        PERFORM pgcloud.audit('service.credentials_removed', 'database_service', s.id::text, 'ok',
            jsonb_build_object('user', c.username));
        RETURN format('service %s: retired login removed', s.id);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION databases.remove_due() IS 'Internal to the deployer job: one due deletion (database and roles dropped on the server, service deleted, service.deleted) or one due removal of a retired login role; a description of what was done, NULL when nothing is due.';

-- The deployer job. The scheduler runs it every databases.deployer_interval_ms
-- and at once when a create, deploy, rotation or deletion commits (they call
-- pgcloud.wake_scheduler()), each run in its own transaction. A provisioning
-- attempt takes two runs, so that "provisioning" is committed (and visible)
-- before the server is talked to: one run begins it (begin_attempt,
-- claimed_at) and wakes the scheduler, the next does the remote work
-- (finish_attempt). A claim is continued only within its lease
-- (next_attempt_at); after that (the run died: kill -9, a timeout) the attempt
-- is begun again and counted, so the maximum attempts still bound it. A run
-- that did something wakes the scheduler again, so what is due drains at once.
-- The service's tables are locked without waiting first: a DROP EXTENSION (or
-- anything holding them exclusively) makes the job step aside instead of
-- deadlocking with it.
CREATE FUNCTION databases.deploy() RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, databases
AS $$
DECLARE
    v_id uuid;
    r text;
BEGIN
    BEGIN
        LOCK TABLE databases.environments, databases.servers, databases.services, databases.credentials,
                   databases.config, databases.deployments, databases.deployment_history,
                   databases.deployment_transitions IN ACCESS SHARE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 'busy: the service''s tables are locked; next run';
    END;
    -- 1. An attempt the previous run began (provisioning committed): the remote work.
    SELECT d.id INTO v_id FROM databases.deployments d
     WHERE d.status = 'provisioning' AND d.claimed_at IS NOT NULL AND d.next_attempt_at > now()
     ORDER BY d.claimed_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_id IS NOT NULL THEN
        UPDATE databases.deployments x SET claimed_at = NULL WHERE x.id = v_id;
        r := format('deployment %s: %s', v_id, databases.finish_attempt(v_id));
    ELSE
        -- 2. A deployment due for an attempt: begun here, continued by the next run.
        SELECT d.id INTO v_id FROM databases.deployments d
         WHERE d.status IN ('pending', 'provisioning') AND d.next_attempt_at <= now()
         ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF v_id IS NOT NULL THEN
            IF databases.begin_attempt(v_id) THEN
                UPDATE databases.deployments x SET claimed_at = clock_timestamp() WHERE x.id = v_id;
                r := format('deployment %s: provisioning begun', v_id);
            ELSE
                UPDATE databases.deployments x SET claimed_at = NULL WHERE x.id = v_id;
                r := format('deployment %s: not provisioned (service deleting)', v_id);
            END IF;
        ELSE
            -- 3. A due deletion or removal of a retired login.
            r := databases.remove_due();
        END IF;
    END IF;
    IF r IS NULL THEN
        RETURN 'idle';
    END IF;
    PERFORM pgcloud.wake_scheduler();   -- run again at once: the claimed attempt, or what else is due
    RETURN r;
END
$$;
COMMENT ON FUNCTION databases.deploy() IS 'The deployer job (databases.deploy), run by the scheduler every databases.deployer_interval_ms and when woken: one unit per run, each in its own transaction: the remote work of the attempt the previous run began (databases.finish_attempt), else the start of a due provisioning attempt (provisioning committed before the server is talked to; the scheduler is woken for the remote work), else a due deletion or removal of a retired login (databases.remove_due). Returns what it did, or idle (busy when the service''s tables are locked, e.g. by DROP EXTENSION).';

SELECT pgcloud.register_job('databases.deploy', 'databases.deploy()', 'databases.deployer_interval_ms', 'ms',
    'The databases deployer: provisioning attempts and their retries, deletions after the grace, removal of retired logins.',
    run_on_wake => true);

-- source: sql/databases/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION
    api.create_environment(text), api.list_environments(), api.get_environment(uuid),
    api.list_database_templates(),
    api.create_database_service(uuid, text, text, uuid, boolean), api.deploy_database_service(uuid),
    api.get_service(uuid), api.list_services(uuid), api.get_database_connection(uuid), api.get_deployment(uuid),
    api.rotate_database_credentials(uuid), api.delete_service(uuid),
    api.set_config_variable(uuid, text, text, uuid), api.set_config_secret(uuid, text, text, uuid),
    api.unset_config(uuid, text, uuid), api.list_config(uuid, uuid), api.reveal_config_secret(uuid, text, uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.admin_register_database_server(text, text, integer, text, text, text),
    api.admin_list_database_servers()
    TO pgcloud_admin;

SELECT pgcloud.service_end('databases');
