-- MAAS statuses, machines, and the allocations deployed on them.

CREATE TABLE maas.statuses (
    status_code integer PRIMARY KEY,
    status_name text NOT NULL UNIQUE,
    node_state  text CHECK (node_state IN ('commissioning', 'ready', 'failed', 'broken')),
    busy_for    text CHECK (busy_for IN ('commission', 'deploy', 'release')),
    meaning     text NOT NULL
);
COMMENT ON TABLE maas.statuses IS 'MAAS 2.0 machine statuses and what they mean here: the node state inventory applies (maas.machine_status_changed carries it as node_state) and the goal the status is the work in progress of.';
COMMENT ON COLUMN maas.statuses.status_code IS 'MAAS status number.';
COMMENT ON COLUMN maas.statuses.status_name IS 'MAAS status_name.';
COMMENT ON COLUMN maas.statuses.node_state IS 'Node state it maps onto (NULL: the node''s lifecycle state does not change; deployments are allocation states).';
COMMENT ON COLUMN maas.statuses.busy_for IS 'The goal whose operation this status shows running (seen once, a later Ready / Deployed means done).';
COMMENT ON COLUMN maas.statuses.meaning IS 'What it means for pgcloud.';
INSERT INTO maas.statuses (status_code, status_name, node_state, busy_for, meaning) VALUES
    (0, 'New', NULL, NULL, 'known to MAAS, not commissioned: commissioned on registration'),
    (1, 'Commissioning', 'commissioning', 'commission', 'commissioning runs'),
    (2, 'Failed commissioning', 'failed', NULL, 'commissioning failed: node failed'),
    (3, 'Missing', 'broken', NULL, 'MAAS lost the machine: node broken'),
    (4, 'Ready', 'ready', NULL, 'commissioned and free: a commissioning or a release is done; deploy allocates it first'),
    (5, 'Reserved', NULL, NULL, 'reserved in MAAS: cannot be deployed'),
    (6, 'Deployed', NULL, NULL, 'deployed: its deploying allocations become active'),
    (7, 'Retired', 'broken', NULL, 'retired in MAAS: node broken'),
    (8, 'Broken', 'broken', NULL, 'marked broken: node broken; a deployment on it fails'),
    (9, 'Deploying', NULL, 'deploy', 'deployment runs'),
    (10, 'Allocated', NULL, NULL, 'allocated to us: deploy next (or release)'),
    (11, 'Failed deployment', NULL, NULL, 'the deployment failed: its allocations fail, the machine is released'),
    (12, 'Releasing', NULL, 'release', 'release runs'),
    (13, 'Releasing failed', 'broken', NULL, 'the release failed: machine reported stuck, node broken'),
    (14, 'Disk erasing', NULL, 'release', 'release with disk erasing runs'),
    (15, 'Failed disk erasing', 'broken', NULL, 'disk erasing failed: machine reported stuck, node broken'),
    (16, 'Rescue mode', NULL, NULL, 'in rescue mode: cannot be deployed'),
    (17, 'Entering rescue mode', NULL, NULL, 'entering rescue mode: cannot be deployed'),
    (18, 'Failed to enter rescue mode', 'broken', NULL, 'rescue failed: node broken'),
    (19, 'Exiting rescue mode', NULL, NULL, 'leaving rescue mode'),
    (20, 'Failed to exit rescue mode', 'broken', NULL, 'rescue failed: node broken'),
    (21, 'Testing', NULL, NULL, 'hardware tests run'),
    (22, 'Failed testing', 'broken', NULL, 'hardware tests failed: node broken');

CREATE TABLE maas.machines (
    system_id      text PRIMARY KEY CHECK (system_id ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
    node_id        uuid,
    hostname       text,
    goal           text NOT NULL DEFAULT 'none' CHECK (goal IN ('none', 'commission', 'deploy', 'release')),
    goal_seq       bigint NOT NULL DEFAULT 0,
    goal_since     timestamptz,
    goal_series    text,
    goal_image     text,
    seen_busy      boolean NOT NULL DEFAULT false,
    status         integer,
    status_name    text,
    status_message text,
    distro_series  text,
    power_state    text,
    ip_addresses   jsonb NOT NULL DEFAULT '[]',
    owner          text,
    observed_at    timestamptz,
    op_intent      uuid,
    op_kind        text CHECK (op_kind IN ('read', 'allocate', 'deploy', 'release', 'commission')),
    op_sent_at     timestamptz,
    last_action    text,
    last_action_at timestamptz,
    last_error     text,
    last_error_at  timestamptz,
    stuck          boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((op_intent IS NULL) = (op_kind IS NULL)),
    CHECK ((goal = 'none') OR goal_since IS NOT NULL)
);
CREATE INDEX machines_open_idx ON maas.machines (observed_at NULLS FIRST) WHERE goal <> 'none';
COMMENT ON TABLE maas.machines IS 'MAAS machines pgcloud drives: the goal (what they should become), the last status MAAS reported, and the one request in flight. maas.step() issues the next request from the two.';
COMMENT ON COLUMN maas.machines.system_id IS 'MAAS system id.';
COMMENT ON COLUMN maas.machines.node_id IS 'Inventory''s node id.';
COMMENT ON COLUMN maas.machines.hostname IS 'Node hostname.';
COMMENT ON COLUMN maas.machines.goal IS 'commission (after registration), deploy (allocations wait for it), release (its last allocation ended) or none.';
COMMENT ON COLUMN maas.machines.goal_seq IS 'Counts goal changes.';
COMMENT ON COLUMN maas.machines.goal_since IS 'When the goal was set (timeouts count from here).';
COMMENT ON COLUMN maas.machines.goal_series IS 'distro_series of the deployment (the current or last one).';
COMMENT ON COLUMN maas.machines.goal_image IS 'Image code of that deployment.';
COMMENT ON COLUMN maas.machines.seen_busy IS 'Whether the goal''s operation has been seen running (Commissioning, Deploying, Releasing, Disk erasing) since the goal was set.';
COMMENT ON COLUMN maas.machines.status IS 'Last MAAS status number.';
COMMENT ON COLUMN maas.machines.status_name IS 'Last MAAS status_name.';
COMMENT ON COLUMN maas.machines.status_message IS 'Last MAAS status_message.';
COMMENT ON COLUMN maas.machines.distro_series IS 'distro_series MAAS reports.';
COMMENT ON COLUMN maas.machines.power_state IS 'power_state MAAS reports.';
COMMENT ON COLUMN maas.machines.ip_addresses IS 'ip_addresses MAAS reports.';
COMMENT ON COLUMN maas.machines.owner IS 'MAAS user owning the machine.';
COMMENT ON COLUMN maas.machines.observed_at IS 'When the status was read (NULL: to be read).';
COMMENT ON COLUMN maas.machines.op_intent IS 'The HTTP intent in flight for the machine, if any.';
COMMENT ON COLUMN maas.machines.op_kind IS 'What it does: read, allocate, deploy, release or commission.';
COMMENT ON COLUMN maas.machines.op_sent_at IS 'When it was written.';
COMMENT ON COLUMN maas.machines.last_action IS 'Last state-changing request for the current goal (not repeated within a poll interval).';
COMMENT ON COLUMN maas.machines.last_action_at IS 'When it was written.';
COMMENT ON COLUMN maas.machines.last_error IS 'Last error from MAAS or the executor (scrubbed).';
COMMENT ON COLUMN maas.machines.last_error_at IS 'When it happened.';
COMMENT ON COLUMN maas.machines.stuck IS 'Quarantined: a release did not finish (timeout or Releasing failed); its node is broken whatever MAAS reports, its allocations stay releasing until an operator decides (api.admin_end_stuck_release); cleared only by a completed commission.';
COMMENT ON COLUMN maas.machines.created_at IS 'When pgcloud first drove the machine.';
COMMENT ON COLUMN maas.machines.updated_at IS 'When it last changed.';

CREATE TABLE maas.allocation_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE maas.allocation_transitions IS 'Allowed changes of maas.allocations.state (from_state NULL: initial state).';
COMMENT ON COLUMN maas.allocation_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN maas.allocation_transitions.to_state IS 'State after.';
INSERT INTO maas.allocation_transitions (from_state, to_state) VALUES
    (NULL, 'deploying'), (NULL, 'failed'),
    ('deploying', 'deployed'), ('deploying', 'failed'), ('deploying', 'releasing'),
    ('deployed', 'releasing'),
    ('releasing', 'released');

CREATE TABLE maas.allocations (
    allocation_id   uuid PRIMARY KEY,
    system_id       text NOT NULL REFERENCES maas.machines (system_id),
    node_id         uuid,
    user_id         uuid,
    image           text,
    distro_series   text NOT NULL,
    ssh_public_keys text[] NOT NULL DEFAULT '{}',
    state           text NOT NULL CHECK (state IN ('deploying', 'deployed', 'releasing', 'released', 'failed')),
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    ssh_principal   text CHECK (ssh_principal ~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
);
CREATE INDEX allocations_machine_live_idx ON maas.allocations (system_id)
    WHERE state IN ('deploying', 'deployed', 'releasing');
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON maas.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'maas.allocation_transitions');
COMMENT ON TABLE maas.allocations IS 'Allocations deployed on machines (from deploy.requested / release.requested): deploying -> deployed -> releasing -> released, or failed.';
COMMENT ON COLUMN maas.allocations.allocation_id IS 'Provisioning''s allocation id.';
COMMENT ON COLUMN maas.allocations.system_id IS 'The machine.';
COMMENT ON COLUMN maas.allocations.node_id IS 'Inventory''s node id.';
COMMENT ON COLUMN maas.allocations.user_id IS 'The allocation''s owner.';
COMMENT ON COLUMN maas.allocations.image IS 'Image code.';
COMMENT ON COLUMN maas.allocations.distro_series IS 'distro_series it needs.';
COMMENT ON COLUMN maas.allocations.ssh_public_keys IS 'Public keys for the deploy user data.';
COMMENT ON COLUMN maas.allocations.ssh_principal IS 'The SSH certificate principal of the allocation on its node: pgcloud-alloc-<id of the first allocation of the same user in the same deployment of the machine> (allocations of one user joining a deployment share it). The deploy writes it into the node''s AuthorizedPrincipalsFile of the user''s account; releases signs certificates for it alone, so a certificate works only on the nodes of its allocation.';
COMMENT ON COLUMN maas.allocations.state IS 'deploying, deployed, releasing, released or failed.';
COMMENT ON COLUMN maas.allocations.reason IS 'Why it failed or how it was released.';
COMMENT ON COLUMN maas.allocations.created_at IS 'When the deploy request arrived.';
COMMENT ON COLUMN maas.allocations.updated_at IS 'When it last changed.';

CREATE TABLE maas.users (
    user_id        uuid PRIMARY KEY,
    posix_username text NOT NULL CHECK (posix_username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    uid            integer NOT NULL CHECK (uid >= 1000),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE maas.users IS 'Read model of users (from user.created): the POSIX account a deployment creates on the node for the allocation''s owner.';
COMMENT ON COLUMN maas.users.user_id IS 'The user.';
COMMENT ON COLUMN maas.users.posix_username IS 'Login name of the account on nodes (never an image''s default user name: auth reserves those).';
COMMENT ON COLUMN maas.users.uid IS 'POSIX uid of the account.';
COMMENT ON COLUMN maas.users.updated_at IS 'When it was last written.';

SELECT pg_catalog.pg_extension_config_dump('maas.users', '');
SELECT pg_catalog.pg_extension_config_dump('maas.machines', '');
SELECT pg_catalog.pg_extension_config_dump('maas.allocations', '');
