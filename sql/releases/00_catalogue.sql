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
    ('access_principal_missing',    409, 'The allocation''s node has no SSH access principal.', 'releases');
-- allocation_not_found, allocation_not_active, posix_identity_missing: the core's (shared).

-- Policy.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('releases.max_keys_per_user', '20', 'How many SSH public keys one user may register.'),
    ('releases.cert_ttl_seconds', '900', 'Lifetime of an access certificate (seconds, 60 to 86400); never past the allocation''s end when it is known.'),
    ('releases.cert_clock_skew_seconds', '60', 'How far before now an access certificate becomes valid, for nodes whose clock is behind (seconds, 0 to 600).'),
    ('releases.cert_extensions',
     '["permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding", "permit-pty", "permit-user-rc"]',
     'Extensions of access certificates (OpenSSH flag extensions; the defaults of ssh-keygen for user certificates).');
