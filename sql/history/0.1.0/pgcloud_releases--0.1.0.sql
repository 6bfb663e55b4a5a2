-- pgcloud_releases install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_releases" to load this file. \quit

SELECT pgcloud.service_begin('releases');
-- source: sql/releases/00_catalogue.sql
-- pgcloud_releases: SSH public keys and short-lived OpenSSH access certificates.
-- Schema releases, owned by pgcloud_svc_releases (created by pgcloud.service_begin).
--
-- Decisions (see also src/releases/README.md):
--   * Keys are one OpenSSH authorized_keys line: ssh-ed25519,
--     ecdsa-sha2-nistp256/384/521 (uncompressed point) or ssh-rsa of 2048 to
--     16384 bits, parsed and validated in C (src/releases/sshkey.c).
--   * authorized_keys options in front of the key (command="...", from=...,
--     no-pty) are rejected, not stripped: a user who wrote a restriction must
--     not believe it is enforced. Access is bounded by the certificate instead.
--   * Certificates carry no critical options (no source-address: the platform
--     does not know where users connect from) and the OpenSSH default user
--     extensions, from policy releases.cert_extensions.

-- Error catalogue. allocation_not_found and allocation_not_active name
-- allocation states another service may catalogue too: the first install
-- wins, the meaning is the same.
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('ssh_key_invalid',             400, 'The SSH public key is not valid.', 'releases'),
    ('ssh_key_type_unsupported',    400, 'This SSH key type is not supported: use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 2048 bits.', 'releases'),
    ('ssh_key_too_weak',            400, 'The SSH key is too weak.', 'releases'),
    ('ssh_key_options_unsupported', 400, 'authorized_keys options are not accepted; give the key alone.', 'releases'),
    ('ssh_key_not_found',           404, 'The SSH key does not exist.', 'releases'),
    ('ssh_key_duplicate',           409, 'This SSH key is already registered to your account.', 'releases'),
    ('ssh_key_limit_reached',       409, 'You have registered the maximum number of SSH keys.', 'releases'),
    ('posix_identity_missing',      409, 'Your account has no POSIX username yet.', 'releases');
INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('allocation_not_found',        404, 'The allocation does not exist.', 'releases'),
    ('allocation_not_active',       409, 'The allocation is not active.', 'releases')
ON CONFLICT (code) DO NOTHING;

-- Policy.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('releases.max_keys_per_user', '20', 'How many SSH public keys one user may register.'),
    ('releases.cert_ttl_seconds', '900', 'Lifetime of an access certificate (seconds, 60 to 86400); never past the allocation''s end when it is known.'),
    ('releases.cert_clock_skew_seconds', '60', 'How far before now an access certificate becomes valid, for nodes whose clock is behind (seconds, 0 to 600).'),
    ('releases.cert_extensions',
     '["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"]',
     'Extensions of access certificates (OpenSSH flag extensions; the defaults of ssh-keygen for user certificates).');

-- source: sql/releases/10_tables.sql
-- Read model fed by events (user.created, allocation.*), keys, CA, certificates.

CREATE TABLE releases.users (
    user_id        uuid PRIMARY KEY,
    email          text,
    posix_username text CHECK (posix_username ~ '^[a-z_][a-z0-9_-]{0,31}$'),
    uid            integer CHECK (uid >= 0),
    gid            integer CHECK (gid >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE releases.users IS 'Read model of users (from user.created): the POSIX username certificates are issued for.';
COMMENT ON COLUMN releases.users.user_id IS 'The user (JWT sub).';
COMMENT ON COLUMN releases.users.email IS 'E-mail address, as the auth service announced it.';
COMMENT ON COLUMN releases.users.posix_username IS 'POSIX login name on nodes; the principal of the user''s certificates.';
COMMENT ON COLUMN releases.users.uid IS 'POSIX uid.';
COMMENT ON COLUMN releases.users.gid IS 'POSIX gid.';
COMMENT ON COLUMN releases.users.updated_at IS 'When the last event about the user was applied.';

CREATE TABLE releases.allocation_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE releases.allocation_transitions IS 'Allowed changes of releases.allocations.state (from_state NULL: initial state).';
COMMENT ON COLUMN releases.allocation_transitions.from_state IS 'State before, NULL for a new row.';
COMMENT ON COLUMN releases.allocation_transitions.to_state IS 'State after.';
INSERT INTO releases.allocation_transitions (from_state, to_state) VALUES
    (NULL, 'active'), (NULL, 'ended'), ('active', 'ended');

CREATE TABLE releases.allocations (
    allocation_id uuid PRIMARY KEY,
    user_id       uuid,
    sku           text,
    hostname      text,
    state         text NOT NULL CHECK (state IN ('active', 'ended')),
    started_at    timestamptz,
    ends_at       timestamptz,
    ended_at      timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'ended' OR user_id IS NOT NULL)
);
CREATE INDEX allocations_user_idx ON releases.allocations (user_id);
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON releases.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'releases.allocation_transitions');
COMMENT ON TABLE releases.allocations IS 'Read model of allocations (from allocation.activated / released / failed): who may get access, and until when.';
COMMENT ON COLUMN releases.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN releases.allocations.user_id IS 'The user who owns it; only they may mint access.';
COMMENT ON COLUMN releases.allocations.sku IS 'The SKU allocated.';
COMMENT ON COLUMN releases.allocations.hostname IS 'Hostname of the node it runs on.';
COMMENT ON COLUMN releases.allocations.state IS 'active (certificates may be minted) or ended (released or failed; terminal).';
COMMENT ON COLUMN releases.allocations.started_at IS 'When it became active.';
COMMENT ON COLUMN releases.allocations.ends_at IS 'Planned end when known: no certificate is valid past it.';
COMMENT ON COLUMN releases.allocations.ended_at IS 'When it was released or failed.';
COMMENT ON COLUMN releases.allocations.updated_at IS 'When the last event about it was applied.';

CREATE TABLE releases.ssh_keys (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL,
    name        text CHECK (name IS NULL OR (length(name) BETWEEN 1 AND 100 AND name !~ '[[:cntrl:]]')),
    key_type    text NOT NULL CHECK (key_type IN ('ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384',
                                                  'ecdsa-sha2-nistp521', 'ssh-rsa')),
    bits        integer NOT NULL CHECK (bits > 0),
    fingerprint text NOT NULL CHECK (fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$'),
    public_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, fingerprint)
);
COMMENT ON TABLE releases.ssh_keys IS 'SSH public keys registered by users. Row-level security (forced, also for the owner): a request sees only the keys of pgcloud.user_id().';
COMMENT ON COLUMN releases.ssh_keys.id IS 'Key id.';
COMMENT ON COLUMN releases.ssh_keys.user_id IS 'The owner.';
COMMENT ON COLUMN releases.ssh_keys.name IS 'A label chosen by the user (default: the key''s comment).';
COMMENT ON COLUMN releases.ssh_keys.key_type IS 'ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa.';
COMMENT ON COLUMN releases.ssh_keys.bits IS 'Key size in bits, as ssh-keygen -l prints it.';
COMMENT ON COLUMN releases.ssh_keys.fingerprint IS 'SHA256:<unpadded base64>, as ssh-keygen -l prints it.';
COMMENT ON COLUMN releases.ssh_keys.public_key IS 'The key in canonical authorized_keys form (type and base64, without comment).';
COMMENT ON COLUMN releases.ssh_keys.created_at IS 'When it was added.';
ALTER TABLE releases.ssh_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE releases.ssh_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY ssh_keys_own ON releases.ssh_keys
    USING (user_id = pgcloud.user_id())
    WITH CHECK (user_id = pgcloud.user_id());

CREATE TABLE releases.ssh_ca_keys (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_key     text NOT NULL CHECK (public_key ~ '^ssh-ed25519 [A-Za-z0-9+/]+=* pgcloud-ssh-ca$'),
    public_blob    bytea NOT NULL CHECK (length(public_blob) = 51),
    fingerprint    text NOT NULL UNIQUE CHECK (fingerprint ~ '^SHA256:[A-Za-z0-9+/]{43}$'),
    -- sealed 32-byte Ed25519 seed: version 0x01, nonce, ciphertext, tag
    private_sealed bytea NOT NULL CHECK (length(private_sealed) = 61 AND get_byte(private_sealed, 0) = 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz
);
CREATE UNIQUE INDEX ssh_ca_keys_one_current ON releases.ssh_ca_keys ((true)) WHERE retired_at IS NULL;
COMMENT ON TABLE releases.ssh_ca_keys IS 'The platform SSH certificate authority: Ed25519 keys, the current one has retired_at NULL. Private keys are stored sealed with the platform master key (context releases.ssh_ca), never in plaintext.';
COMMENT ON COLUMN releases.ssh_ca_keys.id IS 'CA key number.';
COMMENT ON COLUMN releases.ssh_ca_keys.public_key IS 'The CA public key in authorized_keys form, for nodes'' TrustedUserCAKeys.';
COMMENT ON COLUMN releases.ssh_ca_keys.public_blob IS 'The CA public key blob (the certificates'' signature key).';
COMMENT ON COLUMN releases.ssh_ca_keys.fingerprint IS 'SHA256 fingerprint of the CA public key.';
COMMENT ON COLUMN releases.ssh_ca_keys.private_sealed IS 'The Ed25519 private seed sealed with pgcloud.seal (AES-256-GCM, context releases.ssh_ca).';
COMMENT ON COLUMN releases.ssh_ca_keys.created_at IS 'When it was generated.';
COMMENT ON COLUMN releases.ssh_ca_keys.retired_at IS 'When it was replaced by a rotation; NULL for the current key.';

CREATE SEQUENCE releases.certificate_serial_seq AS bigint MINVALUE 1 START 1;
COMMENT ON SEQUENCE releases.certificate_serial_seq IS 'Serial numbers of access certificates (unique, increasing).';

CREATE TABLE releases.certificates (
    serial          bigint PRIMARY KEY,
    user_id         uuid NOT NULL,
    allocation_id   uuid NOT NULL,
    key_fingerprint text NOT NULL,
    ca_fingerprint  text NOT NULL,
    key_id          text NOT NULL,
    principals      text[] NOT NULL,
    valid_after     timestamptz NOT NULL,
    valid_before    timestamptz NOT NULL CHECK (valid_before > valid_after),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_allocation_idx ON releases.certificates (allocation_id);
CREATE TRIGGER certificates_immutable BEFORE UPDATE OR DELETE ON releases.certificates
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER certificates_no_truncate BEFORE TRUNCATE ON releases.certificates
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();
COMMENT ON TABLE releases.certificates IS 'Every access certificate minted (append-only; the certificate itself is not kept).';
COMMENT ON COLUMN releases.certificates.serial IS 'The certificate serial.';
COMMENT ON COLUMN releases.certificates.user_id IS 'The user it was minted for.';
COMMENT ON COLUMN releases.certificates.allocation_id IS 'The allocation it gives access to.';
COMMENT ON COLUMN releases.certificates.key_fingerprint IS 'Fingerprint of the certified public key.';
COMMENT ON COLUMN releases.certificates.ca_fingerprint IS 'Fingerprint of the CA key that signed it.';
COMMENT ON COLUMN releases.certificates.key_id IS 'The certificate key id (user and allocation ids), logged by sshd on login.';
COMMENT ON COLUMN releases.certificates.principals IS 'Valid principals (the POSIX username).';
COMMENT ON COLUMN releases.certificates.valid_after IS 'Start of validity.';
COMMENT ON COLUMN releases.certificates.valid_before IS 'End of validity.';
COMMENT ON COLUMN releases.certificates.created_at IS 'When it was minted.';

-- Runtime data of an extension's tables is dumped only when marked.
SELECT pg_catalog.pg_extension_config_dump('releases.users', '');
SELECT pg_catalog.pg_extension_config_dump('releases.allocations', '');
SELECT pg_catalog.pg_extension_config_dump('releases.ssh_keys', '');
SELECT pg_catalog.pg_extension_config_dump('releases.ssh_ca_keys', '');
SELECT pg_catalog.pg_extension_config_dump('releases.certificates', '');
SELECT pg_catalog.pg_extension_config_dump('releases.certificate_serial_seq', '');

-- source: sql/releases/20_c.sql
-- C: the key parser and the certificate authority (src/releases/).

CREATE FUNCTION releases.parse_key(public_key text, OUT key_type text, OUT bits integer, OUT fingerprint text,
                                   OUT canonical_key text, OUT comment text)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_parse_key';
COMMENT ON FUNCTION releases.parse_key(text) IS 'Parses one OpenSSH authorized_keys line (C): type, bits and SHA256 fingerprint as ssh-keygen -l prints them, the canonical "<type> <base64>" form and the comment. Raises ssh_key_invalid, ssh_key_type_unsupported, ssh_key_too_weak or ssh_key_options_unsupported.';

CREATE FUNCTION releases.ca_generate(OUT public_key text, OUT fingerprint text, OUT public_blob bytea,
                                     OUT private_sealed bytea)
RETURNS record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_ca_generate';
COMMENT ON FUNCTION releases.ca_generate() IS 'Generates an Ed25519 CA key with OpenSSL (C); returns its public key and the private seed sealed for context releases.ssh_ca. The plaintext private key never leaves C.';

CREATE FUNCTION releases.sign_certificate(public_key text, ca_private_sealed bytea, ca_public_blob bytea,
                                          serial bigint, key_id text, principals text[],
                                          valid_after timestamptz, valid_before timestamptz,
                                          extensions text[], comment text)
RETURNS text
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_releases_sign_certificate';
COMMENT ON FUNCTION releases.sign_certificate(text, bytea, bytea, bigint, text, text[], timestamptz, timestamptz, text[], text) IS 'Builds and signs (C, Ed25519 via EVP_DigestSign) an OpenSSH user certificate (PROTOCOL.certkeys) for public_key; returns it as one "<type>-cert-v01@openssh.com <base64> <comment>" line.';

-- source: sql/releases/30_keys.sql
-- SSH public keys: add, list, delete (per user, row-level security).

CREATE FUNCTION releases.require_user() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := pgcloud.user_id();
BEGIN
    IF v_user IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', 'this call needs a signed-in user (the JWT sub claim)');
    END IF;
    RETURN v_user;
END
$$;
COMMENT ON FUNCTION releases.require_user() IS 'The calling user (pgcloud.user_id()); raises unauthenticated when the request has none.';

CREATE FUNCTION releases.key_json(k releases.ssh_keys) RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
    SELECT jsonb_build_object('id', k.id, 'name', k.name, 'type', k.key_type, 'bits', k.bits,
                              'fingerprint', k.fingerprint, 'public_key', k.public_key,
                              'created_at', k.created_at)
$$;
COMMENT ON FUNCTION releases.key_json(releases.ssh_keys) IS 'The API form of a key: id, name, type, bits, fingerprint, public_key, created_at.';

CREATE FUNCTION releases.add_ssh_key_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := releases.require_user();
    k record;
    key_name text := args ->> 'name';
    max_keys integer := pgcloud.policy('releases.max_keys_per_user', NULL::integer);
    n integer;
    r releases.ssh_keys;
BEGIN
    SELECT * INTO k FROM releases.parse_key(args ->> 'public_key');
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
COMMENT ON FUNCTION releases.add_ssh_key_apply(jsonb) IS 'Internal to api.add_ssh_key(): validates and stores {public_key, name}; audited and announced as ssh_key.added.';

CREATE FUNCTION api.add_ssh_key(public_key text, name text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('releases.add_ssh_key', jsonb_build_object('public_key', public_key, 'name', name),
                              'releases.add_ssh_key_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.add_ssh_key(text, text) IS 'Registers an SSH public key (one authorized_keys line: ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of at least 2048 bits, without options). Returns {id, fingerprint, type, bits, name, created_at}; the fingerprint is the one ssh-keygen -l prints. A key already registered is 409 ssh_key_duplicate; at most releases.max_keys_per_user keys. Safe to retry with X-Idempotency-Key.';

CREATE FUNCTION api.list_ssh_keys() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid;
BEGIN
    PERFORM pgcloud.authorize('user');
    v_user := releases.require_user();
    RETURN coalesce((SELECT jsonb_agg(releases.key_json(k) ORDER BY k.created_at, k.id)
                       FROM releases.ssh_keys k WHERE k.user_id = v_user), '[]'::jsonb);
END
$$;
COMMENT ON FUNCTION api.list_ssh_keys() IS 'Your SSH public keys, oldest first: [{id, name, type, bits, fingerprint, public_key, created_at}].';

CREATE FUNCTION releases.delete_ssh_key_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := releases.require_user();
    key_id uuid;
    r releases.ssh_keys;
BEGIN
    IF args ->> 'id' IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'id is required');
    END IF;
    key_id := (args ->> 'id')::uuid;
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
COMMENT ON FUNCTION releases.delete_ssh_key_apply(jsonb) IS 'Internal to api.delete_ssh_key(): deletes {id} of the caller; audited and announced as ssh_key.deleted.';

CREATE FUNCTION api.delete_ssh_key(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('releases.delete_ssh_key', jsonb_build_object('id', id),
                              'releases.delete_ssh_key_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.delete_ssh_key(uuid) IS 'Deletes one of your SSH keys; returns {id, fingerprint, deleted}. Another user''s key or an unknown id is 404 ssh_key_not_found. Safe to retry with X-Idempotency-Key.';

-- source: sql/releases/40_ca.sql
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

CREATE FUNCTION releases.rotate_ssh_ca_apply(args jsonb) RETURNS jsonb
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
COMMENT ON FUNCTION releases.rotate_ssh_ca_apply(jsonb) IS 'Internal to api.admin_rotate_ssh_ca(): retires the current CA key and generates a new one; audited as ssh_ca.rotated.';

CREATE FUNCTION api.admin_rotate_ssh_ca() RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN pgcloud.idempotent('releases.rotate_ssh_ca', '{}'::jsonb, 'releases.rotate_ssh_ca_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.admin_rotate_ssh_ca() IS 'Operators: replaces the SSH CA key (the old one signs nothing more; certificates it signed stay valid only on nodes that still trust it, at most releases.cert_ttl_seconds). Returns {public_key, fingerprint, previous_fingerprint, created_at}; nodes must fetch api.ssh_ca_public_key() again. Audited; safe to retry with X-Idempotency-Key.';

-- source: sql/releases/50_mint.sql
-- Access: a short-lived OpenSSH user certificate for an active allocation.

CREATE FUNCTION releases.mint_access_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid := releases.require_user();
    alloc_id uuid;
    a releases.allocations;
    uname text;
    k record;
    ca releases.ssh_ca_keys;
    ttl integer := pgcloud.policy('releases.cert_ttl_seconds', NULL::integer);
    skew integer := pgcloud.policy('releases.cert_clock_skew_seconds', NULL::integer);
    exts jsonb := pgcloud.policy('releases.cert_extensions', NULL::jsonb);
    ext_names text[];
    now_s timestamptz := date_trunc('second', now());
    v_after timestamptz;
    v_before timestamptz;
    serial bigint;
    kid text;
    cert text;
BEGIN
    IF args ->> 'allocation_id' IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'allocation_id is required');
    END IF;
    alloc_id := (args ->> 'allocation_id')::uuid;
    IF ttl IS NULL OR ttl NOT BETWEEN 60 AND 86400 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_ttl_seconds must be between 60 and 86400');
    END IF;
    IF skew IS NULL OR skew NOT BETWEEN 0 AND 600 THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_clock_skew_seconds must be between 0 and 600');
    END IF;
    IF jsonb_typeof(exts) IS DISTINCT FROM 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(exts) e WHERE jsonb_typeof(e) <> 'string') THEN
        PERFORM pgcloud.raise('policy_invalid', 'releases.cert_extensions must be an array of strings');
    END IF;
    ext_names := ARRAY(SELECT jsonb_array_elements_text(exts));

    -- Someone else's allocation is as unknown as a missing one.
    SELECT * INTO a FROM releases.allocations x WHERE x.allocation_id = alloc_id AND x.user_id = v_user FOR SHARE;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('allocation_not_found', format('no allocation %s', alloc_id));
    END IF;
    IF a.state <> 'active' OR (a.ends_at IS NOT NULL AND a.ends_at <= now_s + interval '1 second') THEN
        PERFORM pgcloud.raise('allocation_not_active', format('allocation %s is %s', alloc_id,
                              CASE WHEN a.state = 'active' THEN 'past its end' ELSE a.state END),
                              'Access can be minted only while the allocation is active.');
    END IF;
    SELECT u.posix_username INTO uname FROM releases.users u WHERE u.user_id = v_user;
    IF uname IS NULL THEN
        PERFORM pgcloud.raise('posix_identity_missing', 'no POSIX username is known for your account yet',
                              'Try again in a moment; it is assigned when your account is created.');
    END IF;

    SELECT * INTO k FROM releases.parse_key(args ->> 'public_key');
    v_after := now_s - make_interval(secs => skew);
    v_before := now_s + make_interval(secs => ttl);
    IF a.ends_at IS NOT NULL THEN
        v_before := least(v_before, date_trunc('second', a.ends_at));
    END IF;

    ca := releases.ca_current();
    serial := nextval('releases.certificate_serial_seq');
    kid := format('pgcloud user=%s allocation=%s', v_user, alloc_id);
    cert := releases.sign_certificate(k.canonical_key, ca.private_sealed, ca.public_blob, serial, kid,
                                      ARRAY[uname], v_after, v_before, ext_names,
                                      format('%s@pgcloud-%s', uname, serial));

    INSERT INTO releases.certificates (serial, user_id, allocation_id, key_fingerprint, ca_fingerprint, key_id,
                                       principals, valid_after, valid_before)
    VALUES (serial, v_user, alloc_id, k.fingerprint, ca.fingerprint, kid, ARRAY[uname], v_after, v_before);

    PERFORM pgcloud.audit('access.minted', 'allocation', alloc_id::text, 'ok',
        jsonb_build_object('serial', serial, 'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(uname), 'valid_after', v_after, 'valid_before', v_before));
    PERFORM pgcloud.emit('access.minted', 'allocation', alloc_id::text,
        jsonb_build_object('allocation_id', alloc_id, 'user_id', v_user, 'serial', serial, 'key_id', kid,
                           'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                           'principals', jsonb_build_array(uname), 'hostname', a.hostname,
                           'valid_after', v_after, 'valid_before', v_before));
    RETURN jsonb_build_object('certificate', cert, 'valid_after', v_after, 'valid_before', v_before,
                              'serial', serial, 'principals', jsonb_build_array(uname), 'key_id', kid,
                              'key_fingerprint', k.fingerprint, 'ca_fingerprint', ca.fingerprint,
                              'hostname', a.hostname);
END
$$;
COMMENT ON FUNCTION releases.mint_access_apply(jsonb) IS 'Internal to api.mint_access(): checks the allocation and the caller, signs a user certificate for {allocation_id, public_key}; audited and announced as access.minted.';

CREATE FUNCTION api.mint_access(allocation_id uuid, public_key text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    PERFORM pgcloud.authorize('user');
    RETURN pgcloud.idempotent('releases.mint_access',
                              jsonb_build_object('allocation_id', allocation_id, 'public_key', public_key),
                              'releases.mint_access_apply(jsonb)');
END
$$;
COMMENT ON FUNCTION api.mint_access(uuid, text) IS 'Short-lived SSH access to one of your active allocations: an OpenSSH user certificate for public_key (any accepted key type), signed by the platform CA (api.ssh_ca_public_key()), principal = your POSIX username, valid for releases.cert_ttl_seconds and never past the allocation''s end. Returns {certificate, valid_after, valid_before, serial, principals, key_id, key_fingerprint, ca_fingerprint, hostname}; save certificate as e.g. ~/.ssh/id_ed25519-cert.pub. Unknown or another user''s allocation: 404 allocation_not_found; not active: 409 allocation_not_active. Safe to retry with X-Idempotency-Key.';

-- source: sql/releases/60_events.sql
-- The read model: user.created and allocation.activated / released / failed.

CREATE FUNCTION releases.payload_uuid(payload jsonb, field text, fallback text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v text := coalesce(payload ->> field, fallback);
BEGIN
    IF v IS NULL OR v !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a uuid', field));
    END IF;
    RETURN v::uuid;
END
$$;
COMMENT ON FUNCTION releases.payload_uuid(jsonb, text, text) IS 'A required uuid field of an event payload; raises invalid_event when it is missing or malformed.';

CREATE FUNCTION releases.payload_time(payload jsonb, field text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud, releases
AS $$
BEGIN
    IF payload ->> field IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (payload ->> field)::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR invalid_text_representation THEN
    PERFORM pgcloud.raise('invalid_event', format('payload field %s must be a timestamp', field));
END
$$;
COMMENT ON FUNCTION releases.payload_time(jsonb, text) IS 'An optional timestamp field of an event payload (NULL when absent); raises invalid_event when malformed.';

CREATE FUNCTION releases.on_event(event_id uuid, event_type text, aggregate_type text, aggregate_id text,
                                  payload jsonb, headers jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud, releases
AS $$
DECLARE
    v_user uuid;
    v_alloc uuid;
    uname text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_event', 'the payload must be a JSON object');
    END IF;
    CASE event_type
    WHEN 'user.created' THEN
        v_user := releases.payload_uuid(payload, 'user_id', aggregate_id);
        uname := payload ->> 'posix_username';
        IF uname IS NOT NULL AND uname !~ '^[a-z_][a-z0-9_-]{0,31}$' THEN
            PERFORM pgcloud.raise('invalid_event', 'posix_username must match ^[a-z_][a-z0-9_-]{0,31}$');
        END IF;
        IF jsonb_typeof(payload -> 'uid') NOT IN ('number', 'null') OR jsonb_typeof(payload -> 'gid') NOT IN ('number', 'null') THEN
            PERFORM pgcloud.raise('invalid_event', 'uid and gid must be numbers');
        END IF;
        INSERT INTO releases.users AS u (user_id, email, posix_username, uid, gid, updated_at)
        VALUES (v_user, payload ->> 'email', uname, (payload ->> 'uid')::integer, (payload ->> 'gid')::integer, now())
        ON CONFLICT (user_id) DO UPDATE
            SET email = coalesce(excluded.email, u.email),
                posix_username = coalesce(excluded.posix_username, u.posix_username),
                uid = coalesce(excluded.uid, u.uid),
                gid = coalesce(excluded.gid, u.gid),
                updated_at = excluded.updated_at;
    WHEN 'allocation.activated' THEN
        v_alloc := releases.payload_uuid(payload, 'allocation_id', aggregate_id);
        v_user := releases.payload_uuid(payload, 'user_id');
        -- An ended allocation stays ended (a late or replayed activation changes nothing).
        INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, state, started_at, ends_at, updated_at)
        VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'), 'active',
                coalesce(releases.payload_time(payload, 'started_at'), now()),
                coalesce(releases.payload_time(payload, 'ends_at'), releases.payload_time(payload, 'ended_at')), now())
        ON CONFLICT (allocation_id) DO UPDATE
            SET user_id = excluded.user_id, sku = excluded.sku, hostname = excluded.hostname,
                started_at = excluded.started_at, ends_at = excluded.ends_at, updated_at = excluded.updated_at
            WHERE x.state = 'active';
    WHEN 'allocation.released', 'allocation.failed', 'allocation.releasing' THEN
        -- Releasing already ends access: no certificate is minted once the
        -- release is requested.
        v_alloc := releases.payload_uuid(payload, 'allocation_id', aggregate_id);
        IF payload ? 'user_id' THEN
            v_user := releases.payload_uuid(payload, 'user_id');
        END IF;
        INSERT INTO releases.allocations AS x (allocation_id, user_id, sku, hostname, state, started_at, ended_at, updated_at)
        VALUES (v_alloc, v_user, payload ->> 'sku', coalesce(payload ->> 'hostname', payload ->> 'node_hostname'), 'ended',
                releases.payload_time(payload, 'started_at'),
                coalesce(releases.payload_time(payload, 'ended_at'), now()), now())
        ON CONFLICT (allocation_id) DO UPDATE
            SET state = 'ended',
                user_id = coalesce(x.user_id, excluded.user_id),
                ended_at = coalesce(x.ended_at, excluded.ended_at),
                updated_at = excluded.updated_at;
    ELSE
        NULL;  -- not ours: ignored
    END CASE;
END
$$;
COMMENT ON FUNCTION releases.on_event(uuid, text, text, text, jsonb, jsonb) IS 'Event handler (called by the relay with the inbox row in the same transaction): user.created fills releases.users; allocation.activated makes an allocation active, allocation.releasing, allocation.released and allocation.failed end it (no access is minted once a release is requested). Other types are ignored.';

-- source: sql/releases/90_grants.sql
-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.add_ssh_key(text, text), api.list_ssh_keys(), api.delete_ssh_key(uuid),
    api.mint_access(uuid, text)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.ssh_ca_public_key()
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION api.admin_rotate_ssh_ca() TO pgcloud_admin;

SELECT pgcloud.service_end('releases');
