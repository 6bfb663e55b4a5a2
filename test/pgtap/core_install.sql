-- The installed shape: schemas, roles, boundaries, comments, privileges.
-- services: core
BEGIN;
SELECT * FROM no_plan();

SELECT is((SELECT count(*)::int FROM pgcloud.services), 13, 'the registry lists 13 services');
SELECT is(
    (SELECT count(*)::int FROM pgcloud.services s JOIN pg_namespace n ON n.nspname = s.schema_name),
    13, 'every service schema exists');
SELECT is(
    (SELECT array_agg(s.name ORDER BY s.name) FROM pgcloud.services s
      JOIN pg_namespace n ON n.nspname = s.schema_name
      JOIN pg_roles r ON r.oid = n.nspowner
     WHERE r.rolname = 'pgcloud_svc_' || s.name AND NOT r.rolcanlogin),
    (SELECT array_agg(name ORDER BY name) FROM pgcloud.services),
    'each service schema is owned by its NOLOGIN role pgcloud_svc_<service>');
SELECT is((SELECT count(*)::int FROM pg_roles WHERE rolname IN
           ('pgcloud_authenticator', 'pgcloud_anon', 'pgcloud_user', 'pgcloud_admin', 'pgcloud_service')),
    5, 'the five API roles exist');
SELECT ok((SELECT rolcanlogin AND NOT rolinherit FROM pg_roles WHERE rolname = 'pgcloud_authenticator'),
    'pgcloud_authenticator is LOGIN NOINHERIT');
SELECT ok((SELECT bool_and(pg_has_role('pgcloud_authenticator', r, 'MEMBER'))
             FROM unnest(ARRAY['pgcloud_anon', 'pgcloud_user', 'pgcloud_admin', 'pgcloud_service']) r),
    'the authenticator can switch to every API role');
SELECT is_empty($$
    SELECT a.name, b.schema_name
      FROM pgcloud.services a CROSS JOIN pgcloud.services b
     WHERE a.name <> b.name
       AND (has_schema_privilege('pgcloud_svc_' || a.name, b.schema_name, 'USAGE')
         OR has_schema_privilege('pgcloud_svc_' || a.name, b.schema_name, 'CREATE'))
$$, 'no service role has USAGE or CREATE on another service''s schema');
SELECT is_empty($$
    SELECT n.nspname FROM pg_namespace n
     WHERE n.nspname IN (SELECT schema_name FROM pgcloud.services)
       AND (has_schema_privilege('pgcloud_anon', n.oid, 'USAGE') OR has_schema_privilege('pgcloud_user', n.oid, 'USAGE'))
$$, 'API roles cannot reach service schemas directly');
SELECT is_empty($$
    SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgcloud' AND c.relkind = 'r'
       AND (has_table_privilege('pgcloud_anon', c.oid, 'SELECT') OR has_table_privilege('pgcloud_user', c.oid, 'SELECT')
         OR has_table_privilege('pgcloud_anon', c.oid, 'INSERT') OR has_table_privilege('pgcloud_user', c.oid, 'INSERT'))
$$, 'API roles cannot read or write core tables');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE (n.nspname = 'pgcloud' OR (n.nspname = 'api' AND p.proowner = 'pgcloud_svc_core'::regrole))
       AND has_function_privilege('pgcloud_anon', p.oid, 'EXECUTE')
       AND p.proname NOT IN ('pre_request', 'sanitize')
$$, 'anon may execute only pre_request() and sanitize() of the core (each service tests its own public api functions)');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('pgcloud', 'api') AND p.prosecdef
       AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
$$, 'every SECURITY DEFINER function pins search_path');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN (SELECT 'pgcloud' UNION ALL SELECT 'api' UNION ALL SELECT schema_name FROM pgcloud.services)
       AND obj_description(p.oid, 'pg_proc') IS NULL
$$, 'every function has a COMMENT');
SELECT is_empty($$
    SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN (SELECT 'pgcloud' UNION ALL SELECT schema_name FROM pgcloud.services)
       AND c.relkind IN ('r', 'v', 'm') AND obj_description(c.oid, 'pg_class') IS NULL
$$, 'every table and view has a COMMENT');
SELECT is_empty($$
    SELECT a.attrelid::regclass, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN (SELECT 'pgcloud' UNION ALL SELECT schema_name FROM pgcloud.services)
       AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped
       AND col_description(a.attrelid, a.attnum) IS NULL
$$, 'every column has a COMMENT');
SELECT is_empty($$
    SELECT n.nspname FROM pg_namespace n
     WHERE n.nspname IN (SELECT 'pgcloud' UNION ALL SELECT 'api' UNION ALL SELECT schema_name FROM pgcloud.services)
       AND obj_description(n.oid, 'pg_namespace') IS NULL
$$, 'every schema has a COMMENT');
SELECT is_empty($$
    SELECT c.oid::regclass, r.rolname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_roles r ON r.oid = c.relowner
     WHERE n.nspname = 'pgcloud' AND r.rolname <> 'pgcloud_svc_core'
$$, 'core objects belong to pgcloud_svc_core, not to the installing superuser');

SELECT * FROM finish();
ROLLBACK;
