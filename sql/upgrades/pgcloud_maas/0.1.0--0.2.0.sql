-- 0.1.0 -> 0.2.0: allocations learn the SSH certificate principal of their
-- node (issue 10). Allocations deployed under 0.1.0 have none (NULL): their
-- nodes were deployed without an AuthorizedPrincipalsFile entry.
ALTER TABLE maas.allocations
    ADD COLUMN ssh_principal text CHECK (ssh_principal ~ '^pgcloud-alloc-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');
