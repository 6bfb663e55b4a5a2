-- pgcloud_auth: schema auth, owned by pgcloud_svc_auth (created by pgcloud.service_begin).
--
-- Identity for the platform: OIDC token exchange, platform JWTs signed in C
-- with a sealed key, refresh tokens rotated on use, sessions that
-- pgcloud.pre_request() can refuse, service accounts with scopes, and POSIX
-- identities. This file: the error codes and policy values of the service.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('invalid_token',          401, 'The token is not valid.', 'auth'),
    ('token_expired',          401, 'The token has expired.', 'auth'),
    ('token_not_yet_valid',    401, 'The token is not valid yet.', 'auth'),
    ('invalid_refresh_token',  401, 'The refresh token is not valid.', 'auth'),
    ('refresh_token_reused',   401, 'This refresh token was already used: its session has been revoked.', 'auth'),
    ('invalid_client',         401, 'The client id or client secret is not valid.', 'auth'),
    ('invalid_jwks',           400, 'The JSON Web Key Set is not valid.', 'auth'),
    ('dev_login_disabled',     403, 'Development login is disabled.', 'auth'),
    ('email_not_verified',     403, 'The identity provider has not verified this e-mail address.', 'auth'),
    ('account_conflict',       409, 'This identity or e-mail address belongs to another account.', 'auth'),
    ('posix_ids_exhausted',    503, 'No POSIX user id is left in the configured range.', 'auth');

-- auth.dev_login_enabled, auth.access_token_ttl_seconds and
-- auth.refresh_token_ttl_seconds are seeded by core.
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('auth.issuer',             '"pgcloud"', 'The iss claim of platform access tokens.'),
    ('auth.audience',           '"pgcloud-api"', 'The aud claim of platform access tokens.'),
    ('auth.clock_skew_seconds', '60', 'Leeway for exp, nbf and iat when verifying ID tokens (seconds).'),
    ('auth.service_token_ttl_seconds', '900', 'Lifetime of service-account access tokens (seconds).'),
    ('auth.signing_alg',        '"ES256"', 'Algorithm of new platform signing keys: ES256, RS256 or EdDSA.'),
    ('auth.signing_key_lead_seconds', '300', 'How long a rotated-in signing key is published in api.jwks() before it signs (seconds), so verifiers can fetch it first.'),
    ('auth.oidc_algorithms',    '["RS256", "ES256", "EdDSA"]', 'Algorithms accepted for OIDC ID tokens.'),
    ('auth.posix_uid_min',      '100000', 'First POSIX uid (and gid) given to users.'),
    ('auth.posix_uid_max',      '999999', 'Last POSIX uid (and gid) given to users.'),
    ('auth.posix_reserved_usernames',
     '["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "systemd-network", "systemd-resolve", "systemd-timesync", "messagebus", "syslog", "sshd", "ubuntu", "debian", "admin", "administrator", "postgres", "pgcloud", "operator", "maas", "lxd", "docker", "user", "guest", "support", "test", "centos", "ec2-user", "cloud-user", "rocky", "fedora", "core", "almalinux", "alma", "arch", "opc", "azureuser", "alpine", "freebsd", "clear", "cirros", "suse", "opensuse", "oracle", "rhel", "redhat", "cumulus", "vagrant", "pi", "nvidia", "cloud", "default", "ansible", "kali", "gentoo", "flatcar", "bitnami", "centos-cloud"]',
     'POSIX user names never given to users.'),
    ('auth.unverified_email_signin', '"separate_account"', 'What a sign-in whose provider did not verify the e-mail address gets: separate_account (an account of its own, without the address) or refuse (email_not_verified). Never a link to an existing account.'),
    ('auth.refresh_reuse_interval_seconds', '10', 'Seconds after a refresh token was exchanged during which exchanging it again returns the same successor (two tabs refreshing at once); after it, reuse revokes the session.');
