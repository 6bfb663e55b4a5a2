-- SSH public keys: add, list, delete (per user, row-level security).

CREATE FUNCTION releases.key_json(k releases.ssh_keys) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
    SELECT jsonb_build_object('id', k.id, 'name', k.name, 'type', k.key_type, 'bits', k.bits,
                              'fingerprint', k.fingerprint, 'public_key', k.public_key,
                              'created_at', k.created_at)
$$;
COMMENT ON FUNCTION releases.key_json(releases.ssh_keys) IS 'The API form of a key: id, name, type, bits, fingerprint, public_key, created_at.';

CREATE FUNCTION releases.add_ssh_key_apply(p_public_key text, p_name text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    k record;
    key_name text := p_name;
    max_keys integer := pgcloud.policy('releases.max_keys_per_user', NULL::integer);
    n integer;
    r releases.ssh_keys;
BEGIN
    SELECT * INTO k FROM releases.parse_key(p_public_key);
    IF key_name IS NOT NULL THEN
        key_name := btrim(key_name);
        IF key_name = '' OR length(key_name) > 100 OR key_name ~ '[[:cntrl:]]' THEN
            PERFORM pgcloud.raise('invalid_argument', 'name must be 1 to 100 characters without control characters');
        END IF;
    ELSIF k.comment IS NOT NULL THEN
        key_name := left(regexp_replace(k.comment, '[[:cntrl:]]', '', 'g'), 100);
    END IF;

    -- One user's adds are serialised: the limit and the duplicate check hold.
    PERFORM pg_advisory_xact_lock(hashtextextended('releases.ssh_keys/' || v_user::text, 0));
    IF EXISTS (SELECT 1 FROM releases.ssh_keys s WHERE s.user_id = v_user AND s.fingerprint = k.fingerprint) THEN
        PERFORM pgcloud.raise('ssh_key_duplicate', format('a key with fingerprint %s is already registered', k.fingerprint),
                              'List your keys with api.list_ssh_keys().');
    END IF;
    SELECT count(*) INTO n FROM releases.ssh_keys s WHERE s.user_id = v_user;
    IF n >= max_keys THEN
        PERFORM pgcloud.raise('ssh_key_limit_reached', format('at most %s keys per user', max_keys),
                              'Delete a key you no longer use with api.delete_ssh_key(id).');
    END IF;

    INSERT INTO releases.ssh_keys (user_id, name, key_type, bits, fingerprint, public_key)
    VALUES (v_user, key_name, k.key_type, k.bits, k.fingerprint, k.canonical_key)
    RETURNING * INTO r;

    PERFORM pgcloud.audit('ssh_key.added', 'ssh_key', r.id::text, 'ok',
        jsonb_build_object('fingerprint', r.fingerprint, 'type', r.key_type, 'bits', r.bits, 'name', r.name));
    PERFORM pgcloud.emit('ssh_key.added', 'ssh_key', r.id::text,
        jsonb_build_object('id', r.id, 'user_id', r.user_id, 'name', r.name, 'type', r.key_type, 'bits', r.bits,
                           'fingerprint', r.fingerprint, 'public_key', r.public_key, 'created_at', r.created_at));
    RETURN jsonb_build_object('id', r.id, 'fingerprint', r.fingerprint, 'type', r.key_type, 'bits', r.bits,
                              'name', r.name, 'created_at', r.created_at);
END
$$;
COMMENT ON FUNCTION releases.add_ssh_key_apply(text, text) IS 'Internal to api.add_ssh_key() (which authorizes): validates and stores the caller''s public key under a name; audited and announced as ssh_key.added.';

CREATE FUNCTION api.add_ssh_key(public_key text, name text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('releases.add_ssh_key', jsonb_build_object('public_key', public_key, 'name', name)),
                    pgcloud.idempotent_done('releases.add_ssh_key', releases.add_ssh_key_apply(public_key, name)));
END
$$;
COMMENT ON FUNCTION api.add_ssh_key(text, text) IS 'Registers an SSH public key (one authorized_keys line: ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 2048 bits, without options). Returns {id, fingerprint, type, bits, name, created_at}; the fingerprint is the one ssh-keygen -l prints. A key already registered is 409 ssh_key_duplicate; at most releases.max_keys_per_user keys. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.add_ssh_key(text, text)', 'user', 'admin');

CREATE FUNCTION api.list_ssh_keys() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := pgcloud.require_user();
    RETURN coalesce((SELECT jsonb_agg(releases.key_json(k) ORDER BY k.created_at, k.id)
                       FROM releases.ssh_keys k WHERE k.user_id = v_user), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_ssh_keys() IS 'Your SSH public keys, oldest first: [{id, name, type, bits, fingerprint, public_key, created_at}].';
SELECT pgcloud.expose('api.list_ssh_keys()', 'user', 'admin');

CREATE FUNCTION releases.delete_ssh_key_apply(p_id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := pgcloud.require_user();
    key_id uuid := p_id;
    r releases.ssh_keys;
BEGIN
    IF key_id IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'id is required');
    END IF;
    -- Row-level security hides other users' keys: theirs are "not found" too.
    DELETE FROM releases.ssh_keys s WHERE s.id = key_id AND s.user_id = v_user RETURNING * INTO r;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('ssh_key_not_found', format('no SSH key %s', key_id));
    END IF;
    PERFORM pgcloud.audit('ssh_key.deleted', 'ssh_key', r.id::text, 'ok',
        jsonb_build_object('fingerprint', r.fingerprint, 'type', r.key_type));
    PERFORM pgcloud.emit('ssh_key.deleted', 'ssh_key', r.id::text,
        jsonb_build_object('id', r.id, 'user_id', r.user_id, 'fingerprint', r.fingerprint));
    RETURN jsonb_build_object('id', r.id, 'fingerprint', r.fingerprint, 'deleted', true);
END
$$;
COMMENT ON FUNCTION releases.delete_ssh_key_apply(uuid) IS 'Internal to api.delete_ssh_key() (which authorizes): deletes the caller''s key; audited and announced as ssh_key.deleted.';

CREATE FUNCTION api.delete_ssh_key(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN coalesce(pgcloud.idempotent('releases.delete_ssh_key', jsonb_build_object('id', id)),
                    pgcloud.idempotent_done('releases.delete_ssh_key', releases.delete_ssh_key_apply(id)));
END
$$;
COMMENT ON FUNCTION api.delete_ssh_key(uuid) IS 'Deletes one of your SSH keys; returns {id, fingerprint, deleted}. Another user''s key or an unknown id is 404 ssh_key_not_found. Safe to retry with X-Idempotency-Key.';
SELECT pgcloud.expose('api.delete_ssh_key(uuid)', 'user', 'admin');
