-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.create_checkout(bigint, text), api.get_checkout(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.stripe_webhook(text), api.stripe_webhook(json) TO pgcloud_anon;
GRANT EXECUTE ON FUNCTION api.admin_refund(uuid, bigint, text) TO pgcloud_admin;
