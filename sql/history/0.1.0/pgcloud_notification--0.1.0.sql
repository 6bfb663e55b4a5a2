-- pgcloud_notification install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_notification" to load this file. \quit

SELECT pgcloud.service_begin('notification');
-- source: sql/notification/00_notification.sql
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

-- source: sql/notification/10_events.sql
-- Events in: the read model, the channel notification and the e-mail.

CREATE FUNCTION notification.channel_for(user_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, notification
AS $$ SELECT 'pgcloud_user_' || replace(user_id::text, '-', '') $$;
COMMENT ON FUNCTION notification.channel_for(uuid) IS 'The LISTEN channel of a user: pgcloud_user_<user id without dashes>. Operators listen on pgcloud_operators.';

CREATE FUNCTION notification.is_address(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, notification
AS $$
    SELECT coalesce(length(address) <= 254 AND address ~ '^[\x21-\x7e]+$'
                    AND address ~ '^[^][<>(),;:"\\@]+@[^][<>(),;:"\\@]+$', false)
$$;
COMMENT ON FUNCTION notification.is_address(text) IS 'Whether text is a plain e-mail address: local@domain in printable ASCII (no SMTPUTF8), no spaces, brackets or line breaks, at most 254 characters.';

-- The user an event is about: payload user_id, else account_id (a uuid).
CREATE FUNCTION notification.user_of(payload jsonb) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, notification
AS $$
    SELECT CASE WHEN v ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
                THEN v::uuid END
      FROM (SELECT coalesce(payload ->> 'user_id', payload ->> 'account_id') AS v) s
$$;
COMMENT ON FUNCTION notification.user_of(jsonb) IS 'The user an event payload is about (user_id, else account_id), or NULL.';

CREATE FUNCTION notification.money(amount text, currency text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, notification
AS $$
    SELECT CASE WHEN amount ~ '^-?[0-9]{1,18}$'
                THEN to_char(amount::numeric / 100, 'FM999999999999999990.00')
                     || CASE WHEN currency ~ '^[A-Za-z]{3}$' THEN ' ' || upper(currency) ELSE '' END
           END
$$;
COMMENT ON FUNCTION notification.money(text, text) IS 'An amount in minor units as text for people, e.g. 1234 usd -> 12.34 USD.';

CREATE FUNCTION notification.template_vars(payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud, notification
AS $$
    SELECT coalesce((SELECT jsonb_object_agg(e.key, left(regexp_replace(e.value #>> '{}', '[[:cntrl:]]+', ' ', 'g'), 200))
                       FROM jsonb_each(payload) e
                      WHERE jsonb_typeof(e.value) IN ('string', 'number', 'boolean') AND length(e.key) <= 64),
                    '{}'::jsonb)
        || jsonb_strip_nulls(jsonb_build_object(
               'node', left(coalesce(payload ->> 'hostname', payload ->> 'node_hostname', payload ->> 'node'), 200),
               'amount_display', notification.money(payload ->> 'amount', payload ->> 'currency'),
               'balance_display', notification.money(payload ->> 'balance', payload ->> 'currency'),
               'threshold_display', notification.money(payload ->> 'threshold', payload ->> 'currency'),
               'details', left(pgcloud.sanitize(jsonb_pretty(payload)), 4000)))
$$;
COMMENT ON FUNCTION notification.template_vars(jsonb) IS 'Values a template may use: the payload''s scalar fields (one line, at most 200 characters) and node, amount_display, balance_display, threshold_display, details (the scrubbed payload).';

CREATE FUNCTION notification.render(template text, vars jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, notification
AS $$
DECLARE
    result text := '';
    rest text := template;
    m text[];
BEGIN
    -- One pass, left to right: a value that looks like a placeholder stays as it is.
    LOOP
        m := regexp_match(rest, '^(.*?)\{([a-z_][a-z0-9_]*)\}(.*)$', 's');
        EXIT WHEN m IS NULL;
        result := result || m[1] || coalesce(vars ->> m[2], '');
        rest := m[3];
    END LOOP;
    RETURN btrim(result || rest);
END
$$;
COMMENT ON FUNCTION notification.render(text, jsonb) IS 'Fills the {placeholders} of a template from vars (missing ones become empty).';

CREATE FUNCTION notification.notify_payload(event_type text, event_id uuid, payload jsonb, message text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    ids jsonb;
    out text;
BEGIN
    SELECT coalesce(jsonb_object_agg(s.key, s.val), '{}'::jsonb) INTO ids
      FROM (SELECT e.key, left(e.value #>> '{}', 64) AS val FROM jsonb_each(payload) e
             WHERE e.key ~ '^[a-z][a-z0-9_]{0,60}_id$' AND e.key NOT IN ('user_id', 'account_id')
               AND jsonb_typeof(e.value) IN ('string', 'number')
             ORDER BY e.key LIMIT 10) s;
    out := jsonb_build_object('type', event_type, 'event_id', event_id, 'occurred_at', now(), 'ids', ids,
                              'message', left(pgcloud.sanitize(coalesce(message, '')), 1000))::text;
    IF octet_length(out) > 7999 THEN      -- NOTIFY's limit is 8000 bytes
        out := jsonb_build_object('type', event_type, 'event_id', event_id, 'occurred_at', now(), 'ids', '{}'::jsonb,
                                  'message', left(pgcloud.sanitize(coalesce(message, '')), 200))::text;
    END IF;
    RETURN out;
END
$$;
COMMENT ON FUNCTION notification.notify_payload(text, uuid, jsonb, text) IS 'The NOTIFY payload of an event: {type, event_id, occurred_at, ids (the payload''s *_id fields), message (scrubbed, at most 1000 characters)}, always under 8000 bytes, never the payload itself.';

CREATE FUNCTION notification.wants_email(user_id uuid, event_type text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, notification
AS $$
    SELECT coalesce((SELECT p.email_enabled AND (p.events IS NULL OR wants_email.event_type = ANY (p.events))
                       FROM notification.preferences p WHERE p.user_id = wants_email.user_id),
                    pgcloud.policy('notification.email_default_enabled', NULL::boolean))
$$;
COMMENT ON FUNCTION notification.wants_email(uuid, text) IS 'Whether a user''s preferences ask for an e-mail for an event type (no preferences: notification.email_default_enabled).';

CREATE FUNCTION notification.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                      payload jsonb, headers jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    tpl notification.templates;
    uid uuid;
    vars jsonb;
    message text;
    address text;
BEGIN
    SELECT * INTO tpl FROM notification.templates t WHERE t.event_type = on_event.event_type;
    IF NOT FOUND OR payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN;                          -- not ours: ignore
    END IF;
    vars := notification.template_vars(payload);
    message := notification.render(tpl.body, vars);

    IF tpl.audience = 'operator' THEN
        PERFORM pg_notify('pgcloud_operators', notification.notify_payload(on_event.event_type, on_event.event_id,
                                                                           payload, message));
        address := pgcloud.policy('notification.operator_email', NULL::text);
        IF notification.is_address(address) THEN
            PERFORM notification.queue_email(on_event.event_id, on_event.event_type, NULL, address,
                                             notification.render(tpl.subject, vars), message);
        END IF;
        RETURN;
    END IF;

    uid := notification.user_of(payload);
    IF uid IS NULL THEN
        RETURN;
    END IF;
    IF on_event.event_type = 'user.created' THEN
        INSERT INTO notification.recipients AS r (user_id, email, updated_at)
        VALUES (uid, CASE WHEN notification.is_address(payload ->> 'email') THEN payload ->> 'email' END, now())
        ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at;
    END IF;
    PERFORM pg_notify(notification.channel_for(uid),
                      notification.notify_payload(on_event.event_type, on_event.event_id, payload, message));
    IF notification.wants_email(uid, on_event.event_type) THEN
        SELECT r.email INTO address FROM notification.recipients r WHERE r.user_id = uid;
        IF notification.is_address(address) THEN
            PERFORM notification.queue_email(on_event.event_id, on_event.event_type, uid, address,
                                             notification.render(tpl.subject, vars),
                                             message || E'\n\n-- \n'
                                             || 'You get this e-mail because of your pgcloud notification preferences.');
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION notification.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row): keeps the recipients read model (user.created), NOTIFYs the user''s channel (or pgcloud_operators for platform.alert) and queues an e-mail when the preferences want one. Other event types are ignored.';

-- source: sql/notification/20_email.sql
-- E-mail out: compose, queue with its smtp intent, record the outcome.

CREATE FUNCTION notification.compose_email(from_header text, recipient text, subject text, body text,
                                           message_id text, sent_at timestamptz) RETURNS text
LANGUAGE C IMMUTABLE
AS 'MODULE_PATHNAME', 'pgcloud_notification_compose_email';
COMMENT ON FUNCTION notification.compose_email(text, text, text, text, text, timestamptz) IS 'The RFC 5322 message (CRLF lines): From, To, Subject (RFC 2047 when not ASCII; line breaks removed), Date, Message-ID <message_id@sender domain>, MIME text/plain UTF-8 (7bit, or base64 when needed). Refuses header values with line breaks.';

CREATE FUNCTION notification.queue_email(event_id uuid, event_type text, user_id uuid, recipient text,
                                         subject text, body text) RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    email_id uuid := gen_random_uuid();
    sender text := btrim(pgcloud.policy('notification.email_from', NULL::text));
    envelope text;
    intent uuid;
BEGIN
    IF EXISTS (SELECT 1 FROM notification.emails e
                WHERE e.event_id = queue_email.event_id AND e.recipient = queue_email.recipient) THEN
        RETURN NULL;
    END IF;
    envelope := coalesce(substring(sender FROM '<([^<>]+)>$'), sender);
    IF NOT notification.is_address(envelope) THEN
        RAISE EXCEPTION 'policy notification.email_from holds no usable sender address'
            USING HINT = 'Set it with pgcloud.set_policy(''notification.email_from'', ''"pgcloud <noreply@example.com>"'').';
    END IF;
    intent := pgcloud.http_request(
        'smtp', 'SEND', recipient,
        notification.compose_email(sender, recipient, subject, body, email_id::text, now()),
        NULL, jsonb_build_object('mail_from', envelope), NULL,
        'notification.on_http_result(uuid, integer, jsonb, text, jsonb, boolean)'::regprocedure,
        jsonb_build_object('email_id', email_id));
    INSERT INTO notification.emails (id, event_id, event_type, user_id, recipient, subject, intent_id, state)
    VALUES (email_id, queue_email.event_id, queue_email.event_type, queue_email.user_id, recipient,
            left(subject, 900), intent, 'queued');
    RETURN email_id;
END
$$;
COMMENT ON FUNCTION notification.queue_email(uuid, text, uuid, text, text, text) IS 'Puts an e-mail in the outbox together with its smtp intent (sender from notification.email_from); at most one per event and recipient. Returns its id, or NULL when it was already queued.';

CREATE FUNCTION notification.on_http_result(intent_id uuid, status integer, response_headers jsonb,
                                            response_body text, context jsonb, final boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    e notification.emails;
BEGIN
    SELECT * INTO e FROM notification.emails m
     WHERE m.id = (context ->> 'email_id')::uuid AND m.intent_id = on_http_result.intent_id
     FOR UPDATE;
    IF NOT FOUND OR e.state IN ('sent', 'dead') THEN
        RETURN;
    END IF;
    IF NOT final THEN
        UPDATE notification.emails m SET state = 'retrying', attempts = m.attempts + 1, last_status = status,
               updated_at = now()
         WHERE m.id = e.id;
        RETURN;
    END IF;
    IF status BETWEEN 200 AND 399 THEN
        UPDATE notification.emails m SET state = 'sent', attempts = m.attempts + 1, last_status = status,
               sent_at = now(), updated_at = now()
         WHERE m.id = e.id;
        PERFORM pgcloud.emit('notification.sent', 'email', e.id::text,
            jsonb_build_object('email_id', e.id, 'event_id', e.event_id, 'event_type', e.event_type,
                               'user_id', e.user_id));
    ELSE
        UPDATE notification.emails m SET state = 'dead', attempts = m.attempts + 1, last_status = status,
               updated_at = now()
         WHERE m.id = e.id;
        PERFORM pgcloud.emit('notification.dead_lettered', 'email', e.id::text,
            jsonb_build_object('email_id', e.id, 'event_id', e.event_id, 'event_type', e.event_type,
                               'user_id', e.user_id, 'status', status, 'attempts', e.attempts + 1));
    END IF;
END
$$;
COMMENT ON FUNCTION notification.on_http_result(uuid, integer, jsonb, text, jsonb, boolean) IS 'Callback of the e-mail intents (run by the HTTP executor as this service): a failed try marks the e-mail retrying; the final outcome marks it sent (notification.sent) or dead (notification.dead_lettered).';

-- source: sql/notification/30_api.sql
-- Public API: the caller's notification preferences.

CREATE FUNCTION notification.preferences_of(user_id uuid) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud, notification
AS $$
    SELECT jsonb_build_object(
        'email_enabled', coalesce(p.email_enabled, pgcloud.policy('notification.email_default_enabled', NULL::boolean)),
        'events', to_jsonb(p.events),
        'available_events', (SELECT jsonb_agg(t.event_type ORDER BY t.event_type)
                               FROM notification.templates t WHERE t.audience = 'user'),
        'channel', notification.channel_for(preferences_of.user_id))
      FROM (SELECT 1) one
      LEFT JOIN notification.preferences p ON p.user_id = preferences_of.user_id
$$;
COMMENT ON FUNCTION notification.preferences_of(uuid) IS 'A user''s preferences as returned by the API: email_enabled, events (NULL: all), available_events, channel.';

CREATE FUNCTION notification.request_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    uid uuid := pgcloud.user_id();
BEGIN
    IF uid IS NULL THEN
        PERFORM pgcloud.raise('invalid_request_context', 'this call needs a user: the JWT has no sub claim');
    END IF;
    RETURN uid;
END
$$;
COMMENT ON FUNCTION notification.request_user() IS 'The calling user (JWT sub); invalid_request_context when there is none.';

CREATE FUNCTION notification.set_preferences_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    uid uuid := notification.request_user();
    enabled boolean;
    evs text[];
    bad text[];
BEGIN
    IF jsonb_typeof(args -> 'email_enabled') IS DISTINCT FROM 'boolean' THEN
        PERFORM pgcloud.raise('invalid_argument', 'email_enabled must be true or false');
    END IF;
    enabled := (args ->> 'email_enabled')::boolean;
    IF args -> 'events' IS NOT NULL AND jsonb_typeof(args -> 'events') <> 'null' THEN
        SELECT array_agg(DISTINCT x ORDER BY x) FILTER (WHERE x IS NOT NULL),
               array_agg(coalesce(x, 'null')) FILTER (WHERE x IS NULL OR x NOT IN
                   (SELECT t.event_type FROM notification.templates t WHERE t.audience = 'user'))
          INTO evs, bad
          FROM jsonb_array_elements_text(args -> 'events') x;
        IF bad IS NOT NULL THEN
            PERFORM pgcloud.raise('notification_unknown_event',
                format('no notifications for: %s', array_to_string(bad, ', ')),
                'available_events in api.notification_preferences() lists the event types.');
        END IF;
        evs := coalesce(evs, '{}');
    END IF;
    INSERT INTO notification.preferences AS p (user_id, email_enabled, events, updated_at)
    VALUES (uid, enabled, evs, now())
    ON CONFLICT (user_id) DO UPDATE SET email_enabled = excluded.email_enabled, events = excluded.events,
                                        updated_at = excluded.updated_at;
    PERFORM pgcloud.audit('notification.preferences_set', 'user', uid::text, 'ok',
                          jsonb_build_object('email_enabled', enabled, 'events', to_jsonb(evs)));
    RETURN notification.preferences_of(uid);
END
$$;
COMMENT ON FUNCTION notification.set_preferences_apply(jsonb) IS 'Internal to api.set_notification_preferences(): validates and stores {email_enabled, events}, audited as notification.preferences_set.';

CREATE FUNCTION api.notification_preferences() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN notification.preferences_of(notification.request_user());
END
$$;
COMMENT ON FUNCTION api.notification_preferences() IS 'Your notification preferences: email_enabled, events (the event types that also send an e-mail; null means all), available_events, and channel (the LISTEN channel a WebSocket gateway subscribes to for you).';

CREATE FUNCTION api.set_notification_preferences(email_enabled boolean, events text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('notification.set_preferences',
                              jsonb_build_object('email_enabled', email_enabled, 'events', to_jsonb(events)),
                              'notification.set_preferences_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.set_notification_preferences(boolean, text[]) IS 'Sets your notification preferences: email_enabled (false: no e-mail at all) and events (the event types that also send an e-mail; null: all of them; see available_events). Channel notifications are always sent. Audited; safe to retry with X-Idempotency-Key. Returns the preferences.';

GRANT EXECUTE ON FUNCTION api.notification_preferences(), api.set_notification_preferences(boolean, text[])
    TO pgcloud_user, pgcloud_admin;

-- source: sql/notification/40_operators.sql
-- Operators: the e-mail outbox at a glance (the HTTP side is pgcloud.http_intents_status).

CREATE VIEW notification.email_outbox_status AS
    SELECT count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'retrying') AS retrying,
           count(*) FILTER (WHERE state = 'sent') AS sent,
           count(*) FILTER (WHERE state = 'dead') AS dead,
           min(created_at) FILTER (WHERE state IN ('queued', 'retrying')) AS oldest_unsent_at,
           coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE state IN ('queued', 'retrying'))),
                    0)::numeric(12, 3) AS oldest_unsent_seconds,
           max(sent_at) AS last_sent_at,
           max(updated_at) FILTER (WHERE state = 'dead') AS last_dead_at
      FROM notification.emails;
COMMENT ON VIEW notification.email_outbox_status IS 'Operators: e-mails queued, being retried, sent and dead; the oldest unsent one and its age.';
COMMENT ON COLUMN notification.email_outbox_status.queued IS 'E-mails not tried yet.';
COMMENT ON COLUMN notification.email_outbox_status.retrying IS 'E-mails whose last try failed and that will be tried again.';
COMMENT ON COLUMN notification.email_outbox_status.sent IS 'E-mails the relay accepted.';
COMMENT ON COLUMN notification.email_outbox_status.dead IS 'E-mails given up (refused with 5xx, or retries exhausted).';
COMMENT ON COLUMN notification.email_outbox_status.oldest_unsent_at IS 'When the oldest unsent e-mail was queued.';
COMMENT ON COLUMN notification.email_outbox_status.oldest_unsent_seconds IS 'Its age in seconds (0 when none).';
COMMENT ON COLUMN notification.email_outbox_status.last_sent_at IS 'When an e-mail was last accepted.';
COMMENT ON COLUMN notification.email_outbox_status.last_dead_at IS 'When an e-mail was last given up.';

CREATE VIEW notification.dead_emails AS
    SELECT e.id, e.event_type, e.user_id, e.recipient, e.subject, e.attempts, e.last_status, e.intent_id,
           e.created_at, e.updated_at AS dead_at
      FROM notification.emails e
     WHERE e.state = 'dead'
     ORDER BY e.updated_at DESC
     LIMIT 100;
COMMENT ON VIEW notification.dead_emails IS 'Operators: the 100 most recent dead e-mails (the error is in pgcloud.http_intents.last_error of intent_id).';
COMMENT ON COLUMN notification.dead_emails.id IS 'E-mail id.';
COMMENT ON COLUMN notification.dead_emails.event_type IS 'Event that caused it.';
COMMENT ON COLUMN notification.dead_emails.user_id IS 'User (NULL: operator alert).';
COMMENT ON COLUMN notification.dead_emails.recipient IS 'Recipient address.';
COMMENT ON COLUMN notification.dead_emails.subject IS 'Subject.';
COMMENT ON COLUMN notification.dead_emails.attempts IS 'Tries.';
COMMENT ON COLUMN notification.dead_emails.last_status IS 'Last SMTP reply code.';
COMMENT ON COLUMN notification.dead_emails.intent_id IS 'The smtp intent (its last_error says why).';
COMMENT ON COLUMN notification.dead_emails.created_at IS 'When it was queued.';
COMMENT ON COLUMN notification.dead_emails.dead_at IS 'When it was given up.';

SELECT pgcloud.service_end('notification');
