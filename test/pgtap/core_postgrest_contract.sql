-- services: core auth inventory provisioning releases billing payments notification storage admin terminal appruntime databases
-- Every api function, called exactly as PostgREST calls it (docs/http.md):
--   POST /rpc/<fn> with Content-Type: application/json: the body is $1::json
--   and named arguments come out of json_to_record(), cast to each
--   parameter's type: SELECT "api"."fn"("a" := pgrst_args."a", ...);
--   a function with a single unnamed json (or jsonb) parameter gets the raw
--   body: SELECT "api"."fn"($1::json);
--   GET /rpc/<fn>?a=... (STABLE and IMMUTABLE functions only) is the same
--   call with every argument a string, in a READ ONLY transaction;
-- each as every role granted EXECUTE, with that role's claims. The call must
-- reach the function (no "function does not exist" or ambiguity, no type
-- error from the argument casts) and end either with a result or with a
-- catalogued error (SQLSTATE PGRST): never an uncatalogued one, and never
-- a write from a GET.
BEGIN;
SELECT * FROM no_plan();

-- A value of the parameter's type, as JSON (as_text: as a query string gives it).
CREATE FUNCTION pg_temp.sample(name text, typ regtype, as_text boolean) RETURNS json LANGUAGE sql AS $$
    SELECT CASE
        WHEN typ = 'uuid'::regtype THEN to_json('0c0c0c0c-0000-4000-8000-00000000c0c0'::text)
        WHEN typ IN ('integer'::regtype, 'bigint'::regtype, 'smallint'::regtype, 'numeric'::regtype) AND as_text THEN to_json('1'::text)
        WHEN typ IN ('integer'::regtype, 'bigint'::regtype, 'smallint'::regtype, 'numeric'::regtype) THEN to_json(1)
        WHEN typ = 'boolean'::regtype AND as_text THEN to_json('true'::text)
        WHEN typ = 'boolean'::regtype THEN to_json(true)
        WHEN typ IN ('jsonb'::regtype, 'json'::regtype) THEN '{}'::json
        WHEN typ = 'text[]'::regtype AND as_text THEN to_json('{contract}'::text)
        WHEN typ = 'text[]'::regtype THEN '["contract"]'::json
        WHEN typ = 'uuid[]'::regtype AND as_text THEN to_json('{}'::text)
        WHEN typ = 'uuid[]'::regtype THEN '[]'::json
        WHEN typ = 'timestamp with time zone'::regtype THEN to_json('2026-01-01T00:00:00Z'::text)
        WHEN name ILIKE '%email%' THEN to_json('contract@example.com'::text)
        WHEN name ILIKE '%public_key%' THEN
            to_json('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMOwPp55P+3rXvN52Am9GxAqi24MMrCru+LnotcYcsbn contract'::text)
        ELSE to_json('contract'::text)
    END
$$;

-- The statement PostgREST runs for a function (named arguments through json_to_record).
CREATE FUNCTION pg_temp.rpc_sql(f regprocedure) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    p pg_proc;
    cols text := '';
    args text := '';
    i int;
BEGIN
    SELECT * INTO p FROM pg_proc WHERE oid = f;
    IF p.pronargs = 1 AND (p.proargnames IS NULL OR p.proargnames[1] = '')
       AND p.proargtypes[0] IN ('json'::regtype, 'jsonb'::regtype, 'text'::regtype) THEN
        RETURN format('SELECT %I.%I($1::%s) AS pgrst_scalar', 'api', p.proname,
                      format_type(p.proargtypes[0], NULL));
    END IF;
    IF p.pronargs = 0 THEN
        RETURN format('SELECT %I.%I() AS pgrst_scalar FROM (SELECT $1 AS json_data) pgrst_payload', 'api', p.proname);
    END IF;
    FOR i IN 1 .. p.pronargs LOOP
        cols := cols || CASE WHEN i > 1 THEN ', ' ELSE '' END
                || format('%I %s', p.proargnames[i], format_type(p.proargtypes[i - 1], NULL));
        args := args || CASE WHEN i > 1 THEN ', ' ELSE '' END
                || format('%I := pgrst_args.%I', p.proargnames[i], p.proargnames[i]);
    END LOOP;
    RETURN format('SELECT pgrst_call.pgrst_scalar FROM (SELECT $1::json AS json_data) pgrst_payload, '
                  'LATERAL (SELECT * FROM json_to_record(pgrst_payload.json_data) AS _(%s) LIMIT 1) pgrst_args, '
                  'LATERAL (SELECT %I.%I(%s) AS pgrst_scalar) pgrst_call', cols, 'api', p.proname, args);
END $$;

CREATE FUNCTION pg_temp.body(f regprocedure, as_text boolean) RETURNS json LANGUAGE sql AS $$
    SELECT coalesce(json_object_agg(p.proargnames[i], pg_temp.sample(p.proargnames[i], p.proargtypes[i - 1], as_text)),
                    '{}'::json)
      FROM pg_proc p, generate_series(1, p.pronargs) i
     WHERE p.oid = f AND p.proargnames IS NOT NULL AND p.proargnames[i] <> ''
$$;

CREATE FUNCTION pg_temp.claims(r text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE r
        WHEN 'pgcloud_anon' THEN '{"role": "pgcloud_anon"}'
        WHEN 'pgcloud_user' THEN '{"role": "pgcloud_user", "sub": "0c0c0c0c-0000-4000-8000-0000000000a1"}'
        WHEN 'pgcloud_admin' THEN '{"role": "pgcloud_admin", "sub": "0c0c0c0c-0000-4000-8000-0000000000a2"}'
        ELSE '{"role": "pgcloud_service", "sub": "0c0c0c0c-0000-4000-8000-0000000000a3", "scopes": ["*"]}'
    END
$$;

-- Calls f as role r the way PostgREST would; returns NULL when the call
-- ended with a result or a catalogued error, else what went wrong.
CREATE FUNCTION pg_temp.call_as(f regprocedure, r text, as_get boolean) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    q text := pg_temp.rpc_sql(f);
    b json := pg_temp.body(f, as_get);
    st text; m text;
BEGIN
    IF (SELECT pronargs = 1 AND (proargnames IS NULL OR proargnames[1] = '') FROM pg_proc WHERE oid = f) THEN
        b := '{"id": "evt_contract", "object": "event"}'::json;
    END IF;
    BEGIN
        PERFORM set_config('request.jwt.claims', pg_temp.claims(r), true);
        PERFORM set_config('request.headers', '{"content-type": "application/json"}', true);
        PERFORM set_config('request.method', CASE WHEN as_get THEN 'GET' ELSE 'POST' END, true);
        EXECUTE format('SET LOCAL ROLE %I', r);
        IF as_get THEN
            SET LOCAL transaction_read_only = on;
        END IF;
        EXECUTE q USING b;
        RAISE SQLSTATE 'PCT01';                 -- undo the call's effects, keep nothing
    EXCEPTION
        WHEN SQLSTATE 'PCT01' OR SQLSTATE 'PGRST' THEN
            RETURN NULL;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
            RETURN format('%s as %s%s: %s %s', f, r, CASE WHEN as_get THEN ' (GET)' ELSE '' END, st, m);
    END;
END $$;

CREATE TEMP TABLE calls AS
    SELECT p.oid::regprocedure AS f, r, p.provolatile IN ('s', 'i') AS get_ok
      FROM pg_proc p
      CROSS JOIN unnest(ARRAY['pgcloud_anon', 'pgcloud_user', 'pgcloud_admin', 'pgcloud_service']) r
     WHERE p.pronamespace = 'api'::regnamespace AND has_function_privilege(r, p.oid, 'EXECUTE');

SELECT cmp_ok((SELECT count(DISTINCT f) FROM calls), '>=', 40::bigint, 'every api function callable by some role is checked');

SELECT is_empty($$SELECT problem FROM (SELECT pg_temp.call_as(f, r, false) AS problem FROM calls) x
                  WHERE problem IS NOT NULL$$,
    'POST, application/json: every api function is reached by its named arguments and ends with a result or a catalogued error');

SELECT is_empty($$SELECT problem FROM (SELECT pg_temp.call_as(f, r, true) AS problem FROM calls WHERE get_ok) x
                  WHERE problem IS NOT NULL$$,
    'GET: every STABLE api function takes its arguments as strings and writes nothing');

SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p
                  WHERE p.pronamespace = 'api'::regnamespace AND p.pronargs > 0
                    AND (p.proargnames IS NULL OR '' = ANY (p.proargnames[1:p.pronargs]))
                    AND NOT (p.pronargs = 1 AND p.proargtypes[0] IN ('json'::regtype, 'jsonb'::regtype, 'text'::regtype))$$,
    'every parameter has a name (PostgREST passes arguments by name), but for the single unnamed body parameter');

SELECT is_empty($$SELECT a.oid::regprocedure, b.oid::regprocedure FROM pg_proc a JOIN pg_proc b
                    ON a.proname = b.proname AND a.oid < b.oid
                  WHERE a.pronamespace = 'api'::regnamespace AND b.pronamespace = 'api'::regnamespace
                    AND NOT (a.pronargs = 1 AND b.pronargs = 1
                             AND (a.proargnames IS NULL OR a.proargnames[1] = '')
                             AND (b.proargnames IS NULL OR b.proargnames[1] = ''))$$,
    'no overloads PostgREST cannot tell apart (only single unnamed body parameters, chosen by Content-Type)');

SELECT * FROM finish();
ROLLBACK;
