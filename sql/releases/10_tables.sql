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
    ssh_principal text CHECK (ssh_principal ~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
    CHECK (state = 'ended' OR user_id IS NOT NULL)
);
CREATE INDEX allocations_user_idx ON releases.allocations (user_id);
CREATE TRIGGER allocations_state BEFORE INSERT OR UPDATE OF state ON releases.allocations
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'releases.allocation_transitions');
COMMENT ON TABLE releases.allocations IS 'Read model of allocations (from allocation.activated / released / failed): who may get access, and until when.';
COMMENT ON COLUMN releases.allocations.allocation_id IS 'The allocation.';
COMMENT ON COLUMN releases.allocations.ssh_principal IS 'The certificate principal the allocation''s node accepts for its owner''s account (from allocation.activated, set by maas at deploy time); certificates are minted for it alone. NULL: no certificate can be minted.';
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
COMMENT ON COLUMN releases.certificates.principals IS 'Valid principals: the allocation''s principal alone (releases.allocations.ssh_principal).';
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
