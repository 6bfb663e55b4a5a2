-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_namespace(text), api.list_namespaces(), api.delete_namespace(text),
    api.presign(text, text, text, int), api.complete_upload(text, text),
    api.list_objects(text, text, int, text), api.delete_object(text, text)
    TO pgcloud_user, pgcloud_admin;
