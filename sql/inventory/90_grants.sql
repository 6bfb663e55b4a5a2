-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.list_skus(), api.list_images(), api.marketplace()
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
GRANT EXECUTE ON FUNCTION
    api.admin_upsert_sku(text, text, int, int, int, int, text, bigint, text),
    api.admin_upsert_image(text, text),
    api.admin_register_node(text, text, text),
    api.admin_set_node_maintenance(uuid, boolean),
    api.admin_retire_node(uuid),
    api.admin_list_nodes()
    TO pgcloud_admin;
