-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.add_ssh_key(text, text), api.list_ssh_keys(), api.delete_ssh_key(uuid),
    api.mint_access(uuid, text)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.ssh_ca_public_key()
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION api.admin_rotate_ssh_ca() TO pgcloud_admin;
