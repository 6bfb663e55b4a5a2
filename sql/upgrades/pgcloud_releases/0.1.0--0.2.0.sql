-- 0.1.0 -> 0.2.0: the read model of allocations keeps the SSH certificate
-- principal their nodes accept (issue 10); NULL for allocations announced
-- under 0.1.0.
ALTER TABLE releases.allocations
    ADD COLUMN ssh_principal text CHECK (ssh_principal ~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');
