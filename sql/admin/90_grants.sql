-- Who may call what: admins only (and each function checks the request's role too).
GRANT EXECUTE ON FUNCTION api.admin_users(), api.admin_allocations(text), api.admin_nodes(), api.admin_payments(uuid),
    api.admin_force_release(uuid, text), api.admin_audit(timestamptz, timestamptz, uuid, text, bigint, int)
    TO pgcloud_admin;
