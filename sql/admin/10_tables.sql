-- Read models, fed by events only.

CREATE TABLE admin.users (
    user_id         uuid PRIMARY KEY,
    email           text,
    posix_username  text,
    created_at      timestamptz,
    last_sign_in_at timestamptz,
    sign_ins        bigint NOT NULL DEFAULT 0,
    balance         bigint,
    currency        text,
    last_entry_id   bigint,
    standing        text,
    can_allocate    boolean,
    standing_as_of  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.users IS 'Read model of users: user.created, user.signed_in, ledger.entry_posted (balance), account.standing_changed (standing).';
COMMENT ON COLUMN admin.users.user_id IS 'The user.';
COMMENT ON COLUMN admin.users.email IS 'E-mail address.';
COMMENT ON COLUMN admin.users.posix_username IS 'POSIX user name.';
COMMENT ON COLUMN admin.users.created_at IS 'When the account was created.';
COMMENT ON COLUMN admin.users.last_sign_in_at IS 'Last sign-in.';
COMMENT ON COLUMN admin.users.sign_ins IS 'Sign-ins seen.';
COMMENT ON COLUMN admin.users.balance IS 'Balance after the newest ledger entry seen (minor units).';
COMMENT ON COLUMN admin.users.currency IS 'Account currency.';
COMMENT ON COLUMN admin.users.last_entry_id IS 'The newest ledger entry seen (older events do not overwrite the balance).';
COMMENT ON COLUMN admin.users.standing IS 'Billing standing (e.g. good, low, exhausted).';
COMMENT ON COLUMN admin.users.can_allocate IS 'Whether billing lets the user allocate.';
COMMENT ON COLUMN admin.users.standing_as_of IS 'When billing decided the standing (older events do not overwrite it).';
COMMENT ON COLUMN admin.users.updated_at IS 'When an event last changed the row.';

CREATE TABLE admin.allocations (
    allocation_id  uuid PRIMARY KEY,
    user_id        uuid,
    sku            text,
    region         text,
    node_id        uuid,
    node_hostname  text,
    gpu_count      integer,
    price_per_hour bigint,
    currency       text,
    state          text NOT NULL CHECK (state IN ('requested', 'provisioning', 'active', 'releasing', 'released', 'failed')),
    reason         text,
    requested_at   timestamptz,
    started_at     timestamptz,
    ended_at       timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_allocations_state_idx ON admin.allocations (state);
CREATE INDEX admin_allocations_user_idx ON admin.allocations (user_id);
COMMENT ON TABLE admin.allocations IS 'Read model of allocations from allocation.* events; the state only moves forward.';
COMMENT ON COLUMN admin.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN admin.allocations.user_id IS 'Its user.';
COMMENT ON COLUMN admin.allocations.sku IS 'SKU.';
COMMENT ON COLUMN admin.allocations.region IS 'Region.';
COMMENT ON COLUMN admin.allocations.node_id IS 'Node it runs on.';
COMMENT ON COLUMN admin.allocations.node_hostname IS 'Node host name.';
COMMENT ON COLUMN admin.allocations.gpu_count IS 'GPUs.';
COMMENT ON COLUMN admin.allocations.price_per_hour IS 'Price per hour (minor units).';
COMMENT ON COLUMN admin.allocations.currency IS 'Currency.';
COMMENT ON COLUMN admin.allocations.state IS 'requested, provisioning, active, releasing, released or failed.';
COMMENT ON COLUMN admin.allocations.reason IS 'Why it is being released or ended.';
COMMENT ON COLUMN admin.allocations.requested_at IS 'Requested.';
COMMENT ON COLUMN admin.allocations.started_at IS 'Became active.';
COMMENT ON COLUMN admin.allocations.ended_at IS 'Released or failed.';
COMMENT ON COLUMN admin.allocations.updated_at IS 'Last event applied.';

CREATE TABLE admin.nodes (
    node_id        uuid PRIMARY KEY,
    hostname       text,
    maas_system_id text,
    sku            text,
    region         text,
    gpu_model      text,
    slot_count     integer,
    state          text,
    reason         text,
    maas_status    text,
    registered_at  timestamptz,
    updated_at     timestamptz
);
COMMENT ON TABLE admin.nodes IS 'Read model of nodes from node.registered and node.state_changed (the newest updated_at wins).';
COMMENT ON COLUMN admin.nodes.node_id IS 'The node.';
COMMENT ON COLUMN admin.nodes.hostname IS 'Host name.';
COMMENT ON COLUMN admin.nodes.maas_system_id IS 'MAAS system id.';
COMMENT ON COLUMN admin.nodes.sku IS 'SKU.';
COMMENT ON COLUMN admin.nodes.region IS 'Region.';
COMMENT ON COLUMN admin.nodes.gpu_model IS 'GPU model.';
COMMENT ON COLUMN admin.nodes.slot_count IS 'Slots.';
COMMENT ON COLUMN admin.nodes.state IS 'Inventory state.';
COMMENT ON COLUMN admin.nodes.reason IS 'Why it is in that state.';
COMMENT ON COLUMN admin.nodes.maas_status IS 'MAAS status name.';
COMMENT ON COLUMN admin.nodes.registered_at IS 'Registered.';
COMMENT ON COLUMN admin.nodes.updated_at IS 'Inventory''s last update.';

CREATE TABLE admin.payments (
    payment_id      uuid PRIMARY KEY,
    user_id         uuid,
    amount          bigint,
    currency        text,
    amount_refunded bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.payments IS 'Read model of payments (payment.succeeded) and what was refunded of them (payment.refunded).';
COMMENT ON COLUMN admin.payments.payment_id IS 'Payment id (what api.admin_refund() takes).';
COMMENT ON COLUMN admin.payments.user_id IS 'Payer.';
COMMENT ON COLUMN admin.payments.amount IS 'Amount (minor units).';
COMMENT ON COLUMN admin.payments.currency IS 'Currency.';
COMMENT ON COLUMN admin.payments.amount_refunded IS 'Refunded so far.';
COMMENT ON COLUMN admin.payments.created_at IS 'When admin learnt of it.';

CREATE TABLE admin.refunds (
    refund_id  uuid PRIMARY KEY,
    payment_id uuid,
    user_id    uuid,
    amount     bigint,
    currency   text,
    reason     text,
    status     text NOT NULL CHECK (status IN ('requested', 'refunded', 'failed')),
    failure    text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE admin.refunds IS 'Read model of refunds: refund.requested, payment.refunded, refund.failed.';
COMMENT ON COLUMN admin.refunds.refund_id IS 'Refund id.';
COMMENT ON COLUMN admin.refunds.payment_id IS 'Payment refunded.';
COMMENT ON COLUMN admin.refunds.user_id IS 'Payer.';
COMMENT ON COLUMN admin.refunds.amount IS 'Amount.';
COMMENT ON COLUMN admin.refunds.currency IS 'Currency.';
COMMENT ON COLUMN admin.refunds.reason IS 'Why (from the operator).';
COMMENT ON COLUMN admin.refunds.status IS 'requested, refunded or failed.';
COMMENT ON COLUMN admin.refunds.failure IS 'Why it failed.';
COMMENT ON COLUMN admin.refunds.updated_at IS 'Last event applied.';

CREATE TABLE admin.audit (
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    database       text NOT NULL,
    audit_id       bigint NOT NULL,
    at             timestamptz NOT NULL,
    actor          uuid,
    role           text,
    action         text NOT NULL,
    target_type    text,
    target_id      text,
    result         text,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    correlation_id text,
    event_id       uuid NOT NULL,
    PRIMARY KEY (database, audit_id)
);
CREATE INDEX admin_audit_at_idx ON admin.audit (at, database, audit_id);
CREATE INDEX admin_audit_actor_idx ON admin.audit (actor, at) WHERE actor IS NOT NULL;
CREATE INDEX admin_audit_action_idx ON admin.audit (action, at);
CREATE TRIGGER admin_audit_immutable BEFORE UPDATE OR DELETE ON admin.audit
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin.audit
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE admin.audit IS 'The audit of every service and database, from audit.recorded events; append-only like pgcloud.audit_logs.';
COMMENT ON COLUMN admin.audit.seq IS 'Arrival number here: the pagination cursor of api.admin_audit().';
COMMENT ON COLUMN admin.audit.database IS 'Database the entry was written in.';
COMMENT ON COLUMN admin.audit.audit_id IS 'Its id in that database''s pgcloud.audit_logs.';
COMMENT ON COLUMN admin.audit.at IS 'When it was written.';
COMMENT ON COLUMN admin.audit.actor IS 'Acting user or service account, NULL for operators and anonymous callers.';
COMMENT ON COLUMN admin.audit.role IS 'Role the actor used.';
COMMENT ON COLUMN admin.audit.action IS 'Dotted action name.';
COMMENT ON COLUMN admin.audit.target_type IS 'Kind of object acted on.';
COMMENT ON COLUMN admin.audit.target_id IS 'Object acted on.';
COMMENT ON COLUMN admin.audit.result IS 'ok, denied, rejected or failed.';
COMMENT ON COLUMN admin.audit.details IS 'Further facts (scrubbed at the source).';
COMMENT ON COLUMN admin.audit.correlation_id IS 'Correlation id of the request.';
COMMENT ON COLUMN admin.audit.event_id IS 'The audit.recorded event that brought it.';

SELECT pg_catalog.pg_extension_config_dump('admin.users', '');
SELECT pg_catalog.pg_extension_config_dump('admin.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('admin.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('admin.payments', '');
SELECT pg_catalog.pg_extension_config_dump('admin.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('admin.audit', '');
