-- Who may call what. Everything else is the service role's alone
-- (pgcloud.service_end revokes PUBLIC's EXECUTE).
GRANT EXECUTE ON FUNCTION api.balance(), api.ledger(bigint, integer), api.usage(uuid)
    TO pgcloud_user, pgcloud_admin;
GRANT EXECUTE ON FUNCTION api.admin_adjust_balance(uuid, bigint, text), api.admin_verify_ledger(uuid)
    TO pgcloud_admin;
