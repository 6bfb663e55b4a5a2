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
