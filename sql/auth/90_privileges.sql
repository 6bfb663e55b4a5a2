-- Who may call what. service_end() revokes PUBLIC execute on every routine
-- of the extension; these grants are the whole surface of auth.

-- Anonymous callers get exactly the sign-in functions and the public keys.
GRANT EXECUTE ON FUNCTION api.jwks() TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION api.token_exchange(text), api.dev_login(text), api.refresh_token(text)
    TO pgcloud_anon, pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.service_token(text, text) TO pgcloud_anon, pgcloud_service;

-- Signed-in users (administrators are users too).
GRANT EXECUTE ON FUNCTION api.me(), api.logout() TO pgcloud_user, pgcloud_admin;

-- Administrators.
GRANT EXECUTE ON FUNCTION api.admin_upsert_oidc_provider(text, text, jsonb),
    api.admin_create_service_account(text, text[]), api.admin_set_user_admin(uuid, boolean),
    api.admin_rotate_signing_key(integer)
    TO pgcloud_admin;
