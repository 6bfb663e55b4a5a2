-- Accounts, the ledger, the allocation read model, usage records, standing.

CREATE TABLE billing.accounts (
    account_id                 uuid PRIMARY KEY,
    currency                   text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    standing                   text CHECK (standing IN ('good', 'low', 'exhausted')),
    can_allocate               boolean,
    email                      text,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    standing_changed_at        timestamptz,
    force_release_requested_at timestamptz
);
COMMENT ON TABLE billing.accounts IS 'One account per user (account_id = the user id), opened on user.created or on its first posting. Its row is the posting lock (billing.ledger_post locks it, never rewrites it); the balance is carried by the ledger entries (see billing.balances).';
COMMENT ON COLUMN billing.accounts.account_id IS 'The user (JWT sub).';
COMMENT ON COLUMN billing.accounts.currency IS 'The account''s one currency (policy billing.currency when opened by user.created, else the first entry''s).';
COMMENT ON COLUMN billing.accounts.standing IS 'good (balance >= billing.low_balance_threshold), low (under it) or exhausted (<= 0), as last announced; NULL until first announced.';
COMMENT ON COLUMN billing.accounts.can_allocate IS 'Whether balance >= billing.min_balance_to_allocate, as last announced in account.standing_changed.';
COMMENT ON COLUMN billing.accounts.email IS 'E-mail address from user.created.';
COMMENT ON COLUMN billing.accounts.created_at IS 'When the account was opened.';
COMMENT ON COLUMN billing.accounts.standing_changed_at IS 'When standing or can_allocate last changed.';
COMMENT ON COLUMN billing.accounts.force_release_requested_at IS 'When billing.force_release_requested was last emitted for the account.';

CREATE SEQUENCE billing.ledger_entries_id_seq AS bigint;
COMMENT ON SEQUENCE billing.ledger_entries_id_seq IS 'Ledger entry ids, drawn by billing.ledger_post under the account''s lock (per account, id order is posting order).';

CREATE TABLE billing.ledger_entries (
    id            bigint NOT NULL,
    account_id    uuid NOT NULL,
    kind          text NOT NULL,
    amount        bigint NOT NULL CHECK (amount <> 0),
    currency      text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    balance_after bigint NOT NULL,
    cause_type    text NOT NULL,
    cause_id      text NOT NULL CHECK (length(cause_id) BETWEEN 1 AND 255),
    memo          text CHECK (length(memo) <= 500),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    CONSTRAINT ledger_entries_one_booking UNIQUE (kind, cause_id),
    CONSTRAINT ledger_entries_kind_sign CHECK (
        (kind = 'credit'           AND cause_type = 'payment'      AND amount > 0) OR
        (kind = 'usage_debit'      AND cause_type = 'usage_record' AND amount < 0) OR
        (kind = 'usage_correction' AND cause_type = 'usage_record' AND amount > 0) OR
        (kind = 'refund_debit'     AND cause_type = 'refund'       AND amount < 0) OR
        (kind = 'refund_reversal'  AND cause_type = 'refund'       AND amount > 0) OR
        (kind = 'adjustment'       AND cause_type = 'adjustment'))
);
CREATE INDEX ledger_entries_account_idx ON billing.ledger_entries (account_id, id);
ALTER SEQUENCE billing.ledger_entries_id_seq OWNED BY billing.ledger_entries.id;
COMMENT ON TABLE billing.ledger_entries IS 'The ledger: append-only (UPDATE, DELETE and TRUNCATE are rejected for every role); corrections are new entries. Each entry names its cause, booked at most once per kind, and carries the account''s balance after it (computed under the account''s lock by the billing.ledger_post trigger, whatever the INSERT said): an account''s balance is its newest entry''s balance_after.';
COMMENT ON COLUMN billing.ledger_entries.id IS 'Entry id, assigned under the account''s lock: within an account, id order is posting order.';
COMMENT ON COLUMN billing.ledger_entries.account_id IS 'The account (user id).';
COMMENT ON COLUMN billing.ledger_entries.kind IS 'credit (a payment), usage_debit, usage_correction (usage charged past an allocation''s end, given back), refund_debit, refund_reversal (a refund that failed at Stripe), adjustment (by an operator).';
COMMENT ON COLUMN billing.ledger_entries.amount IS 'Signed amount in minor units: credits positive, debits negative.';
COMMENT ON COLUMN billing.ledger_entries.currency IS 'Currency; always the account''s.';
COMMENT ON COLUMN billing.ledger_entries.balance_after IS 'The account''s balance after this entry (the previous entry''s plus amount).';
COMMENT ON COLUMN billing.ledger_entries.cause_type IS 'payment, usage_record, refund or adjustment.';
COMMENT ON COLUMN billing.ledger_entries.cause_id IS 'Id of the cause: the Stripe Checkout Session id of a payment, a usage record id, a refund id, an adjustment id. Unique per kind.';
COMMENT ON COLUMN billing.ledger_entries.memo IS 'A short note (an adjustment''s reason, a refund''s reason).';
COMMENT ON COLUMN billing.ledger_entries.created_at IS 'Time of the posting transaction.';

CREATE FUNCTION billing.ledger_post() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_billing_ledger_post';
COMMENT ON FUNCTION billing.ledger_post() IS 'Trigger (C): BEFORE INSERT on billing.ledger_entries. Locks the account''s row (opening the account on first use), reads its newest entry through the index under the latest snapshot, and sets the entry''s id (drawn under the lock) and balance_after (newest + amount); refuses an entry in another currency than its account''s.';

CREATE TRIGGER ledger_entries_post BEFORE INSERT ON billing.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION billing.ledger_post();
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON billing.ledger_entries
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON billing.ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();

CREATE VIEW billing.balances AS
    SELECT a.account_id, a.currency, coalesce(l.balance_after, 0) AS balance, l.id AS last_entry_id,
           a.standing, a.can_allocate
      FROM billing.accounts a
      LEFT JOIN LATERAL (SELECT e.id, e.balance_after FROM billing.ledger_entries e
                          WHERE e.account_id = a.account_id ORDER BY e.id DESC LIMIT 1) l ON true;
COMMENT ON VIEW billing.balances IS 'Each account''s balance: its newest entry''s balance_after (one index descent per account, at any ledger size).';
COMMENT ON COLUMN billing.balances.account_id IS 'The account.';
COMMENT ON COLUMN billing.balances.currency IS 'Its currency.';
COMMENT ON COLUMN billing.balances.balance IS 'Balance in minor units (0 before the first entry).';
COMMENT ON COLUMN billing.balances.last_entry_id IS 'The newest entry.';
COMMENT ON COLUMN billing.balances.standing IS 'Standing as last announced.';
COMMENT ON COLUMN billing.balances.can_allocate IS 'May allocate, as last announced.';

CREATE TABLE billing.allocations (
    allocation_id    uuid PRIMARY KEY,
    account_id       uuid,
    sku              text,
    node_hostname    text,
    price_per_hour   bigint CHECK (price_per_hour >= 0),
    currency         text CHECK (currency ~ '^[a-z]{3}$'),
    interval_seconds integer CHECK (interval_seconds > 0),
    started_at       timestamptz,
    ended_at         timestamptz,
    end_reason       text,
    next_interval    integer NOT NULL DEFAULT 0 CHECK (next_interval >= 0),
    charged_seconds  bigint NOT NULL DEFAULT 0,
    charged_amount   bigint NOT NULL DEFAULT 0,
    settled          boolean NOT NULL DEFAULT false,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (started_at IS NULL OR (account_id IS NOT NULL AND price_per_hour IS NOT NULL AND currency IS NOT NULL
                                  AND interval_seconds IS NOT NULL))
);
CREATE INDEX allocations_to_accrue_idx ON billing.allocations (account_id, allocation_id)
    WHERE started_at IS NOT NULL AND NOT settled;
CREATE INDEX allocations_account_idx ON billing.allocations (account_id);
COMMENT ON TABLE billing.allocations IS 'Read model of allocations (allocation.activated / released / failed) and the accrual cursor of each. An allocation never seen activated is never charged.';
COMMENT ON COLUMN billing.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN billing.allocations.account_id IS 'The user who pays for it.';
COMMENT ON COLUMN billing.allocations.sku IS 'The SKU allocated.';
COMMENT ON COLUMN billing.allocations.node_hostname IS 'The node it runs on.';
COMMENT ON COLUMN billing.allocations.price_per_hour IS 'Price in minor units per hour, from allocation.activated (the SKU''s price then).';
COMMENT ON COLUMN billing.allocations.currency IS 'Currency of the price.';
COMMENT ON COLUMN billing.allocations.interval_seconds IS 'Accrual interval, fixed at activation from billing.accrual_interval_seconds: interval k is [started_at + k*interval, started_at + (k+1)*interval).';
COMMENT ON COLUMN billing.allocations.started_at IS 'When it became active (NULL: never seen activated, never charged).';
COMMENT ON COLUMN billing.allocations.ended_at IS 'When it was released or failed.';
COMMENT ON COLUMN billing.allocations.end_reason IS 'released, or the failure reason.';
COMMENT ON COLUMN billing.allocations.next_interval IS 'First interval not yet charged.';
COMMENT ON COLUMN billing.allocations.charged_seconds IS 'Active seconds charged so far (after a correction: exactly the active time).';
COMMENT ON COLUMN billing.allocations.charged_amount IS 'Amount charged so far in minor units (sum of its usage records).';
COMMENT ON COLUMN billing.allocations.settled IS 'True once ended and charged exactly up to ended_at: nothing more will be charged.';
COMMENT ON COLUMN billing.allocations.last_error IS 'Why the last accrual of this allocation failed, if it did.';
COMMENT ON COLUMN billing.allocations.updated_at IS 'Last change.';

CREATE TABLE billing.usage_records (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    allocation_id  uuid NOT NULL,
    account_id     uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('interval', 'correction')),
    interval_no    integer CHECK (interval_no >= 0),
    period_start   timestamptz NOT NULL,
    period_end     timestamptz NOT NULL,
    seconds        bigint NOT NULL,
    price_per_hour bigint NOT NULL CHECK (price_per_hour >= 0),
    amount         bigint NOT NULL,
    currency       text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'interval' AND interval_no IS NOT NULL AND seconds > 0 AND amount >= 0 AND period_end > period_start)
        OR (kind = 'correction' AND interval_no IS NULL AND seconds < 0 AND amount <= 0))
);
CREATE UNIQUE INDEX usage_records_interval_once ON billing.usage_records (allocation_id, interval_no);
CREATE UNIQUE INDEX usage_records_one_correction ON billing.usage_records (allocation_id) WHERE kind = 'correction';
CREATE TRIGGER usage_records_immutable BEFORE UPDATE OR DELETE ON billing.usage_records
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER usage_records_no_truncate BEFORE TRUNCATE ON billing.usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE billing.usage_records IS 'Usage, append-only: one record per charged interval of an allocation (unique per interval number, so an interval is charged once however often the job runs) and at most one correction when an allocation''s end arrived after intervals past it were charged.';
COMMENT ON COLUMN billing.usage_records.id IS 'Record id (the cause_id of its ledger entry).';
COMMENT ON COLUMN billing.usage_records.allocation_id IS 'The allocation.';
COMMENT ON COLUMN billing.usage_records.account_id IS 'The account charged.';
COMMENT ON COLUMN billing.usage_records.kind IS 'interval (a charge) or correction (usage charged past the end, given back).';
COMMENT ON COLUMN billing.usage_records.interval_no IS 'Interval number k from the allocation''s start (NULL for a correction).';
COMMENT ON COLUMN billing.usage_records.period_start IS 'Start of the period.';
COMMENT ON COLUMN billing.usage_records.period_end IS 'End of the period (the allocation''s end for its last, partial interval).';
COMMENT ON COLUMN billing.usage_records.seconds IS 'Whole active seconds charged (negative for a correction).';
COMMENT ON COLUMN billing.usage_records.price_per_hour IS 'Price per hour applied.';
COMMENT ON COLUMN billing.usage_records.amount IS 'Amount in minor units (cumulatively floored; negative for a correction).';
COMMENT ON COLUMN billing.usage_records.currency IS 'Currency.';
COMMENT ON COLUMN billing.usage_records.created_at IS 'When it was recorded.';

CREATE TABLE billing.low_balance_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id uuid NOT NULL,
    balance    bigint NOT NULL,
    threshold  bigint NOT NULL,
    entry_id   bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX low_balance_events_account_idx ON billing.low_balance_events (account_id, id);
CREATE TRIGGER low_balance_events_immutable BEFORE UPDATE OR DELETE ON billing.low_balance_events
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER low_balance_events_no_truncate BEFORE TRUNCATE ON billing.low_balance_events
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE billing.low_balance_events IS 'Each downward crossing of billing.low_balance_threshold (from standing good to low or exhausted), once per crossing; announced as billing.low_balance.';
COMMENT ON COLUMN billing.low_balance_events.id IS 'Event number.';
COMMENT ON COLUMN billing.low_balance_events.account_id IS 'The account.';
COMMENT ON COLUMN billing.low_balance_events.balance IS 'Balance just after the crossing.';
COMMENT ON COLUMN billing.low_balance_events.threshold IS 'The threshold crossed.';
COMMENT ON COLUMN billing.low_balance_events.entry_id IS 'The last ledger entry at the crossing.';
COMMENT ON COLUMN billing.low_balance_events.created_at IS 'When.';

CREATE TABLE billing.force_release_requests (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     uuid NOT NULL,
    allocation_ids uuid[] NOT NULL,
    balance        bigint NOT NULL,
    reason         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX force_release_requests_account_idx ON billing.force_release_requests (account_id, id);
CREATE TRIGGER force_release_requests_immutable BEFORE UPDATE OR DELETE ON billing.force_release_requests
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER force_release_requests_no_truncate BEFORE TRUNCATE ON billing.force_release_requests
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE billing.force_release_requests IS 'Every billing.force_release_requested event: an exhausted account''s active allocations to release.';
COMMENT ON COLUMN billing.force_release_requests.id IS 'Request number.';
COMMENT ON COLUMN billing.force_release_requests.account_id IS 'The exhausted account.';
COMMENT ON COLUMN billing.force_release_requests.allocation_ids IS 'Its active allocations at the time.';
COMMENT ON COLUMN billing.force_release_requests.balance IS 'Balance then.';
COMMENT ON COLUMN billing.force_release_requests.reason IS 'balance_exhausted.';
COMMENT ON COLUMN billing.force_release_requests.created_at IS 'When.';

CREATE TABLE billing.refused_credits (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id          uuid NOT NULL,
    amount              bigint NOT NULL,
    currency            text NOT NULL,
    account_currency    text NOT NULL,
    checkout_session_id text NOT NULL UNIQUE,
    payment_id          text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER refused_credits_immutable BEFORE UPDATE OR DELETE ON billing.refused_credits
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER refused_credits_no_truncate BEFORE TRUNCATE ON billing.refused_credits
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE billing.refused_credits IS 'Payments that could not be credited because they are in another currency than the account (payments checks the currency at checkout, so only a race or a misconfiguration gets here): money received and not booked, for an operator to refund or convert. Audited as ledger.credit_refused.';
COMMENT ON COLUMN billing.refused_credits.id IS 'Row number.';
COMMENT ON COLUMN billing.refused_credits.account_id IS 'The payer.';
COMMENT ON COLUMN billing.refused_credits.amount IS 'Amount paid, minor units of currency.';
COMMENT ON COLUMN billing.refused_credits.currency IS 'Currency paid in.';
COMMENT ON COLUMN billing.refused_credits.account_currency IS 'The account''s currency.';
COMMENT ON COLUMN billing.refused_credits.checkout_session_id IS 'The Stripe Checkout Session.';
COMMENT ON COLUMN billing.refused_credits.payment_id IS 'The payments service''s payment id.';
COMMENT ON COLUMN billing.refused_credits.created_at IS 'When it was refused.';

-- Runtime data of an extension's tables is dumped only when marked.
SELECT pg_catalog.pg_extension_config_dump('billing.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('billing.ledger_entries', '');
SELECT pg_catalog.pg_extension_config_dump('billing.ledger_entries_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('billing.usage_records', '');
SELECT pg_catalog.pg_extension_config_dump('billing.low_balance_events', '');
SELECT pg_catalog.pg_extension_config_dump('billing.force_release_requests', '');
SELECT pg_catalog.pg_extension_config_dump('billing.refused_credits', '');
