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

CREATE FUNCTION notification.set_preferences_apply(p_email_enabled boolean, p_events text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, notification
AS $$
DECLARE
    uid uuid := notification.request_user();
    enabled boolean := p_email_enabled;
    evs text[];
    bad text[];
BEGIN
    IF enabled IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'email_enabled must be true or false');
    END IF;
    IF p_events IS NOT NULL THEN
        SELECT array_agg(DISTINCT x ORDER BY x) FILTER (WHERE x IS NOT NULL),
               array_agg(coalesce(x, 'null')) FILTER (WHERE x IS NULL OR x NOT IN
                   (SELECT t.event_type FROM notification.templates t WHERE t.audience = 'user'))
          INTO evs, bad
          FROM unnest(p_events) x;
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
COMMENT ON FUNCTION notification.set_preferences_apply(boolean, text[]) IS 'Internal to api.set_notification_preferences() (which authorizes): validates and stores the caller''s email_enabled and events, audited as notification.preferences_set.';

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
SELECT pgcloud.expose('api.notification_preferences()', 'user', 'admin');

CREATE FUNCTION api.set_notification_preferences(email_enabled boolean, events text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, notification
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(
        pgcloud.idempotent('notification.set_preferences',
                           jsonb_build_object('email_enabled', email_enabled, 'events', to_jsonb(events))),
        pgcloud.idempotent_done('notification.set_preferences',
                                notification.set_preferences_apply(email_enabled, events)));
END
$$;
COMMENT ON FUNCTION api.set_notification_preferences(boolean, text[]) IS 'Sets your notification preferences: email_enabled (false: no e-mail at all) and events (the event types that also send an e-mail; null: all of them; see available_events). Channel notifications are always sent. Audited; safe to retry with X-Idempotency-Key. Returns the preferences.';
SELECT pgcloud.expose('api.set_notification_preferences(boolean, text[])', 'user', 'admin');

