-- pgcloud_terminal: single-use terminal tokens and the live sessions of the
-- terminal relay (relay/). Schema terminal, owned by pgcloud_svc_terminal.
--
-- Decisions:
--   * A token is 32 random bytes (base64url, prefix "pgt_"), returned once and
--     stored only as its SHA-256. It is bound to the caller, the caller's
--     session (sid claim) and one allocation, lives terminal.token_ttl_seconds
--     and is redeemed once, by the relay (pgcloud_service, scope
--     terminal:redeem). Minting is not idempotent (PRODUCT.md §2): a retry
--     mints another token.
--   * Who may open a terminal: the allocation's owner, or a member (owner or
--     editor) of an app instance on it (read model of appruntime's
--     app.member_added / app.member_removed). Viewers may not.
--   * The node login is the allocation owner's POSIX username (the account
--     the node was deployed for); the certificate's key id names the
--     person who opened the terminal.
--   * A redeem opens a live session row. The relay reports its sessions with a
--     heartbeat and learns which to close (allocation ended, session revoked,
--     member removed); it ends each with the bytes both ways. Sessions whose
--     relay stopped reporting (terminal.session_stale_seconds) are ended by
--     terminal.reap_sessions(), a scheduler job (terminal.reap_interval_seconds),
--     so nothing stays marked live.

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('terminal_token_invalid',      401, 'The terminal token is not valid.', 'terminal'),
    ('terminal_token_expired',      401, 'The terminal token has expired.', 'terminal'),
    ('terminal_token_used',         409, 'The terminal token has already been used.', 'terminal'),
    ('terminal_token_revoked',      401, 'The terminal token was revoked with its session or allocation.', 'terminal'),
    ('terminal_session_not_found',  404, 'The terminal session does not exist.', 'terminal'),
    ('terminal_no_session',         400, 'A terminal token needs a signed-in session (the sid claim).', 'terminal');
-- allocation_not_found, allocation_not_active, posix_identity_missing: the core's (shared).

-- terminal.token_ttl_seconds is seeded by core (60 s, allowed 5 to 600).
INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('terminal.session_stale_seconds', '30', 'A live terminal session whose relay has not reported for this long is ended as lost (seconds, 2 to 3600).');
