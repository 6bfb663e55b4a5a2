-- Each api function is declared in one place: its exposure (pgcloud.expose,
-- next to its definition) is the only source of its EXECUTE grants; its
-- idempotent operation <op> runs the handler <op>_apply, which does not
-- authorize again.
-- services: core admin appruntime auth billing databases inventory maas notification payments provisioning releases storage terminal
BEGIN;
SELECT * FROM no_plan();

SELECT cmp_ok((SELECT count(*)::int FROM pgcloud.api_surface), '>=', 90, 'the api schema holds the services'' functions');
SELECT is_empty($$ SELECT function, exposures FROM pgcloud.api_surface WHERE exposures <> 1 OR roles IS NULL $$,
    'every function in schema api has exactly one exposure');
SELECT is_empty($$
    SELECT e.signature FROM pgcloud.api_exposures e
     WHERE NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE p.oid = e.function_oid AND n.nspname = 'api' AND p.oid::regprocedure::text = e.signature) $$,
    'every exposure names an existing api function');
SELECT is_empty($$
    SELECT function, roles, callable_by FROM pgcloud.api_surface
     WHERE NOT (roles @> callable_by AND callable_by @> roles) $$,
    'the API roles that can EXECUTE each api function are exactly those its exposure declares');
SELECT is_empty($$
    SELECT function FROM pgcloud.api_surface WHERE 'anon' = ANY (callable_by) AND NOT 'anon' = ANY (roles) $$,
    'anon reaches only what is declared anon');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'api' AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) $$,
    'PUBLIC may execute no api function');
SELECT is(
    (SELECT array_agg(function::text ORDER BY function::text) FROM pgcloud.api_surface WHERE 'anon' = ANY (roles)),
    ARRAY['api.dev_login(text)', 'api.jwks()', 'api.list_images()', 'api.list_skus()', 'api.marketplace()',
          'api.refresh_token(text)', 'api.service_token(text,text)', 'api.ssh_ca_public_key()',
          'api.stripe_webhook(json)', 'api.stripe_webhook(text)', 'api.token_exchange(text)'],
    'the anonymous surface is the sign-in functions, the public keys, the catalogue and the Stripe webhook');

-- Attacks: roles calling what their exposure does not name are refused by PostgreSQL.
SELECT is(pg_temp.sqlstate_as('pgcloud_anon', 'SELECT api.balance()'), '42501', 'anon cannot call a user function');
SELECT is(pg_temp.sqlstate_as('pgcloud_user', $$SELECT api.admin_adjust_balance(gen_random_uuid(), 1, 'x')$$), '42501',
    'a user cannot call an admin function');
SELECT is(pg_temp.sqlstate_as('pgcloud_service', 'SELECT api.list_allocations()'), '42501',
    'a service account cannot call a user function it is not exposed to');
SELECT is(pg_temp.sqlstate_as('pgcloud_user', $$SELECT billing.adjust_balance_apply(gen_random_uuid(), 1, 'x')$$), '42501',
    'a handler cannot be called around its api function');

-- Authorization happens in the api function: pgcloud.authorize*() in its
-- body, or in the service helper it starts with (databases' environment_for
-- and service_for decide owner-or-admin). An api function written in C
-- authorizes in C (PgcloudAuthorizeUser(), src/core/authorize.c): the
-- symbols listed here, whose refusals provisioning_allocations tests.
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'api'
      JOIN pgcloud.api_exposures e ON e.function_oid = p.oid
     WHERE NOT 'anon' = ANY (e.roles) AND p.prosrc !~ 'pgcloud\.authorize(_scope|_service)?\('
       AND NOT (p.prolang = (SELECT l.oid FROM pg_language l WHERE l.lanname = 'c')
                AND p.prosrc IN ('pgcloud_provisioning_create_allocation'))
       AND NOT EXISTS (SELECT 1 FROM pg_proc q JOIN pg_namespace qn ON qn.oid = q.pronamespace
                        WHERE qn.nspname NOT IN ('api', 'pgcloud', 'pg_catalog')
                          AND p.prosrc ~ (qn.nspname || '\.' || q.proname || '\(')
                          AND q.prosrc ~ 'pgcloud\.authorize(_scope|_service)?\(') $$,
    'every api function that anonymous callers may not reach authorizes, itself');

-- The declaration itself.
CREATE FUNCTION api.tap_exposed(x int) RETURNS int LANGUAGE sql AS $$ SELECT x $$;
GRANT EXECUTE ON FUNCTION api.tap_exposed(int) TO pgcloud_admin;
SELECT lives_ok($$ SELECT pgcloud.expose('api.tap_exposed(int)', 'user', 'service') $$, 'pgcloud.expose declares an exposure');
SELECT is((SELECT callable_by FROM pgcloud.api_surface WHERE function = 'api.tap_exposed(int)'::regprocedure),
    ARRAY['user', 'service'], 'it grants what it declares and revokes PUBLIC and the undeclared API roles');
SELECT throws_like($$ SELECT pgcloud.expose('api.tap_exposed(int)', 'admin') $$, '%already exposed%',
    'a second exposure of the same function is refused');
SELECT throws_like($$ SELECT pgcloud.expose('pgcloud.claims()', 'anon') $$, '%not a function in schema api%',
    'only api functions are exposed');
CREATE FUNCTION api.tap_exposed2() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
SELECT throws_like($$ SELECT pgcloud.expose('api.tap_exposed2()', 'root') $$, '%roles must be%',
    'unknown roles are refused');
SELECT throws_like($$ SELECT pgcloud.expose('api.tap_exposed2()', VARIADIC '{}'::text[]) $$, '%roles must be%',
    'an exposure names at least one role');
SELECT is((SELECT exposures FROM pgcloud.api_surface WHERE function = 'api.tap_exposed2()'::regprocedure), 0,
    'an undeclared function shows up with no exposure');
SELECT ok(NOT has_function_privilege('pgcloud_svc_core', 'pgcloud.expose(regprocedure, text[])', 'EXECUTE')
      AND NOT has_function_privilege('pgcloud_admin', 'pgcloud.expose(regprocedure, text[])', 'EXECUTE'),
    'pgcloud.expose is install-time only');

-- Idempotent operations: <op> runs <op>_apply, and handlers do not authorize.
SELECT is_empty($$
    SELECT p.oid::regprocedure, m[1] AS op
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace AND n.nspname = 'api',
           regexp_matches(p.prosrc, 'pgcloud\.idempotent\(''([a-z_]+\.[a-z_]+)''', 'g') m
     WHERE p.prosrc !~ ('pgcloud\.idempotent_done\(''' || m[1] || ''',\s*' || replace(m[1], '.', '\.') || '_apply\(') $$,
    'every idempotent operation <op> of an api function is finished with its handler <op>_apply');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.proname LIKE '%\_apply' AND n.nspname <> 'pg_temp' AND p.prosrc ~ 'pgcloud\.authorize'
       AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                    WHERE d.objid = p.oid AND d.deptype = 'e' AND e.extname LIKE 'pgcloud%') $$,
    'no _apply handler authorizes a second time');
SELECT is_empty($$
    SELECT p.oid::regprocedure FROM pg_proc p
     WHERE p.proname LIKE '%\_apply' AND 'jsonb'::regtype = ANY (p.proargtypes::oid[]::regtype[])
       AND p.proname <> 'set_policy_apply'
       AND EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                    WHERE d.objid = p.oid AND d.deptype = 'e' AND e.extname LIKE 'pgcloud%')
       AND p.prosrc ~ 'args\s*->' $$,
    'no handler unpacks its arguments from JSON again');


SELECT * FROM finish();
ROLLBACK;
