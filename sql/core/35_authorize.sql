-- Authorization, decided in one place. Every api function asks here.

CREATE FUNCTION pgcloud.is_operator() RETURNS boolean
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'pgcloud_context_is_operator';
COMMENT ON FUNCTION pgcloud.is_operator() IS 'True for a superuser session at psql with no JWT claims and no SET ROLE: such a session acts as pgcloud_admin.';

-- A service account is only as strong as its scopes: a service call that
-- names no scope is refused (pgcloud.authorize_service names one).
CREATE FUNCTION pgcloud.refuse_unscoped_service() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    PERFORM pgcloud.raise('insufficient_scope',
        'this call does not name the scope a service account needs for it',
        'Service calls authorize with pgcloud.authorize_service(scope).');
    RETURN false;
END
$$;
COMMENT ON FUNCTION pgcloud.refuse_unscoped_service() IS 'Raises insufficient_scope: what pgcloud.authorize(''service'') answers a service account, whose calls must name their scope (pgcloud.authorize_service).';

CREATE FUNCTION pgcloud.authorize(required text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role text := pgcloud.request_role();
BEGIN
    IF required NOT IN ('anon', 'user', 'admin', 'service') THEN
        PERFORM pgcloud.raise('invalid_argument', format('unknown required role "%s"', required));
    END IF;
    IF pgcloud.is_operator() THEN
        RETURN 'pgcloud_admin';
    END IF;
    IF required = 'anon'
       OR (required = 'user' AND role IN ('pgcloud_user', 'pgcloud_admin'))
       OR (required = 'admin' AND role = 'pgcloud_admin')
       OR (required = 'service' AND role = 'pgcloud_service' AND pgcloud.refuse_unscoped_service()) THEN
        RETURN role;
    END IF;
    IF role = 'pgcloud_anon' OR role IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', format('this call needs role pgcloud_%s', required));
    END IF;
    PERFORM pgcloud.raise('forbidden', format('this call needs role pgcloud_%s, not %s', required, role));
END
$$;
COMMENT ON FUNCTION pgcloud.authorize(text) IS 'Checks that the request may act with the given role (anon, user, admin or service) and returns the effective role; raises unauthenticated (401) or forbidden (403). A service account never passes authorize(''service''): service calls name their scope with pgcloud.authorize_service(scope).';

-- Scopes: the same place decides them. A granted scope is a name, or a
-- name qualified by a tenant, or by a tenant and a project:
--   inventory:read                          everywhere (global)
--   tenant:acme/inventory:read              in tenant acme and all its projects
--   tenant:acme/project:ml/inventory:read   in project ml of tenant acme only
-- A name is lower-case words joined by ':' (e.g. allocations:write); a
-- granted name may be '*' (every scope) or end in ':*' (every scope under
-- that prefix). The scopes claim is a JSON array or a space-separated string
-- (claim "scopes", or OAuth's "scope").

INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('insufficient_scope', 403, 'The token does not grant the scope this call needs.');

CREATE FUNCTION pgcloud.valid_scope(scope text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT scope IS NOT NULL AND length(scope) <= 256
       AND scope ~ '^(tenant:[A-Za-z0-9_.-]{1,64}/(project:[A-Za-z0-9_.-]{1,64}/)?)?(\*|[a-z][a-z0-9_.-]*(:[a-z][a-z0-9_.-]*)*(:\*)?)$'
$$;
COMMENT ON FUNCTION pgcloud.valid_scope(text) IS 'Whether a text is a well-formed granted scope: [tenant:<t>/[project:<p>/]]<name>, where name is words joined by '':'' (e.g. allocations:write), ''*'', or a prefix ending in '':*''.';

CREATE FUNCTION pgcloud.scopes() RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    c jsonb := pgcloud.claims();
    s jsonb := coalesce(c -> 'scopes', c -> 'scope');
BEGIN
    IF s IS NULL OR jsonb_typeof(s) = 'null' THEN
        RETURN '{}'::text[];
    END IF;
    IF jsonb_typeof(s) = 'string' THEN
        RETURN coalesce((SELECT array_agg(t) FROM regexp_split_to_table(s #>> '{}', '\s+') t WHERE t <> ''),
                        '{}'::text[]);
    END IF;
    IF jsonb_typeof(s) = 'array'
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(s) e WHERE jsonb_typeof(e) <> 'string') THEN
        RETURN coalesce((SELECT array_agg(e) FROM jsonb_array_elements_text(s) e WHERE e <> ''), '{}'::text[]);
    END IF;
    PERFORM pgcloud.raise('invalid_request_context', 'the scopes claim must be a JSON array of strings or a space-separated string');
END
$$;
COMMENT ON FUNCTION pgcloud.scopes() IS 'The scopes granted to the request: the scopes (or scope) claim, as a JSON array of strings or a space-separated string; {} when none.';

CREATE FUNCTION pgcloud.authorize_scope(scope text, tenant text DEFAULT NULL, project text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role text := pgcloud.request_role();
    c jsonb;
    g text;
    g_tenant text;
    g_project text;
    g_name text;
    m text[];
    where_txt text;
BEGIN
    IF scope IS NULL OR NOT pgcloud.valid_scope(scope) OR scope ~ '[/*]' THEN
        PERFORM pgcloud.raise('invalid_argument', 'the required scope must be a plain scope name such as allocations:write');
    END IF;
    IF project IS NOT NULL AND tenant IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'a project is always inside a tenant: give the tenant too');
    END IF;
    IF pgcloud.is_operator() THEN
        RETURN 'pgcloud_admin';
    END IF;
    IF role = 'pgcloud_admin' THEN
        RETURN role;            -- administrators hold every scope
    END IF;
    IF role = 'pgcloud_anon' OR role IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', format('this call needs scope "%s"', scope));
    END IF;
    IF role NOT IN ('pgcloud_user', 'pgcloud_service') THEN
        PERFORM pgcloud.raise('forbidden', format('role %s holds no scopes', role));
    END IF;
    where_txt := CASE WHEN project IS NOT NULL THEN format(' in project %s of tenant %s', project, tenant)
                      WHEN tenant IS NOT NULL THEN format(' in tenant %s', tenant) ELSE '' END;
    -- A token bound to a tenant or project acts only there.
    c := pgcloud.claims();
    IF (c ? 'tenant' AND c ->> 'tenant' IS DISTINCT FROM tenant)
       OR (c ? 'project' AND c ->> 'project' IS DISTINCT FROM project) THEN
        PERFORM pgcloud.raise('insufficient_scope',
            format('this token is bound to %s and cannot act%s', concat_ws('/', 'tenant ' || (c ->> 'tenant'), 'project ' || (c ->> 'project')),
                   coalesce(nullif(where_txt, ''), ' globally')),
            NULL, jsonb_build_object('WWW-Authenticate', format('Bearer error="insufficient_scope", scope="%s"', scope)));
    END IF;
    FOREACH g IN ARRAY pgcloud.scopes() LOOP
        IF NOT pgcloud.valid_scope(g) THEN
            CONTINUE;
        END IF;
        m := regexp_match(g, '^(?:tenant:([^/]+)/(?:project:([^/]+)/)?)?(.+)$');
        g_tenant := m[1];
        g_project := m[2];
        g_name := m[3];
        IF (g_name = '*' OR g_name = scope OR (g_name LIKE '%:*' AND starts_with(scope, left(g_name, -1))))
           AND (g_tenant IS NULL
                OR (g_tenant = tenant AND (g_project IS NULL OR g_project = project))) THEN
            RETURN role;
        END IF;
    END LOOP;
    PERFORM pgcloud.raise('insufficient_scope', format('this call needs scope "%s"%s', scope, where_txt), NULL,
        jsonb_build_object('WWW-Authenticate', format('Bearer error="insufficient_scope", scope="%s"', scope)));
END
$$;
COMMENT ON FUNCTION pgcloud.authorize_scope(text, text, text) IS 'Checks that the request holds scope (a plain name such as allocations:write) for the given tenant and project (NULL = a global resource): a global grant covers every tenant and project, a tenant grant that tenant''s projects, a project grant that project; a token with a tenant or project claim acts only there. Administrators hold every scope. Returns the effective role; raises unauthenticated (401), forbidden (403) or insufficient_scope (403).';

CREATE FUNCTION pgcloud.authorize_service(scope text, tenant text DEFAULT NULL, project text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role text := pgcloud.request_role();
BEGIN
    IF pgcloud.is_operator() THEN
        RETURN 'pgcloud_admin';
    END IF;
    IF role = 'pgcloud_anon' OR role IS NULL THEN
        PERFORM pgcloud.raise('unauthenticated', format('this call needs role pgcloud_service with scope "%s"', scope));
    END IF;
    IF role <> 'pgcloud_service' THEN
        PERFORM pgcloud.raise('forbidden', format('this call needs role pgcloud_service, not %s', role));
    END IF;
    RETURN pgcloud.authorize_scope(scope, tenant, project);
END
$$;
COMMENT ON FUNCTION pgcloud.authorize_service(text, text, text) IS 'Service calls (api.service_*): checks that the request is a service account (role pgcloud_service) holding scope (e.g. terminal:redeem) for the tenant and project; returns the effective role; raises unauthenticated (401), forbidden (403) or insufficient_scope (403).';
