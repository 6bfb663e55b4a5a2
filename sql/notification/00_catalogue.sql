-- pgcloud_notification: schema notification, owned by pgcloud_svc_notification (created by pgcloud.service_begin).
--
-- Fan-out of user-facing events (registry/services.conf `subscribes`):
--   * a NOTIFY on the user's channel pgcloud_user_<user id without dashes>
--     (operators: pgcloud_operators) with a small JSON payload for a
--     WebSocket gateway: {type, event_id, occurred_at, ids, message};
--   * an e-mail, when the user's preferences want it, through the e-mail
--     outbox notification.emails. Each row is sent by the HTTP executor as an
--     smtp intent (pgcloud.http_request, written in the same transaction), so
--     retries with backoff, the dead letter after core.http_max_attempts and
--     crash recovery are the executor's; SMTP 4xx replies are retried, 5xx
--     are final. notification.on_http_result() records the outcome and emits
--     notification.sent or notification.dead_lettered.
-- The recipient's address comes from the read model fed by user.created.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('notification_unknown_event', 400, 'Notifications are not sent for this event type.', 'notification');

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('notification.email_from', '"pgcloud <noreply@pgcloud.invalid>"',
     'Sender of notification e-mails: the From field ("Name <address>" or an address); its address is the envelope sender.'),
    ('notification.operator_email', '""', 'Where platform.alert e-mails go (one address); empty: alerts only go to the pgcloud_operators channel.'),
    ('notification.email_default_enabled', 'true', 'Whether a user who never set preferences gets e-mail.');

-- Read model: the e-mail address of each user, from user.created.
CREATE TABLE notification.recipients (
    user_id    uuid PRIMARY KEY,
    email      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notification.recipients IS 'Read model fed by user.created: where a user''s e-mail goes.';
COMMENT ON COLUMN notification.recipients.user_id IS 'The user.';
COMMENT ON COLUMN notification.recipients.email IS 'The user''s address; NULL when the event carried none that is usable.';
COMMENT ON COLUMN notification.recipients.updated_at IS 'When the event was applied.';

CREATE TABLE notification.preferences (
    user_id       uuid PRIMARY KEY,
    email_enabled boolean NOT NULL,
    events        text[],
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notification.preferences IS 'Per-user e-mail preferences (api.set_notification_preferences); users without a row follow notification.email_default_enabled.';
COMMENT ON COLUMN notification.preferences.user_id IS 'The user.';
COMMENT ON COLUMN notification.preferences.email_enabled IS 'Whether the user gets e-mail at all.';
COMMENT ON COLUMN notification.preferences.events IS 'Event types that also send an e-mail (sorted, distinct); NULL: all of them. The channel notification is sent regardless.';
COMMENT ON COLUMN notification.preferences.updated_at IS 'When the preferences were last set.';

-- What each event type says, to whom. Placeholders {name} are filled from
-- the event payload and from derived values (notification.template_vars).
CREATE TABLE notification.templates (
    event_type text PRIMARY KEY,
    audience   text NOT NULL CHECK (audience IN ('user', 'operator')),
    subject    text NOT NULL,
    body       text NOT NULL
);
COMMENT ON TABLE notification.templates IS 'The events notification fans out and their wording: subject (e-mail) and body (e-mail and channel message), with {placeholders} from the event payload.';
COMMENT ON COLUMN notification.templates.event_type IS 'The event type.';
COMMENT ON COLUMN notification.templates.audience IS 'user (the user the event is about) or operator (notification.operator_email and the pgcloud_operators channel).';
COMMENT ON COLUMN notification.templates.subject IS 'E-mail subject template.';
COMMENT ON COLUMN notification.templates.body IS 'Message template (channel message and e-mail body).';

INSERT INTO notification.templates (event_type, audience, subject, body) VALUES
    ('user.created', 'user', 'Welcome to pgcloud',
     'Your pgcloud account is ready. Add an SSH key and create your first allocation.'),
    ('allocation.activated', 'user', 'Your allocation is active',
     'Allocation {allocation_id} ({sku}) is active on {node}.'),
    ('allocation.released', 'user', 'Your allocation was released',
     'Allocation {allocation_id} was released.'),
    ('allocation.failed', 'user', 'Your allocation failed',
     'Allocation {allocation_id} could not be provisioned. {reason}'),
    ('billing.low_balance', 'user', 'Your balance is low',
     'Your balance is {balance_display}, below {threshold_display}. Top up to keep your allocations running.'),
    ('account.standing_changed', 'user', 'Your account standing changed',
     'Your account standing is now {standing}.'),
    ('payment.succeeded', 'user', 'Payment received',
     'We received your payment of {amount_display}. Thank you.'),
    ('payment.refunded', 'user', 'Refund issued',
     'A refund of {amount_display} was issued to you.'),
    ('platform.alert', 'operator', 'pgcloud alert: {kind}',
     'Platform alert {kind}.' || E'\n\n' || '{details}');

CREATE TABLE notification.email_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE notification.email_transitions IS 'Allowed changes of notification.emails.state.';
COMMENT ON COLUMN notification.email_transitions.from_state IS 'State before; NULL lists the initial state.';
COMMENT ON COLUMN notification.email_transitions.to_state IS 'State after.';
INSERT INTO notification.email_transitions (from_state, to_state) VALUES
    (NULL, 'queued'), ('queued', 'retrying'), ('queued', 'sent'), ('queued', 'dead'),
    ('retrying', 'sent'), ('retrying', 'dead');

-- The e-mail outbox.
CREATE TABLE notification.emails (
    id          uuid PRIMARY KEY,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    user_id     uuid,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    intent_id   uuid NOT NULL UNIQUE,
    state       text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    last_status integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (event_id, recipient)
);
CREATE INDEX emails_state_idx ON notification.emails (state, created_at) WHERE state IN ('queued', 'retrying');
COMMENT ON TABLE notification.emails IS 'The e-mail outbox: one row per message, written with its smtp HTTP intent in the event''s transaction; the HTTP executor sends, retries and dead-letters it.';
COMMENT ON COLUMN notification.emails.id IS 'Message id (also the left part of its Message-ID).';
COMMENT ON COLUMN notification.emails.event_id IS 'The event that caused it.';
COMMENT ON COLUMN notification.emails.event_type IS 'Its type.';
COMMENT ON COLUMN notification.emails.user_id IS 'The user it went to; NULL for operator alerts.';
COMMENT ON COLUMN notification.emails.recipient IS 'Envelope recipient.';
COMMENT ON COLUMN notification.emails.subject IS 'Subject, as composed.';
COMMENT ON COLUMN notification.emails.intent_id IS 'The smtp intent in pgcloud.http_intents that carries it.';
COMMENT ON COLUMN notification.emails.state IS 'queued, retrying (a try failed, another is due), sent or dead.';
COMMENT ON COLUMN notification.emails.attempts IS 'Tries reported so far.';
COMMENT ON COLUMN notification.emails.last_status IS 'Last SMTP reply code (NULL: no reply, e.g. connection refused).';
COMMENT ON COLUMN notification.emails.created_at IS 'When it was queued.';
COMMENT ON COLUMN notification.emails.updated_at IS 'When its state last changed.';
COMMENT ON COLUMN notification.emails.sent_at IS 'When the relay accepted it.';

CREATE TRIGGER emails_state BEFORE INSERT OR UPDATE OF state ON notification.emails
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'notification.email_transitions');
