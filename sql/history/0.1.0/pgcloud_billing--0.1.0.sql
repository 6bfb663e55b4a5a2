-- pgcloud_billing install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_billing" to load this file. \quit

SELECT pgcloud.service_begin('billing');
-- source: sql/billing/00_catalogue.sql
-- pgcloud_billing: usage metering, the immutable ledger and balances.
-- Schema billing, owned by pgcloud_svc_billing (created by pgcloud.service_begin).
--
-- Decisions:
--   * Money is bigint minor units with a currency (one per account); no float
--     or numeric is ever stored (numeric appears only inside the proration
--     arithmetic, which floors to bigint).
--   * billing.ledger_entries is append-only (pgcloud.immutable); every entry
--     carries its account's balance after it. A C trigger (billing.ledger_post,
--     src/billing/ledger.c) computes that balance under the account's row lock
--     from the newest entry, so any INSERT is correct by construction; the
--     balance is the newest entry's balance_after (billing.balances: one index
--     descent, at any ledger size); billing.verify_ledger() proves the chain and
--     balance = sum of entries at any time. The account row is locked, never
--     rewritten, by a posting: no dead versions pile up on a busy account.
--   * Each entry names its cause (payment = Stripe Checkout Session id,
--     usage_record, refund, adjustment); (kind, cause_id) is unique, so no cause
--     is booked twice, whatever the delivery order or count of events.
--   * Usage: one record per accrual interval of an allocation, numbered from
--     its start; amounts are prorated to the second with cumulative flooring
--     (interval k costs floor(p*e(k+1)/3600) - floor(p*e(k)/3600) where e is the
--     elapsed whole seconds), so the records of an allocation always add up to
--     floor(price_per_hour * active seconds / 3600): no more, no less.
--   * Refunds: payments asks (refund.requested); billing debits under the
--     account lock, or declines (billing.refund_declined) when the balance
--     would go negative and the request does not allow it. Payments writes the
--     Stripe refund intent only when it sees the debit (ledger.entry_posted);
--     a refund that fails at Stripe comes back as refund.failed and is
--     reversed by a new entry. See sql/payments/50_refunds.sql.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('currency_mismatch', 409, 'The currency does not match the account''s currency.', 'billing');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_found', 404, 'The allocation does not exist.', 'billing')
ON CONFLICT (code) DO NOTHING;

-- billing.accrual_interval_seconds, billing.min_balance_to_allocate and
-- billing.low_balance_threshold are seeded by the core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('billing.currency', '"usd"', 'Currency of new accounts (ISO 4217, lower case); an account holds one currency.'),
    ('billing.ledger_page_max', '200', 'Most ledger entries api.ledger() returns in one page.'),
    ('billing.usage_records_max', '1000', 'Most usage records api.usage() lists (the most recent; totals always cover all).'),
    ('billing.force_release_repeat_seconds', '300', 'How long after a billing.force_release_requested event the accrual job asks again while the account stays exhausted and allocations are still active (seconds).'),
    ('billing.bill_provisioning', 'false', 'Whether an allocation is billed from its request (the provisioning phase included) rather than from its activation; a deployment that fails is never billed.');

-- source: sql/billing/10_tables.sql
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

-- source: sql/billing/20_ledger.sql
-- Posting, booking a cause once, standing, and the ledger check.

CREATE FUNCTION billing.entry_json(e billing.ledger_entries) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT jsonb_build_object('id', e.id, 'kind', e.kind, 'amount', e.amount, 'currency', e.currency,
                              'balance_after', e.balance_after, 'cause_type', e.cause_type,
                              'cause_id', e.cause_id, 'memo', e.memo, 'created_at', e.created_at)
$$;
COMMENT ON FUNCTION billing.entry_json(billing.ledger_entries) IS 'The API form of a ledger entry.';

-- One entry: the trigger computes its id and balance; the event follows.
CREATE FUNCTION billing.post_entry(account_id uuid, kind text, amount bigint, currency text, cause_type text,
                                   cause_id text, memo text DEFAULT NULL) RETURNS billing.ledger_entries
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    e billing.ledger_entries;
BEGIN
    INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id, memo)
    VALUES (post_entry.account_id, post_entry.kind, post_entry.amount, post_entry.currency, 0,
            post_entry.cause_type, post_entry.cause_id, post_entry.memo)
    RETURNING * INTO e;
    PERFORM pgcloud.emit('ledger.entry_posted', 'account', e.account_id::text,
        jsonb_build_object('entry_id', e.id, 'user_id', e.account_id, 'kind', e.kind, 'amount', e.amount,
                           'balance_after', e.balance_after, 'currency', e.currency,
                           'cause_type', e.cause_type, 'cause_id', e.cause_id, 'created_at', e.created_at));
    RETURN e;
END
$$;
COMMENT ON FUNCTION billing.post_entry(uuid, text, bigint, text, text, text, text) IS 'Posts one ledger entry (its balance is computed under the account''s lock by the billing.ledger_post trigger) and emits ledger.entry_posted. A cause already booked for this kind raises unique_violation: use billing.book() to book a cause once.';

-- A cause booked at most once, whatever the number or order of requests.
CREATE FUNCTION billing.book(account_id uuid, kind text, amount bigint, currency text, cause_type text,
                             cause_id text, memo text DEFAULT NULL,
                             OUT entry_id bigint, OUT balance_after bigint, OUT duplicate boolean)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    e billing.ledger_entries;
    c text;
BEGIN
    SELECT * INTO e FROM billing.ledger_entries l WHERE l.kind = book.kind AND l.cause_id = book.cause_id;
    IF NOT FOUND THEN
        BEGIN
            e := billing.post_entry(book.account_id, book.kind, book.amount, book.currency, book.cause_type,
                                    book.cause_id, book.memo);
            entry_id := e.id;
            balance_after := e.balance_after;
            duplicate := false;
            RETURN;
        EXCEPTION WHEN unique_violation THEN
            -- A concurrent booking of the same cause committed while we waited for the account.
            GET STACKED DIAGNOSTICS c = CONSTRAINT_NAME;
            IF c IS DISTINCT FROM 'ledger_entries_one_booking' THEN
                RAISE;
            END IF;
            SELECT * INTO e FROM billing.ledger_entries l WHERE l.kind = book.kind AND l.cause_id = book.cause_id;
        END;
    END IF;
    IF e.account_id IS DISTINCT FROM book.account_id OR e.amount IS DISTINCT FROM book.amount
       OR e.currency IS DISTINCT FROM book.currency THEN
        PERFORM pgcloud.audit('ledger.booking_conflict', 'ledger_entry', e.id::text, 'rejected',
            jsonb_build_object('kind', book.kind, 'cause_id', book.cause_id,
                               'booked', jsonb_build_object('account_id', e.account_id, 'amount', e.amount, 'currency', e.currency),
                               'requested', jsonb_build_object('account_id', book.account_id, 'amount', book.amount,
                                                               'currency', book.currency)));
    END IF;
    entry_id := e.id;
    balance_after := e.balance_after;
    duplicate := true;
END
$$;
COMMENT ON FUNCTION billing.book(uuid, text, bigint, text, text, text, text) IS 'Books a cause once: when (kind, cause_id) is already in the ledger (or is booked concurrently) nothing is posted and the existing entry is returned with duplicate = true (a request that differs from the booking is audited as ledger.booking_conflict).';

-- Standing: good / low / exhausted and "may allocate", announced on change.
CREATE FUNCTION billing.standing_of(balance bigint) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT CASE WHEN balance <= 0 THEN 'exhausted'
                WHEN balance < pgcloud.policy('billing.low_balance_threshold', NULL::bigint) THEN 'low'
                ELSE 'good' END
$$;
COMMENT ON FUNCTION billing.standing_of(bigint) IS 'The standing of a balance: exhausted (<= 0), low (under billing.low_balance_threshold) or good.';

CREATE FUNCTION billing.active_allocations(account uuid) RETURNS uuid[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    SELECT coalesce(array_agg(a.allocation_id ORDER BY a.started_at, a.allocation_id), '{}')
      FROM billing.allocations a
     WHERE a.account_id = account AND a.started_at IS NOT NULL AND a.ended_at IS NULL
$$;
COMMENT ON FUNCTION billing.active_allocations(uuid) IS 'The allocations of an account that are active (activated, not ended), oldest first.';

CREATE FUNCTION billing.request_force_release(account uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    b billing.balances;
    ids uuid[] := billing.active_allocations(account);
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN false;
    END IF;
    UPDATE billing.accounts x SET force_release_requested_at = now() WHERE x.account_id = account;
    SELECT * INTO b FROM billing.balances x WHERE x.account_id = account;
    INSERT INTO billing.force_release_requests (account_id, allocation_ids, balance, reason)
    VALUES (account, ids, b.balance, 'balance_exhausted');
    PERFORM pgcloud.emit('billing.force_release_requested', 'account', account::text,
        jsonb_build_object('user_id', account, 'allocation_ids', to_jsonb(ids), 'reason', 'balance_exhausted',
                           'balance', b.balance, 'currency', b.currency));
    PERFORM pgcloud.audit('billing.force_release_requested', 'account', account::text, 'ok',
        jsonb_build_object('allocation_ids', to_jsonb(ids), 'balance', b.balance));
    RETURN true;
END
$$;
COMMENT ON FUNCTION billing.request_force_release(uuid) IS 'Asks provisioning to release the account''s active allocations (billing.force_release_requested, recorded in billing.force_release_requests, audited); false when it has none.';

CREATE FUNCTION billing.evaluate_standing(account uuid) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.balances;
    threshold bigint := pgcloud.policy('billing.low_balance_threshold', NULL::bigint);
    min_balance bigint := pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint);
    next_standing text;
    may boolean;
BEGIN
    PERFORM FROM billing.accounts x WHERE x.account_id = account FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO a FROM billing.balances x WHERE x.account_id = account;
    next_standing := CASE WHEN a.balance <= 0 THEN 'exhausted' WHEN a.balance < threshold THEN 'low' ELSE 'good' END;
    may := a.balance >= min_balance;
    IF a.standing IS NOT DISTINCT FROM next_standing AND a.can_allocate IS NOT DISTINCT FROM may THEN
        RETURN next_standing;
    END IF;
    UPDATE billing.accounts x SET standing = next_standing, can_allocate = may, standing_changed_at = now()
     WHERE x.account_id = account;
    PERFORM pgcloud.emit('account.standing_changed', 'account', account::text,
        jsonb_build_object('user_id', account, 'standing', next_standing, 'previous_standing', a.standing,
                           'balance', a.balance, 'currency', a.currency, 'can_allocate', may,
                           'min_balance_to_allocate', min_balance, 'low_balance_threshold', threshold,
                           'as_of', clock_timestamp()));
    PERFORM pgcloud.audit('account.standing_changed', 'account', account::text, 'ok',
        jsonb_build_object('from', a.standing, 'to', next_standing, 'balance', a.balance, 'can_allocate', may));
    -- Once per downward crossing of the threshold: only when leaving "good".
    IF a.standing = 'good' AND next_standing IN ('low', 'exhausted') THEN
        INSERT INTO billing.low_balance_events (account_id, balance, threshold, entry_id)
        VALUES (account, a.balance, threshold, a.last_entry_id);
        PERFORM pgcloud.emit('billing.low_balance', 'account', account::text,
            jsonb_build_object('user_id', account, 'balance', a.balance, 'threshold', threshold,
                               'currency', a.currency));
    END IF;
    IF next_standing = 'exhausted' AND a.standing IS DISTINCT FROM 'exhausted' THEN
        PERFORM billing.request_force_release(account);
    END IF;
    RETURN next_standing;
END
$$;
COMMENT ON FUNCTION billing.evaluate_standing(uuid) IS 'Recomputes an account''s standing from its balance and policy; on a change emits account.standing_changed (with balance, can_allocate, min_balance_to_allocate for provisioning, and as_of: the time under the account lock, increasing per account), on leaving good a billing.low_balance event (once per crossing, recorded in billing.low_balance_events), on becoming exhausted billing.force_release_requested for its active allocations. Returns the standing.';

-- The invariant, checkable at any time (one MVCC snapshot).
CREATE FUNCTION billing.verify_ledger(account uuid DEFAULT NULL)
RETURNS TABLE (account_id uuid, problem text, entry_id bigint, expected bigint, actual bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
    WITH chain AS (
        SELECT e.account_id, e.id, e.amount, e.balance_after,
               lag(e.balance_after, 1, 0::bigint) OVER (PARTITION BY e.account_id ORDER BY e.id) AS previous
          FROM billing.ledger_entries e
         WHERE account IS NULL OR e.account_id = account
    ), totals AS (
        SELECT c.account_id, sum(c.amount)::bigint AS total, count(*) AS entries
          FROM chain c GROUP BY c.account_id
    )
    SELECT c.account_id, 'chain_broken', c.id, c.previous + c.amount, c.balance_after
      FROM chain c WHERE c.balance_after <> c.previous + c.amount
    UNION ALL
    SELECT b.account_id, 'balance_is_not_sum_of_entries', b.last_entry_id, coalesce(t.total, 0), b.balance
      FROM billing.balances b LEFT JOIN totals t ON t.account_id = b.account_id
     WHERE (account IS NULL OR b.account_id = account) AND b.balance <> coalesce(t.total, 0)
    UNION ALL
    SELECT t.account_id, 'entries_without_account', NULL, NULL, t.entries
      FROM totals t WHERE NOT EXISTS (SELECT 1 FROM billing.accounts a WHERE a.account_id = t.account_id)
$$;
COMMENT ON FUNCTION billing.verify_ledger(uuid) IS 'Checks the ledger invariant for one account or all, in one snapshot: each entry''s balance_after is the previous one''s plus its amount (in id order, which is posting order), the balance (newest balance_after) is the sum of the entries, no entry lacks its account. Returns one row per problem (none when consistent).';

-- source: sql/billing/30_usage.sql
-- Usage accrual: each interval of each active allocation charged exactly once.
--
-- Interval k of an allocation is [started_at + k*I, started_at + (k+1)*I) with
-- I its interval_seconds. A run charges every complete interval not charged
-- yet (catching up after a late or missed run), and for an allocation that has
-- ended, every interval up to ended_at, the last one prorated to the second.
-- With e(k) the whole seconds elapsed at an interval's bounds, interval k
-- costs floor(p * e(k+1) / 3600) - floor(p * e(k) / 3600): the amounts
-- telescope, so an allocation's records add up to floor(p * active seconds /
-- 3600), never a unit more or less. When the end arrives after intervals
-- past it were charged (a late event), one correction record gives the
-- difference back. Concurrent runs lock each allocation (FOR NO KEY UPDATE
-- SKIP LOCKED) and re-read its cursor; the unique (allocation_id, interval_no)
-- is the last line.

CREATE FUNCTION billing.prorate(price_per_hour bigint, seconds bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$ SELECT floor(price_per_hour::numeric * seconds / 3600)::bigint $$;
COMMENT ON FUNCTION billing.prorate(bigint, bigint) IS 'Cost in minor units of seconds at price_per_hour, floored (exact integer arithmetic, no floating point).';

CREATE FUNCTION billing.accrue_allocation(allocation uuid, as_of timestamptz DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.allocations;
    t timestamptz := least(coalesce(as_of, now()), now());
    ended boolean;
    total_seconds bigint;
    n_end integer;
    v_charged_seconds bigint;
    v_charged_amount bigint;
    records integer := 0;
    r record;
    correction billing.usage_records;
BEGIN
    SELECT * INTO a FROM billing.allocations x WHERE x.allocation_id = allocation FOR NO KEY UPDATE;
    IF NOT FOUND OR a.started_at IS NULL OR a.settled THEN
        RETURN 0;
    END IF;
    v_charged_seconds := a.charged_seconds;
    v_charged_amount := a.charged_amount;
    ended := a.ended_at IS NOT NULL AND a.ended_at <= t;
    IF ended THEN
        total_seconds := greatest(floor(extract(epoch FROM a.ended_at - a.started_at)), 0)::bigint;
        n_end := ceil(total_seconds::numeric / a.interval_seconds)::integer;
    ELSIF t > a.started_at THEN
        n_end := floor(extract(epoch FROM t - a.started_at) / a.interval_seconds)::integer;
    ELSE
        n_end := 0;
    END IF;

    IF n_end > a.next_interval THEN
        FOR r IN
            WITH recs AS (
                INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start,
                                                   period_end, seconds, price_per_hour, amount, currency)
                SELECT a.allocation_id, a.account_id, 'interval', s.k,
                       a.started_at + make_interval(secs => s.e0), a.started_at + make_interval(secs => s.e1),
                       s.e1 - s.e0, a.price_per_hour,
                       billing.prorate(a.price_per_hour, s.e1) - billing.prorate(a.price_per_hour, s.e0), a.currency
                  FROM (SELECT k, k::bigint * a.interval_seconds AS e0,
                               CASE WHEN ended THEN least((k + 1)::bigint * a.interval_seconds, total_seconds)
                                    ELSE (k + 1)::bigint * a.interval_seconds END AS e1
                          FROM generate_series(a.next_interval, n_end - 1) AS k) s
                 ORDER BY s.k
                RETURNING id, interval_no, seconds, amount, period_end)
            SELECT * FROM recs ORDER BY interval_no
        LOOP
            records := records + 1;
            v_charged_seconds := v_charged_seconds + r.seconds;
            v_charged_amount := v_charged_amount + r.amount;
            IF r.amount > 0 THEN
                PERFORM billing.post_entry(a.account_id, 'usage_debit', -r.amount, a.currency, 'usage_record',
                                           r.id::text, NULL);
            END IF;
        END LOOP;
    END IF;

    -- The end came after intervals past it were charged: give the difference back.
    IF ended AND v_charged_seconds > total_seconds THEN
        INSERT INTO billing.usage_records (allocation_id, account_id, kind, interval_no, period_start, period_end,
                                           seconds, price_per_hour, amount, currency)
        VALUES (a.allocation_id, a.account_id, 'correction', NULL,
                a.started_at + make_interval(secs => total_seconds), a.started_at + make_interval(secs => v_charged_seconds),
                total_seconds - v_charged_seconds, a.price_per_hour,
                billing.prorate(a.price_per_hour, total_seconds) - v_charged_amount, a.currency)
        RETURNING * INTO correction;
        records := records + 1;
        IF correction.amount < 0 THEN
            PERFORM billing.post_entry(a.account_id, 'usage_correction', -correction.amount, a.currency,
                                       'usage_record', correction.id::text, 'usage charged past the allocation''s end');
        END IF;
        v_charged_seconds := total_seconds;
        v_charged_amount := v_charged_amount + correction.amount;
    END IF;

    UPDATE billing.allocations x
       SET next_interval = greatest(x.next_interval, n_end), charged_seconds = v_charged_seconds,
           charged_amount = v_charged_amount, settled = ended, last_error = NULL, updated_at = now()
     WHERE x.allocation_id = a.allocation_id;
    IF records > 0 THEN
        PERFORM billing.evaluate_standing(a.account_id);
    END IF;
    RETURN records;
END
$$;
COMMENT ON FUNCTION billing.accrue_allocation(uuid, timestamptz) IS 'Charges one allocation up to as_of (default and at most now()): every complete interval not yet charged, and once it has ended everything up to ended_at (the last interval prorated to the second, or a correction when more was charged). One usage record and one usage_debit entry per interval, under the allocation''s row lock. Returns the number of usage records written.';

CREATE FUNCTION billing.accrue(as_of timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    t timestamptz := least(coalesce(as_of, now()), now());
    x record;
    n integer;
    n_allocations integer := 0;
    records integer := 0;
    failed integer := 0;
    reminders integer := 0;
    err text;
    repeat_after integer := pgcloud.policy('billing.force_release_repeat_seconds', NULL::integer);
BEGIN
    -- In account order, so concurrent runs take account locks in one order.
    FOR x IN
        SELECT a.allocation_id FROM billing.allocations a
         WHERE a.started_at IS NOT NULL AND NOT a.settled
           AND ((a.ended_at IS NOT NULL AND a.ended_at <= t)
                OR a.started_at + make_interval(secs => (a.next_interval + 1)::bigint * a.interval_seconds) <= t)
         ORDER BY a.account_id, a.allocation_id
         FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        BEGIN
            n := billing.accrue_allocation(x.allocation_id, t);
            n_allocations := n_allocations + 1;
            records := records + n;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
            failed := failed + 1;
            UPDATE billing.allocations a SET last_error = left(pgcloud.sanitize(err), 500), updated_at = now()
             WHERE a.allocation_id = x.allocation_id;
            PERFORM pgcloud.audit('billing.accrual_failed', 'allocation', x.allocation_id::text, 'failed',
                jsonb_build_object('error', left(err, 500)));
        END;
    END LOOP;

    -- Exhausted accounts whose allocations are still running: ask again.
    FOR x IN
        SELECT c.account_id FROM billing.accounts c
         WHERE c.standing = 'exhausted'
           AND (c.force_release_requested_at IS NULL
                OR c.force_release_requested_at <= now() - make_interval(secs => repeat_after))
           AND EXISTS (SELECT 1 FROM billing.allocations a
                        WHERE a.account_id = c.account_id AND a.started_at IS NOT NULL AND a.ended_at IS NULL)
         ORDER BY c.account_id
         FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        IF billing.request_force_release(x.account_id) THEN
            reminders := reminders + 1;
        END IF;
    END LOOP;

    IF records > 0 OR failed > 0 OR reminders > 0 THEN
        PERFORM pgcloud.audit('billing.accrual_run', 'billing', NULL, CASE WHEN failed > 0 THEN 'failed' ELSE 'ok' END,
            jsonb_build_object('as_of', t, 'allocations', n_allocations, 'usage_records', records, 'failed', failed,
                               'force_release_requests', reminders));
    END IF;
    RETURN jsonb_build_object('as_of', t, 'allocations', n_allocations, 'usage_records', records, 'failed', failed,
                              'force_release_requests', reminders);
END
$$;
COMMENT ON FUNCTION billing.accrue(timestamptz) IS 'The accrual (the job billing.accrue, every billing.accrual_interval_seconds): charges every allocation with a complete uncharged interval or an unsettled end, up to as_of (default and at most now()); safe to run twice, late or concurrently (allocations locked with SKIP LOCKED, cursors re-read, intervals unique). One failing allocation does not stop the others (its last_error is set and audited). Re-sends billing.force_release_requested for exhausted accounts still running allocations after billing.force_release_repeat_seconds. Returns {as_of, allocations, usage_records, failed, force_release_requests}.';

-- source: sql/billing/40_events.sql
-- Events in: users, allocations, payments and refunds.

CREATE FUNCTION billing.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v text := coalesce(payload ->> field, fallback);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a uuid', field));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION billing.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

CREATE FUNCTION billing.payload_time(payload jsonb, field text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
BEGIN
    IF payload ->> field IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (payload ->> field)::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
    PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a timestamp', field));
END
$$;
COMMENT ON FUNCTION billing.payload_time(jsonb, text) IS 'An optional timestamp field of an event payload (NULL when absent); raises invalid_event when malformed.';

-- Money in events: JSON integers only (a float or a string is refused).
CREATE FUNCTION billing.payload_amount(payload jsonb, field text) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v jsonb := payload -> field;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) <> 'number' OR (v #>> '{}') !~ '^-?[0-9]{1,18}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be an integer amount in minor units', field));
    END IF;
    RETURN (v #>> '{}')::bigint;
END
$$;
COMMENT ON FUNCTION billing.payload_amount(jsonb, text) IS 'A required integer amount (minor units) of an event payload; raises invalid_event for anything else (floats included).';

CREATE FUNCTION billing.payload_currency(payload jsonb) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    c text := lower(payload ->> 'currency');
BEGIN
    IF c IS NULL OR c !~ '^[a-z]{3}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field currency must be an ISO 4217 code');
    END IF;
    RETURN c;
END
$$;
COMMENT ON FUNCTION billing.payload_currency(jsonb) IS 'The currency of an event payload in lower case; raises invalid_event when missing or malformed.';

CREATE FUNCTION billing.open_account(account uuid, currency text DEFAULT NULL, email text DEFAULT NULL)
RETURNS billing.accounts
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    a billing.accounts;
BEGIN
    INSERT INTO billing.accounts AS x (account_id, currency, email)
    VALUES (account, coalesce(open_account.currency, pgcloud.policy('billing.currency', NULL::text)), open_account.email)
    ON CONFLICT (account_id) DO UPDATE SET email = coalesce(excluded.email, x.email)
    RETURNING * INTO a;
    RETURN a;
END
$$;
COMMENT ON FUNCTION billing.open_account(uuid, text, text) IS 'Opens an account (currency: the given one, else policy billing.currency) or returns the existing one (updating its e-mail when given).';

CREATE FUNCTION billing.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                 payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    v_alloc uuid;
    v_amount bigint;
    v_currency text;
    v_cause text;
    v_refund uuid;
    price bigint;
    acct billing.accounts;
    bal bigint;
    booked record;
    debit billing.ledger_entries;
    decline text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := billing.payload_uuid(payload, 'user_id', aggregate_id);
        -- Opened, not announced: with nothing posted there is no change of
        -- standing to report (provisioning reads "no report" as balance 0, and
        -- notification would tell a new user their balance is exhausted).
        PERFORM billing.open_account(v_user, NULL, payload ->> 'email');

    WHEN 'allocation.activated' THEN
        v_alloc := billing.payload_uuid(payload, 'allocation_id', aggregate_id);
        v_user := billing.payload_uuid(payload, 'user_id');
        price := billing.payload_amount(payload, 'price_per_hour');
        IF price < 0 THEN
            PERFORM pgcloud.raise('invalid_event', 'price_per_hour must not be negative');
        END IF;
        v_currency := billing.payload_currency(payload);
        -- The first activation wins; a replay or a late duplicate changes nothing.
        INSERT INTO billing.allocations AS x (allocation_id, account_id, sku, node_hostname, price_per_hour, currency,
                                              interval_seconds, started_at)
        VALUES (v_alloc, v_user, payload ->> 'sku', payload ->> 'node_hostname', price, v_currency,
                pgcloud.policy('billing.accrual_interval_seconds', NULL::integer),
                -- Policy: bill the provisioning phase too (from the request).
                CASE WHEN pgcloud.policy('billing.bill_provisioning', NULL::boolean)
                     THEN coalesce(billing.payload_time(payload, 'requested_at'), billing.payload_time(payload, 'started_at'), now())
                     ELSE coalesce(billing.payload_time(payload, 'started_at'), now()) END)
        ON CONFLICT (allocation_id) DO UPDATE
           SET account_id = excluded.account_id, sku = excluded.sku, node_hostname = excluded.node_hostname,
               price_per_hour = excluded.price_per_hour, currency = excluded.currency,
               interval_seconds = excluded.interval_seconds, started_at = excluded.started_at, updated_at = now()
         WHERE x.started_at IS NULL;
        acct := billing.open_account(v_user, v_currency);
        -- Already ended (the end arrived first) or started in the past: charge what is due now.
        PERFORM billing.accrue_allocation(v_alloc);
        IF billing.evaluate_standing(v_user) = 'exhausted'
           AND EXISTS (SELECT 1 FROM billing.allocations a WHERE a.allocation_id = v_alloc AND a.ended_at IS NULL) THEN
            -- Provisioning's read model lagged: an exhausted account may not run allocations.
            PERFORM billing.request_force_release(v_user);
        END IF;

    WHEN 'allocation.released', 'allocation.failed' THEN
        v_alloc := billing.payload_uuid(payload, 'allocation_id', aggregate_id);
        IF payload ? 'user_id' THEN
            v_user := billing.payload_uuid(payload, 'user_id');
        END IF;
        INSERT INTO billing.allocations AS x (allocation_id, account_id, ended_at, end_reason)
        VALUES (v_alloc, v_user, coalesce(billing.payload_time(payload, 'ended_at'), now()),
                CASE WHEN event_type = 'allocation.released' THEN 'released'
                     ELSE coalesce(left(payload ->> 'reason', 200), 'failed') END)
        ON CONFLICT (allocation_id) DO UPDATE
           SET ended_at = coalesce(x.ended_at, excluded.ended_at),
               end_reason = coalesce(x.end_reason, excluded.end_reason),
               account_id = coalesce(x.account_id, excluded.account_id), updated_at = now();
        -- The last, partial interval (or a correction) now; never before activation.
        PERFORM billing.accrue_allocation(v_alloc);

    WHEN 'payment.succeeded' THEN
        v_user := billing.payload_uuid(payload, 'user_id');
        v_amount := billing.payload_amount(payload, 'amount');
        v_currency := billing.payload_currency(payload);
        v_cause := payload ->> 'checkout_session_id';
        IF v_amount <= 0 THEN
            PERFORM pgcloud.raise('invalid_event', 'a payment amount must be positive');
        END IF;
        IF v_cause IS NULL OR length(v_cause) NOT BETWEEN 1 AND 255 THEN
            PERFORM pgcloud.raise('invalid_event', 'payload field checkout_session_id is required');
        END IF;
        acct := billing.open_account(v_user, v_currency);
        IF acct.currency <> v_currency THEN
            -- Not a transient failure: retrying would not help. Kept for an operator, not booked.
            INSERT INTO billing.refused_credits (account_id, amount, currency, account_currency, checkout_session_id,
                                                 payment_id)
            VALUES (v_user, v_amount, v_currency, acct.currency, v_cause, payload ->> 'payment_id')
            ON CONFLICT (checkout_session_id) DO NOTHING;
            IF FOUND THEN
                PERFORM pgcloud.audit('ledger.credit_refused', 'account', v_user::text, 'failed',
                    jsonb_build_object('reason', 'currency_mismatch', 'amount', v_amount, 'currency', v_currency,
                                       'account_currency', acct.currency, 'checkout_session_id', v_cause,
                                       'payment_id', payload ->> 'payment_id'));
            END IF;
            RETURN;
        END IF;
        SELECT * INTO booked FROM billing.book(v_user, 'credit', v_amount, v_currency, 'payment', v_cause,
                                               left('payment ' || coalesce(payload ->> 'payment_id', ''), 500));
        IF NOT booked.duplicate THEN
            PERFORM pgcloud.audit('ledger.credited', 'account', v_user::text, 'ok',
                jsonb_build_object('entry_id', booked.entry_id, 'amount', v_amount, 'currency', v_currency,
                                   'checkout_session_id', v_cause, 'payment_id', payload ->> 'payment_id',
                                   'balance_after', booked.balance_after));
            PERFORM billing.evaluate_standing(v_user);
        END IF;

    WHEN 'refund.requested' THEN
        v_refund := billing.payload_uuid(payload, 'refund_id');
        v_user := billing.payload_uuid(payload, 'user_id');
        v_amount := billing.payload_amount(payload, 'amount');
        v_currency := billing.payload_currency(payload);
        IF v_amount <= 0 THEN
            PERFORM pgcloud.raise('invalid_event', 'a refund amount must be positive');
        END IF;
        IF EXISTS (SELECT 1 FROM billing.ledger_entries l WHERE l.kind = 'refund_debit' AND l.cause_id = v_refund::text) THEN
            RETURN;     -- already debited
        END IF;
        -- The balance is decided here, under the account's lock: not from a read model.
        SELECT * INTO acct FROM billing.accounts x WHERE x.account_id = v_user FOR NO KEY UPDATE;
        IF FOUND THEN
            SELECT b.balance INTO bal FROM billing.balances b WHERE b.account_id = v_user;
        END IF;
        IF acct.account_id IS NULL THEN
            decline := 'no_account';
        ELSIF acct.currency <> v_currency THEN
            decline := 'currency_mismatch';
        ELSIF bal - v_amount < 0 AND NOT coalesce((payload ->> 'allow_negative_balance')::boolean, false) THEN
            decline := 'insufficient_balance';
        END IF;
        IF decline IS NOT NULL THEN
            PERFORM pgcloud.emit('billing.refund_declined', 'account', v_user::text,
                jsonb_build_object('refund_id', v_refund, 'payment_id', payload ->> 'payment_id', 'user_id', v_user,
                                   'amount', v_amount, 'currency', v_currency, 'balance', bal,
                                   'reason', decline));
            PERFORM pgcloud.audit('ledger.refund_declined', 'refund', v_refund::text, 'rejected',
                jsonb_build_object('reason', decline, 'amount', v_amount, 'balance', bal));
            RETURN;
        END IF;
        SELECT * INTO booked FROM billing.book(v_user, 'refund_debit', -v_amount, v_currency, 'refund', v_refund::text,
                                               left(payload ->> 'reason', 500));
        IF NOT booked.duplicate THEN
            PERFORM pgcloud.audit('ledger.refund_debited', 'refund', v_refund::text, 'ok',
                jsonb_build_object('entry_id', booked.entry_id, 'amount', v_amount, 'currency', v_currency,
                                   'payment_id', payload ->> 'payment_id', 'balance_after', booked.balance_after));
            PERFORM billing.evaluate_standing(v_user);
        END IF;

    WHEN 'refund.failed' THEN
        v_refund := billing.payload_uuid(payload, 'refund_id');
        SELECT * INTO debit FROM billing.ledger_entries l WHERE l.kind = 'refund_debit' AND l.cause_id = v_refund::text;
        IF NOT FOUND THEN
            RETURN;     -- never debited (declined): nothing to give back
        END IF;
        -- Give back exactly what was debited, whatever the event says.
        SELECT * INTO booked FROM billing.book(debit.account_id, 'refund_reversal', -debit.amount, debit.currency,
                                               'refund', v_refund::text, 'refund failed at Stripe');
        IF NOT booked.duplicate THEN
            PERFORM pgcloud.audit('ledger.refund_reversed', 'refund', v_refund::text, 'ok',
                jsonb_build_object('entry_id', booked.entry_id, 'amount', -debit.amount,
                                   'reason', payload ->> 'failure_reason', 'balance_after', booked.balance_after));
            PERFORM billing.evaluate_standing(debit.account_id);
        END IF;

    ELSE
        NULL;   -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION billing.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created opens the account (its standing is first announced with its first posting); allocation.activated / released / failed feed the allocation read model and charge what is due; payment.succeeded credits once per Checkout Session (one in another currency than the account is kept in billing.refused_credits, not booked); refund.requested debits under the account lock or declines (billing.refund_declined); refund.failed reverses the debit once. Other types are ignored.';

-- source: sql/billing/50_api.sql
-- The public API: balance, ledger pages, usage; operators' adjustment and check.

CREATE FUNCTION billing.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, billing
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
COMMENT ON FUNCTION billing.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

CREATE FUNCTION api.balance() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    a billing.balances;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := billing.require_user();
    SELECT * INTO a FROM billing.balances x WHERE x.account_id = v_user;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('balance', 0, 'currency', pgcloud.policy('billing.currency', NULL::text),
                                  'standing', 'exhausted', 'can_allocate', false, 'as_of_entry_id', NULL);
    END IF;
    RETURN jsonb_build_object('balance', a.balance, 'currency', a.currency,
                              'standing', coalesce(a.standing, billing.standing_of(a.balance)),
                              'can_allocate', a.balance >= pgcloud.policy('billing.min_balance_to_allocate', NULL::bigint),
                              'as_of_entry_id', a.last_entry_id);
END
$$;
COMMENT ON FUNCTION api.balance() IS 'Your balance: {balance (minor units), currency, standing (good, low or exhausted), can_allocate, as_of_entry_id}. Read in constant time at any ledger size (one index descent): the running balance carried by your newest ledger entry, which equals the sum of your entries.';

CREATE FUNCTION api.ledger(before bigint DEFAULT NULL, "limit" integer DEFAULT 50) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    max_page integer := pgcloud.policy('billing.ledger_page_max', NULL::integer);
    page jsonb;
    n integer;
    last_id bigint;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := billing.require_user();
    IF "limit" IS NULL OR "limit" < 1 OR "limit" > max_page THEN
        PERFORM pgcloud.raise('invalid_argument', format('limit must be between 1 and %s', max_page));
    END IF;
    IF before IS NOT NULL AND before < 1 THEN
        PERFORM pgcloud.raise('invalid_argument', 'before must be an entry id (a positive integer)');
    END IF;
    SELECT coalesce(jsonb_agg(billing.entry_json(e) ORDER BY e.id DESC), '[]'::jsonb), count(*), min(e.id)
      INTO page, n, last_id
      FROM (SELECT * FROM billing.ledger_entries l
             WHERE l.account_id = v_user AND (ledger.before IS NULL OR l.id < ledger.before)
             ORDER BY l.id DESC LIMIT "limit") e;
    RETURN jsonb_build_object('entries', page,
        'next_before', CASE WHEN n = "limit" AND EXISTS (SELECT 1 FROM billing.ledger_entries l
                                                         WHERE l.account_id = v_user AND l.id < last_id)
                            THEN last_id END);
END
$$;
COMMENT ON FUNCTION api.ledger(bigint, integer) IS 'Your ledger entries, newest first, keyset-paginated: {entries: [{id, kind, amount, currency, balance_after, cause_type, cause_id, memo, created_at}], next_before}. Pass next_before as before for the next page (NULL when there is none); limit is 1 to billing.ledger_page_max.';

CREATE FUNCTION api.usage(allocation_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    role text;
    v_user uuid;
    a billing.allocations;
    max_records integer := pgcloud.policy('billing.usage_records_max', NULL::integer);
    recs jsonb;
    totals record;
BEGIN
    role := pgcloud.authorize('user');
    IF role <> 'pgcloud_admin' THEN
        v_user := billing.require_user();
    END IF;
    SELECT * INTO a FROM billing.allocations x WHERE x.allocation_id = usage.allocation_id;
    -- Someone else's allocation is "not found" too.
    IF NOT FOUND OR (v_user IS NOT NULL AND a.account_id IS DISTINCT FROM v_user) THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', usage.allocation_id));
    END IF;
    SELECT count(*) AS n, coalesce(sum(u.seconds), 0)::bigint AS seconds, coalesce(sum(u.amount), 0)::bigint AS amount
      INTO totals FROM billing.usage_records u WHERE u.allocation_id = a.allocation_id;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'kind', r.kind, 'interval', r.interval_no,
                                                 'period_start', r.period_start, 'period_end', r.period_end,
                                                 'seconds', r.seconds, 'amount', r.amount) ORDER BY r.id), '[]'::jsonb)
      INTO recs
      FROM (SELECT * FROM billing.usage_records u WHERE u.allocation_id = a.allocation_id
             ORDER BY u.id DESC LIMIT max_records) r;
    RETURN jsonb_build_object(
        'allocation_id', a.allocation_id, 'sku', a.sku, 'price_per_hour', a.price_per_hour, 'currency', a.currency,
        'state', CASE WHEN a.started_at IS NULL THEN 'never_active' WHEN a.ended_at IS NULL THEN 'active' ELSE 'ended' END,
        'started_at', a.started_at, 'ended_at', a.ended_at, 'settled', a.settled,
        'seconds', totals.seconds, 'amount', totals.amount, 'records_total', totals.n,
        'records', recs, 'records_truncated', totals.n > max_records);
END
$$;
COMMENT ON FUNCTION api.usage(uuid) IS 'Usage of one of your allocations (admins: any): {allocation_id, sku, price_per_hour, currency, state, started_at, ended_at, settled, seconds, amount, records_total, records: [{id, kind, interval, period_start, period_end, seconds, amount}], records_truncated}. seconds and amount cover every record; the list holds the most recent billing.usage_records_max. Another user''s allocation is 404 allocation_not_found.';

CREATE FUNCTION billing.adjust_balance_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    v_user uuid;
    amount bigint;
    reason text := btrim(args ->> 'reason');
    a billing.accounts;
    e billing.ledger_entries;
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF args ->> 'user_id' IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'user_id is required');
    END IF;
    v_user := (args ->> 'user_id')::uuid;
    IF args ->> 'amount' IS NULL OR (args ->> 'amount')::bigint = 0 THEN
        PERFORM pgcloud.raise('invalid_argument', 'amount must be a non-zero integer (minor units)');
    END IF;
    amount := (args ->> 'amount')::bigint;
    IF reason IS NULL OR reason = '' OR length(reason) > 500 THEN
        PERFORM pgcloud.raise('invalid_argument', 'reason must be 1 to 500 characters');
    END IF;
    a := billing.open_account(v_user);
    e := billing.post_entry(v_user, 'adjustment', amount, a.currency, 'adjustment', gen_random_uuid()::text, reason);
    PERFORM pgcloud.audit('ledger.adjusted', 'account', v_user::text, 'ok',
        jsonb_build_object('entry_id', e.id, 'amount', amount, 'currency', e.currency, 'reason', reason,
                           'balance_after', e.balance_after));
    PERFORM billing.evaluate_standing(v_user);
    RETURN billing.entry_json(e);
END
$$;
COMMENT ON FUNCTION billing.adjust_balance_apply(jsonb) IS 'Internal to api.admin_adjust_balance(): posts {user_id, amount, reason} as an adjustment entry; audited as ledger.adjusted.';

CREATE FUNCTION api.admin_adjust_balance(user_id uuid, amount bigint, reason text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('billing.adjust_balance',
        jsonb_build_object('user_id', user_id, 'amount', amount, 'reason', reason),
        'billing.adjust_balance_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_adjust_balance(uuid, bigint, text) IS 'Operators: corrects a balance with a new adjustment entry (amount in minor units, positive or negative; the ledger is never edited). Returns the entry. Audited; safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.admin_verify_ledger(user_id uuid DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, billing
AS $$
DECLARE
    problems jsonb;
BEGIN
    PERFORM pgcloud.authorize('admin');
    SELECT coalesce(jsonb_agg(to_jsonb(v) ORDER BY v.account_id, v.entry_id), '[]'::jsonb) INTO problems
      FROM billing.verify_ledger(admin_verify_ledger.user_id) v;
    RETURN jsonb_build_object('consistent', jsonb_array_length(problems) = 0, 'problems', problems,
        'accounts', (SELECT count(*) FROM billing.accounts a
                      WHERE admin_verify_ledger.user_id IS NULL OR a.account_id = admin_verify_ledger.user_id));
END
$$;
COMMENT ON FUNCTION api.admin_verify_ledger(uuid) IS 'Operators: checks the ledger invariant (balance = sum of entries = last balance_after, unbroken chain) for one user or all: {consistent, problems: [{account_id, problem, entry_id, expected, actual}], accounts}.';

-- source: sql/billing/60_jobs.sql
-- The accrual runs by itself: the scheduler worker calls billing.accrue()
-- every billing.accrual_interval_seconds (each run charges every complete
-- interval due, so a late or skipped run only delays).

SELECT pgcloud.register_job('billing.accrue', 'billing.accrue(timestamptz)', 'billing.accrual_interval_seconds', 's',
    'The accrual: charges every active allocation for each complete interval (and settles ended ones).');

-- source: sql/billing/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.balance(), api.ledger(bigint, integer), api.usage(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.admin_adjust_balance(uuid, bigint, text), api.admin_verify_ledger(uuid)
    TO pgcloud_admin;

SELECT pgcloud.service_end('billing');
