-- Who may call what (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.mint_terminal_token(uuid) TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_redeem_terminal_token(text), api.service_terminal_relay_started(),
    api.service_terminal_heartbeat(jsonb), api.service_end_terminal_session(uuid, text, bigint, bigint),
    api.service_terminal_refused(text, text)
    TO pgcloud_service;
GRANT EXECUTE ON FUNCTION api.admin_terminal_sessions(text) TO pgcloud_admin;
