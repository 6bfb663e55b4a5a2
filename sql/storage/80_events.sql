-- The read model: user.created, one handler per subscribed event type,
-- storage.on_<type>(pgcloud.event_envelope), called by the core's delivery
-- with the inbox row in the same transaction.

CREATE FUNCTION storage.on_user_created(event pgcloud.event_envelope) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    payload jsonb := event.payload;
    aggregate_id text := event.aggregate_id;
    v text := coalesce(payload ->> 'user_id', aggregate_id);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field user_id must be a uuid');
    END IF;
    INSERT INTO storage.users AS u (user_id, email) VALUES (v::uuid, payload ->> 'email')
    ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, u.email);
END
$$;
COMMENT ON FUNCTION storage.on_user_created(pgcloud.event_envelope) IS 'Event handler of user.created: records the user in storage.users.';

-- Operators.
CREATE VIEW storage.namespace_usage AS
    SELECT n.id, n.owner_id, u.email, n.name, n.created_at, x.objects, x.bytes,
           (SELECT count(*) FROM storage.objects o WHERE o.namespace_id = n.id AND o.state = 'pending') AS pending,
           (SELECT count(*) FROM storage.objects o WHERE o.namespace_id = n.id AND o.state = 'missing') AS missing
      FROM storage.namespaces n
      LEFT JOIN storage.users u ON u.user_id = n.owner_id
     CROSS JOIN LATERAL storage.usage(n.id) x
     WHERE n.deleted_at IS NULL;
COMMENT ON VIEW storage.namespace_usage IS 'Operators: every live namespace with its owner and what it holds.';
COMMENT ON COLUMN storage.namespace_usage.id IS 'Namespace id.';
COMMENT ON COLUMN storage.namespace_usage.owner_id IS 'Owner.';
COMMENT ON COLUMN storage.namespace_usage.email IS 'Owner''s e-mail (read model).';
COMMENT ON COLUMN storage.namespace_usage.name IS 'Name.';
COMMENT ON COLUMN storage.namespace_usage.created_at IS 'Created.';
COMMENT ON COLUMN storage.namespace_usage.objects IS 'Objects pending or stored.';
COMMENT ON COLUMN storage.namespace_usage.bytes IS 'Bytes stored.';
COMMENT ON COLUMN storage.namespace_usage.pending IS 'Objects waiting for confirmation.';
COMMENT ON COLUMN storage.namespace_usage.missing IS 'Objects never uploaded.';
