-- Read model (users, allocations), manifests, instances, members, history.

CREATE TABLE appruntime.users (
    user_id        uuid PRIMARY KEY,
    posix_username text CHECK (posix_username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE appruntime.users IS 'Read model of users (user.created): who may be a member, and the POSIX login of owners.';
COMMENT ON COLUMN appruntime.users.user_id IS 'The user.';
COMMENT ON COLUMN appruntime.users.posix_username IS 'POSIX login on nodes.';
COMMENT ON COLUMN appruntime.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE appruntime.allocations (
    allocation_id uuid PRIMARY KEY,
    user_id       uuid,
    hostname      text,
    address       text,
    state         text NOT NULL CHECK (state IN ('active', 'ended')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE appruntime.allocations IS 'Read model of allocations (allocation.activated / released / failed).';
COMMENT ON COLUMN appruntime.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN appruntime.allocations.user_id IS 'Its owner.';
COMMENT ON COLUMN appruntime.allocations.hostname IS 'Hostname of the node.';
COMMENT ON COLUMN appruntime.allocations.address IS 'Address the agent connects to (first of ip_addresses, else the hostname).';
COMMENT ON COLUMN appruntime.allocations.state IS 'active or ended.';
COMMENT ON COLUMN appruntime.allocations.updated_at IS 'When the last event about it was applied.';

CREATE TABLE appruntime.manifests (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id      uuid,
    name          text NOT NULL CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$'),
    version       text NOT NULL CHECK (version ~ '^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$'),
    start_command text NOT NULL CHECK (length(start_command) BETWEEN 1 AND 4096),
    stop_command  text CHECK (length(stop_command) BETWEEN 1 AND 4096),
    ports         integer[] NOT NULL CHECK (cardinality(ports) BETWEEN 1 AND 16 AND 0 < ALL (ports) AND 65536 > ALL (ports)),
    resources     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(resources) = 'object'),
    env_schema    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env_schema) = 'object'),
    document      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (owner_id, name, version)
);
COMMENT ON TABLE appruntime.manifests IS 'Application manifests: the catalogue (owner_id NULL, published by administrators) and users'' own.';
COMMENT ON COLUMN appruntime.manifests.id IS 'Manifest id.';
COMMENT ON COLUMN appruntime.manifests.owner_id IS 'The user who published it; NULL for the catalogue.';
COMMENT ON COLUMN appruntime.manifests.name IS 'Name (lower-case, digits, dashes).';
COMMENT ON COLUMN appruntime.manifests.version IS 'Version label.';
COMMENT ON COLUMN appruntime.manifests.start_command IS 'Shell command that starts the app on the node (runs in the foreground).';
COMMENT ON COLUMN appruntime.manifests.stop_command IS 'Optional shell command run before the process is stopped.';
COMMENT ON COLUMN appruntime.manifests.ports IS 'TCP ports the app serves on the node; the first answers when it is running.';
COMMENT ON COLUMN appruntime.manifests.resources IS 'Resources it needs (e.g. {"gpus": 1, "memory_mb": 2048}); informational.';
COMMENT ON COLUMN appruntime.manifests.env_schema IS 'Environment schema: {NAME: {type, required, default}}.';
COMMENT ON COLUMN appruntime.manifests.document IS 'The manifest as published.';
COMMENT ON COLUMN appruntime.manifests.created_at IS 'When it was published.';

CREATE TABLE appruntime.instance_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE appruntime.instance_transitions IS 'Allowed changes of appruntime.instances.state (from_state NULL: initial state).';
COMMENT ON COLUMN appruntime.instance_transitions.from_state IS 'State before, NULL for a new instance.';
COMMENT ON COLUMN appruntime.instance_transitions.to_state IS 'State after.';
INSERT INTO appruntime.instance_transitions (from_state, to_state) VALUES
    (NULL, 'launch'),
    ('launch', 'starting'), ('launch', 'stopping'), ('launch', 'failed'), ('launch', 'released'),
    ('starting', 'running'), ('starting', 'stopping'), ('starting', 'failed'), ('starting', 'released'),
    ('running', 'stopping'), ('running', 'failed'), ('running', 'released'),
    ('stopping', 'stopped'), ('stopping', 'failed'), ('stopping', 'released'),
    ('stopped', 'released'), ('failed', 'released');

CREATE TABLE appruntime.instances (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    allocation_id uuid NOT NULL,
    manifest_id   uuid NOT NULL REFERENCES appruntime.manifests (id),
    owner_id      uuid NOT NULL,
    env           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(env) = 'object'),
    state         text NOT NULL CHECK (state IN ('launch', 'starting', 'running', 'stopping', 'stopped', 'failed', 'released')),
    detail        text,
    unit          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    state_since   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_alloc_idx ON appruntime.instances (allocation_id);
CREATE INDEX instances_work_idx ON appruntime.instances (state) WHERE state IN ('launch', 'starting', 'stopping');
CREATE TRIGGER instances_state BEFORE INSERT OR UPDATE OF state ON appruntime.instances
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'appruntime.instance_transitions');
COMMENT ON TABLE appruntime.instances IS 'Application instances on allocations and their lifecycle.';
COMMENT ON COLUMN appruntime.instances.id IS 'Instance id.';
COMMENT ON COLUMN appruntime.instances.allocation_id IS 'The allocation (node) it runs on.';
COMMENT ON COLUMN appruntime.instances.manifest_id IS 'The manifest it runs.';
COMMENT ON COLUMN appruntime.instances.owner_id IS 'Who launched it.';
COMMENT ON COLUMN appruntime.instances.env IS 'Environment, validated against the manifest''s schema (defaults filled in).';
COMMENT ON COLUMN appruntime.instances.state IS 'launch, starting, running, stopping, stopped, failed or released.';
COMMENT ON COLUMN appruntime.instances.detail IS 'Last word from the agent (e.g. why it failed).';
COMMENT ON COLUMN appruntime.instances.unit IS 'Name of the systemd unit / supervised process on the node.';
COMMENT ON COLUMN appruntime.instances.created_at IS 'When it was launched.';
COMMENT ON COLUMN appruntime.instances.state_since IS 'When it entered its state.';

CREATE TABLE appruntime.members (
    instance_id uuid NOT NULL REFERENCES appruntime.instances (id),
    user_id     uuid NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id)
);
CREATE INDEX members_user_idx ON appruntime.members (user_id);
COMMENT ON TABLE appruntime.members IS 'Members of an instance: owner, editor (may stop it, open terminals), viewer (may look).';
COMMENT ON COLUMN appruntime.members.instance_id IS 'The instance.';
COMMENT ON COLUMN appruntime.members.user_id IS 'The member.';
COMMENT ON COLUMN appruntime.members.role IS 'owner, editor or viewer.';
COMMENT ON COLUMN appruntime.members.added_at IS 'When the role was given.';

CREATE TABLE appruntime.instance_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES appruntime.instances (id),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CHECK (kind ~ '^[a-z_]+$'),
    actor       uuid,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX instance_events_inst_idx ON appruntime.instance_events (instance_id, id);
CREATE TRIGGER instance_events_immutable BEFORE UPDATE OR DELETE ON appruntime.instance_events
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER instance_events_no_truncate BEFORE TRUNCATE ON appruntime.instance_events
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE appruntime.instance_events IS 'Immutable history of each instance: launched, state changes, members, stop requests.';
COMMENT ON COLUMN appruntime.instance_events.id IS 'Order of events.';
COMMENT ON COLUMN appruntime.instance_events.instance_id IS 'The instance.';
COMMENT ON COLUMN appruntime.instance_events.at IS 'When.';
COMMENT ON COLUMN appruntime.instance_events.kind IS 'launched, starting, running, stop_requested, stopped, failed, released, member_added, member_removed.';
COMMENT ON COLUMN appruntime.instance_events.actor IS 'Who (user), NULL for the platform.';
COMMENT ON COLUMN appruntime.instance_events.details IS 'Details.';

SELECT pg_catalog.pg_extension_config_dump('appruntime.users', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.manifests', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.instances', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.members', '');
SELECT pg_catalog.pg_extension_config_dump('appruntime.instance_events', '');
