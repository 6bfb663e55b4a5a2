-- Read models, checkout sessions, payments, refunds, webhook events.

CREATE TABLE payments.users (
    user_id    uuid PRIMARY KEY,
    email      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.users IS 'Read model of users (from user.created): the e-mail address Stripe Checkout is prefilled with.';
COMMENT ON COLUMN payments.users.user_id IS 'The user.';
COMMENT ON COLUMN payments.users.email IS 'E-mail address.';
COMMENT ON COLUMN payments.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE payments.accounts (
    user_id       uuid PRIMARY KEY,
    balance       bigint NOT NULL,
    currency      text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    last_entry_id bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.accounts IS 'Read model of billing balances (from ledger.entry_posted): the currency a top-up must be in, and a first check of a refund against the balance (billing decides with the real one).';
COMMENT ON COLUMN payments.accounts.user_id IS 'The user.';
COMMENT ON COLUMN payments.accounts.balance IS 'Balance after the newest entry seen (minor units).';
COMMENT ON COLUMN payments.accounts.currency IS 'The account''s currency.';
COMMENT ON COLUMN payments.accounts.last_entry_id IS 'The newest ledger entry seen; older events do not overwrite it.';
COMMENT ON COLUMN payments.accounts.updated_at IS 'When it was last updated.';

CREATE TABLE payments.session_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE payments.session_transitions IS 'Allowed changes of payments.payment_sessions.status (from_state NULL: initial state).';
COMMENT ON COLUMN payments.session_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN payments.session_transitions.to_state IS 'State after.';
INSERT INTO payments.session_transitions (from_state, to_state) VALUES
    (NULL, 'creating'),
    ('creating', 'open'), ('creating', 'failed'),
    -- Webhooks may overtake the executor's callback.
    ('creating', 'complete'), ('creating', 'expired'),
    ('open', 'complete'), ('open', 'expired'), ('open', 'failed'),
    ('expired', 'complete');

CREATE TABLE payments.payment_sessions (
    id                uuid PRIMARY KEY,
    user_id           uuid NOT NULL,
    amount            bigint NOT NULL CHECK (amount > 0),
    currency          text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status            text NOT NULL CHECK (status IN ('creating', 'open', 'complete', 'expired', 'failed')),
    stripe_session_id text UNIQUE CHECK (length(stripe_session_id) BETWEEN 1 AND 255),
    url               text,
    payment_status    text,
    intent_id         uuid NOT NULL,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX payment_sessions_user_idx ON payments.payment_sessions (user_id, created_at);
CREATE TRIGGER payment_sessions_status BEFORE INSERT OR UPDATE OF status ON payments.payment_sessions
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('status', 'payments.session_transitions');
COMMENT ON TABLE payments.payment_sessions IS 'Top-ups: one row per api.create_checkout(), written with the Stripe intent that creates its Checkout Session (Idempotency-Key = id).';
COMMENT ON COLUMN payments.payment_sessions.id IS 'Our session id: Stripe''s client_reference_id and Idempotency-Key.';
COMMENT ON COLUMN payments.payment_sessions.user_id IS 'Who tops up.';
COMMENT ON COLUMN payments.payment_sessions.amount IS 'Amount in minor units.';
COMMENT ON COLUMN payments.payment_sessions.currency IS 'Currency.';
COMMENT ON COLUMN payments.payment_sessions.status IS 'creating (intent not answered yet), open (Checkout URL ready), complete, expired or failed.';
COMMENT ON COLUMN payments.payment_sessions.stripe_session_id IS 'Stripe Checkout Session id (cs_...).';
COMMENT ON COLUMN payments.payment_sessions.url IS 'Stripe Checkout URL the user pays at.';
COMMENT ON COLUMN payments.payment_sessions.payment_status IS 'Stripe''s payment_status (unpaid, paid, no_payment_required) as last seen.';
COMMENT ON COLUMN payments.payment_sessions.intent_id IS 'The pgcloud.http_intents row that creates the Checkout Session.';
COMMENT ON COLUMN payments.payment_sessions.last_error IS 'Stripe''s answer when creating it failed.';
COMMENT ON COLUMN payments.payment_sessions.created_at IS 'When it was requested.';
COMMENT ON COLUMN payments.payment_sessions.updated_at IS 'Last change.';
COMMENT ON COLUMN payments.payment_sessions.completed_at IS 'When it was paid.';

CREATE TABLE payments.payments (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id             uuid NOT NULL UNIQUE REFERENCES payments.payment_sessions (id),
    user_id                uuid NOT NULL,
    checkout_session_id    text NOT NULL UNIQUE,
    payment_intent         text,
    amount                 bigint NOT NULL CHECK (amount > 0),
    currency               text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    status                 text NOT NULL CHECK (status IN ('paid', 'partially_refunded', 'refunded')),
    amount_refunded        bigint NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    stripe_amount_refunded bigint NOT NULL DEFAULT 0 CHECK (stripe_amount_refunded >= 0),
    event_id               text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (amount_refunded <= amount)
);
CREATE INDEX payments_user_idx ON payments.payments (user_id, created_at);
CREATE INDEX payments_intent_idx ON payments.payments (payment_intent);
COMMENT ON TABLE payments.payments IS 'Money received: one row per paid Checkout Session (unique by its id, whatever the number or order of webhooks), announced once as payment.succeeded.';
COMMENT ON COLUMN payments.payments.id IS 'Payment id (what api.admin_refund() takes).';
COMMENT ON COLUMN payments.payments.session_id IS 'Our payment session.';
COMMENT ON COLUMN payments.payments.user_id IS 'Who paid.';
COMMENT ON COLUMN payments.payments.checkout_session_id IS 'Stripe Checkout Session id: the ledger credit''s cause.';
COMMENT ON COLUMN payments.payments.payment_intent IS 'Stripe PaymentIntent id (pi_...), what refunds are made against.';
COMMENT ON COLUMN payments.payments.amount IS 'Amount paid (Stripe''s amount_total), minor units.';
COMMENT ON COLUMN payments.payments.currency IS 'Currency.';
COMMENT ON COLUMN payments.payments.status IS 'paid, partially_refunded or refunded (by succeeded refunds).';
COMMENT ON COLUMN payments.payments.amount_refunded IS 'Sum of our succeeded refunds.';
COMMENT ON COLUMN payments.payments.stripe_amount_refunded IS 'The charge''s amount_refunded as Stripe last reported it (charge.refunded), for reconciliation.';
COMMENT ON COLUMN payments.payments.event_id IS 'The Stripe event that recorded it.';
COMMENT ON COLUMN payments.payments.created_at IS 'When it was recorded.';
COMMENT ON COLUMN payments.payments.updated_at IS 'Last change.';

CREATE TABLE payments.refund_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE payments.refund_transitions IS 'Allowed changes of payments.refunds.status (from_state NULL: initial state).';
COMMENT ON COLUMN payments.refund_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN payments.refund_transitions.to_state IS 'State after.';
INSERT INTO payments.refund_transitions (from_state, to_state) VALUES
    (NULL, 'requested'),
    ('requested', 'declined'), ('requested', 'submitted'),
    ('submitted', 'pending'), ('submitted', 'succeeded'), ('submitted', 'failed'),
    ('pending', 'succeeded'), ('pending', 'failed'),
    ('succeeded', 'failed');

CREATE TABLE payments.refunds (
    id               uuid PRIMARY KEY,
    payment_id       uuid NOT NULL REFERENCES payments.payments (id),
    user_id          uuid NOT NULL,
    amount           bigint NOT NULL CHECK (amount > 0),
    currency         text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status           text NOT NULL CHECK (status IN ('requested', 'declined', 'submitted', 'pending', 'succeeded', 'failed')),
    stripe_refund_id text UNIQUE,
    intent_id        uuid,
    ledger_entry_id  bigint,
    failure_reason   text,
    requested_by     uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment_idx ON payments.refunds (payment_id);
CREATE TRIGGER refunds_status BEFORE INSERT OR UPDATE OF status ON payments.refunds
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('status', 'payments.refund_transitions');
COMMENT ON TABLE payments.refunds IS 'Refunds: requested (waiting for billing''s debit), declined (billing refused: balance), submitted (debited; Stripe refund intent written), pending / succeeded at Stripe, or failed (Stripe refused or failed it; the debit is reversed).';
COMMENT ON COLUMN payments.refunds.id IS 'Refund id: the ledger debit''s cause and the Stripe Idempotency-Key.';
COMMENT ON COLUMN payments.refunds.payment_id IS 'The payment refunded.';
COMMENT ON COLUMN payments.refunds.user_id IS 'The payer.';
COMMENT ON COLUMN payments.refunds.amount IS 'Amount in minor units.';
COMMENT ON COLUMN payments.refunds.currency IS 'Currency.';
COMMENT ON COLUMN payments.refunds.reason IS 'Why (from the operator).';
COMMENT ON COLUMN payments.refunds.status IS 'requested, declined, submitted, pending, succeeded or failed.';
COMMENT ON COLUMN payments.refunds.stripe_refund_id IS 'Stripe refund id (re_...).';
COMMENT ON COLUMN payments.refunds.intent_id IS 'The pgcloud.http_intents row that creates the Stripe refund.';
COMMENT ON COLUMN payments.refunds.ledger_entry_id IS 'The billing ledger entry that debited it.';
COMMENT ON COLUMN payments.refunds.failure_reason IS 'Why it was declined or failed.';
COMMENT ON COLUMN payments.refunds.requested_by IS 'The operator who asked (JWT sub), NULL at psql.';
COMMENT ON COLUMN payments.refunds.created_at IS 'When it was requested.';
COMMENT ON COLUMN payments.refunds.updated_at IS 'Last change.';

CREATE TABLE payments.webhook_events (
    event_id       text PRIMARY KEY CHECK (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
    event_type     text NOT NULL,
    livemode       boolean,
    object_id      text,
    stripe_created timestamptz,
    signed_at      timestamptz NOT NULL,
    outcome        text NOT NULL DEFAULT 'received',
    received_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE payments.webhook_events IS 'Every verified Stripe event, once (a redelivery, even concurrent, finds its row and has no effect).';
COMMENT ON COLUMN payments.webhook_events.event_id IS 'Stripe event id (evt_...).';
COMMENT ON COLUMN payments.webhook_events.event_type IS 'Event type, e.g. checkout.session.completed.';
COMMENT ON COLUMN payments.webhook_events.livemode IS 'Stripe''s livemode flag.';
COMMENT ON COLUMN payments.webhook_events.object_id IS 'Id of data.object.';
COMMENT ON COLUMN payments.webhook_events.stripe_created IS 'When Stripe created the event.';
COMMENT ON COLUMN payments.webhook_events.signed_at IS 'The signature''s timestamp.';
COMMENT ON COLUMN payments.webhook_events.outcome IS 'What it did: payment_recorded, session_updated, refund_updated, ignored, ...';
COMMENT ON COLUMN payments.webhook_events.received_at IS 'When it was received.';

SELECT pg_catalog.pg_extension_config_dump('payments.users', '');
SELECT pg_catalog.pg_extension_config_dump('payments.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payment_sessions', '');
SELECT pg_catalog.pg_extension_config_dump('payments.payments', '');
SELECT pg_catalog.pg_extension_config_dump('payments.refunds', '');
SELECT pg_catalog.pg_extension_config_dump('payments.webhook_events', '');
