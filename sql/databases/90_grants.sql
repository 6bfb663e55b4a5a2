-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION
    api.create_environment(text), api.list_environments(), api.get_environment(uuid),
    api.list_database_templates(),
    api.create_database_service(uuid, text, text, uuid, boolean), api.deploy_database_service(uuid),
    api.get_service(uuid), api.list_services(uuid), api.get_database_connection(uuid), api.get_deployment(uuid),
    api.rotate_database_credentials(uuid), api.delete_service(uuid),
    api.set_config_variable(uuid, text, text, uuid), api.set_config_secret(uuid, text, text, uuid),
    api.unset_config(uuid, text, uuid), api.list_config(uuid, uuid), api.reveal_config_secret(uuid, text, uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.admin_register_database_server(text, text, integer, text, text, text),
    api.admin_list_database_servers()
    TO pgcloud_admin;
