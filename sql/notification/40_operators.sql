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
