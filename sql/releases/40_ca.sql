-- The platform SSH CA: generated on first use, rotated by operators.

CREATE FUNCTION releases.ca_current() RETURNS releases.ssh_ca_keys
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    c releases.ssh_ca_keys;
BEGIN
    SELECT * INTO c FROM releases.ssh_ca_keys k WHERE k.retired_at IS NULL;
    IF FOUND THEN
        RETURN c;
    END IF;
    -- First use: one transaction generates, the others wait and then read it.
    PERFORM pg_advisory_xact_lock(hashtextextended('releases.ssh_ca', 0));
    SELECT * INTO c FROM releases.ssh_ca_keys k WHERE k.retired_at IS NULL;
    IF FOUND THEN
        RETURN c;
    END IF;
    INSERT INTO releases.ssh_ca_keys (public_key, fingerprint, public_blob, private_sealed)
    SELECT g.public_key, g.fingerprint, g.public_blob, g.private_sealed FROM releases.ca_generate() g
    RETURNING * INTO c;
    PERFORM pgcloud.audit('ssh_ca.created', 'ssh_ca', c.id::text, 'ok', jsonb_build_object('fingerprint', c.fingerprint));
    RETURN c;
END
$$;
COMMENT ON FUNCTION releases.ca_current() IS 'The current CA key; generates it (Ed25519, sealed, audited as ssh_ca.created) on first use.';

CREATE FUNCTION api.ssh_ca_public_key() RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    c releases.ssh_ca_keys;
BEGIN
    PERFORM pgcloud.authorize('anon');
    c := releases.ca_current();
    RETURN c.public_key;
END
$$;
COMMENT ON FUNCTION api.ssh_ca_public_key() IS 'The platform SSH CA public key, one authorized_keys line ("ssh-ed25519 AAAA... pgcloud-ssh-ca"), for the TrustedUserCAKeys file of nodes. Anyone may call it (POST: the key is generated on first use).';
SELECT pgcloud.expose('api.ssh_ca_public_key()', 'anon', 'user', 'admin', 'service');

CREATE FUNCTION releases.rotate_ssh_ca_apply() RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    old releases.ssh_ca_keys;
    c releases.ssh_ca_keys;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('releases.ssh_ca', 0));
    UPDATE releases.ssh_ca_keys k SET retired_at = now() WHERE k.retired_at IS NULL RETURNING * INTO old;
    INSERT INTO releases.ssh_ca_keys (public_key, fingerprint, public_blob, private_sealed)
    SELECT g.public_key, g.fingerprint, g.public_blob, g.private_sealed FROM releases.ca_generate() g
    RETURNING * INTO c;
    PERFORM pgcloud.audit('ssh_ca.rotated', 'ssh_ca', c.id::text, 'ok',
        jsonb_build_object('fingerprint', c.fingerprint, 'previous_fingerprint', old.fingerprint));
    RETURN jsonb_build_object('public_key', c.public_key, 'fingerprint', c.fingerprint,
                              'previous_fingerprint', old.fingerprint, 'created_at', c.created_at);
END
$$;
COMMENT ON FUNCTION releases.rotate_ssh_ca_apply() IS 'Internal to api.admin_rotate_ssh_ca() (which authorizes): retires the current CA key and generates a new one; audited as ssh_ca.rotated.';

CREATE FUNCTION api.admin_rotate_ssh_ca() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(pgcloud.idempotent('releases.rotate_ssh_ca', '{}'::jsonb),
                    pgcloud.idempotent_done('releases.rotate_ssh_ca', releases.rotate_ssh_ca_apply()));
END
$$;
COMMENT ON FUNCTION api.admin_rotate_ssh_ca() IS 'Operators: replaces the SSH CA key (the old one signs nothing more; certificates it signed stay valid only on nodes that still trust it, at most releases.cert_ttl_seconds). Returns {public_key, fingerprint, previous_fingerprint, created_at}; nodes must fetch api.ssh_ca_public_key() again. Audited; safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.admin_rotate_ssh_ca()', 'admin');
