-- The read model: user.created.

CREATE FUNCTION storage.on_user_created(aggregate_id text, payload jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, storage
AS $$
DECLARE
    v text := coalesce(payload ->> 'user_id', aggregate_id);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'payload field user_id must be a uuid');
    END IF;
    INSERT INTO storage.users AS u (user_id, email) VALUES (v::uuid, payload ->> 'email')
    ON CONFLICT (user_id) DO UPDATE SET email = coalesce(excluded.email, u.email);
END
$$;
COMMENT ON FUNCTION storage.on_user_created(text, jsonb) IS 'user.created: records the user in storage.users.';

CREATE FUNCTION storage.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                 payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, storage
AS $$
BEGIN
    IF event_type = 'user.created' THEN
        PERFORM storage.on_user_created(aggregate_id, payload);
    END IF;
END
$$;
COMMENT ON FUNCTION storage.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created goes to storage.on_user_created(). Other types are ignored.';

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
