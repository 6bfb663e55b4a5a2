-- Drop and reinstall: DROP EXTENSION pgcloud_core CASCADE leaves nothing of ours.
-- services: core
BEGIN;
SELECT * FROM no_plan();

SELECT is((SELECT count(*)::int FROM pg_extension WHERE extname LIKE 'pgcloud%'), 15,
    'core, 13 services and the meta-extension are installed');
DROP EXTENSION pgcloud_core CASCADE;
SELECT is((SELECT count(*)::int FROM pg_extension WHERE extname LIKE 'pgcloud%'), 0, 'every pgcloud extension is gone');
SELECT is((SELECT count(*)::int FROM pg_namespace WHERE nspname IN
           ('pgcloud', 'api', 'auth', 'inventory', 'provisioning', 'maas', 'releases', 'billing', 'payments',
            'terminal', 'appruntime', 'storage', 'admin', 'notification', 'databases')), 0,
    'no pgcloud schema is left');
SELECT is((SELECT count(*)::int FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE r.rolname LIKE 'pgcloud%'), 0,
    'no routine owned by a pgcloud role is left');
SELECT is((SELECT count(*)::int FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname LIKE 'pgcloud%'), 0,
    'no relation owned by a pgcloud role is left');
CREATE EXTENSION pgcloud CASCADE;
SELECT is((SELECT count(*)::int FROM pg_extension WHERE extname LIKE 'pgcloud%'), 15, 'it installs again');

SELECT * FROM finish();
ROLLBACK;
