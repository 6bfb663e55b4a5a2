-- Events in: the read model, the channel notification and the e-mail. One
-- handler per subscribed event type, notification.on_<type>(pgcloud.event_envelope),
-- each handing the event to notification.fan_out(), called by the core's
-- delivery with the inbox row in the same transaction.

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

CREATE FUNCTION notification.fan_out(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    payload jsonb := event.payload;
    tpl notification.templates;
    uid uuid;
    vars jsonb;
    message text;
    address text;
BEGIN
    SELECT * INTO tpl FROM notification.templates t WHERE t.event_type = event.event_type;
    IF NOT FOUND THEN
        RETURN;                          -- no template (an operator removed it): nothing to send
    END IF;
    vars := notification.template_vars(payload);
    message := notification.render(tpl.body, vars);

    IF tpl.audience = 'operator' THEN
        PERFORM pg_notify('pgcloud_operators', notification.notify_payload(event.event_type, event.event_id,
                                                                           payload, message));
        address := pgcloud.policy('notification.operator_email', NULL::text);
        IF notification.is_address(address) THEN
            PERFORM notification.queue_email(event.event_id, event.event_type, NULL, address,
                                             notification.render(tpl.subject, vars), message);
        END IF;
        RETURN;
    END IF;

    uid := notification.user_of(payload);
    IF uid IS NULL THEN
        RETURN;
    END IF;
    IF event.event_type = 'user.created' THEN
        INSERT INTO notification.recipients AS r (user_id, email, updated_at)
        VALUES (uid, CASE WHEN notification.is_address(payload ->> 'email') THEN payload ->> 'email' END, now())
        ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at;
    END IF;
    PERFORM pg_notify(notification.channel_for(uid),
                      notification.notify_payload(event.event_type, event.event_id, payload, message));
    IF notification.wants_email(uid, event.event_type) THEN
        SELECT r.email INTO address FROM notification.recipients r WHERE r.user_id = uid;
        IF notification.is_address(address) THEN
            PERFORM notification.queue_email(event.event_id, event.event_type, uid, address,
                                             notification.render(tpl.subject, vars),
                                             message || E'\n\n-- \n'
                                             || 'You get this e-mail because of your pgcloud notification preferences.');
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION notification.fan_out(pgcloud.event_envelope) IS 'Fans one event out by its template: keeps the recipients read model (user.created), NOTIFYs the user''s channel (or pgcloud_operators for an operator template such as platform.alert) and queues an e-mail when the preferences want one. Nothing without a template.';

CREATE FUNCTION notification.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_allocation_activated(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_allocation_activated(pgcloud.event_envelope) IS 'Event handler of allocation.activated: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_allocation_released(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_allocation_released(pgcloud.event_envelope) IS 'Event handler of allocation.released: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_allocation_failed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_allocation_failed(pgcloud.event_envelope) IS 'Event handler of allocation.failed: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_billing_low_balance(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_billing_low_balance(pgcloud.event_envelope) IS 'Event handler of billing.low_balance: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_account_standing_changed(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_account_standing_changed(pgcloud.event_envelope) IS 'Event handler of account.standing_changed: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_payment_succeeded(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_payment_succeeded(pgcloud.event_envelope) IS 'Event handler of payment.succeeded: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_payment_refunded(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_payment_refunded(pgcloud.event_envelope) IS 'Event handler of payment.refunded: notification.fan_out() by its template.';

CREATE FUNCTION notification.on_platform_alert(event pgcloud.event_envelope) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$ SELECT notification.fan_out(event) $$;
COMMENT ON FUNCTION notification.on_platform_alert(pgcloud.event_envelope) IS 'Event handler of platform.alert: notification.fan_out() by its template.';
