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
