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
