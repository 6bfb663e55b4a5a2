-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_allocation(text, text, uuid[]), api.release_allocation(uuid),
    api.get_allocation(uuid), api.list_allocations()
    TO pgcloud_user, pgcloud_admin;
