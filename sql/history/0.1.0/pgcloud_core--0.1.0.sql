-- pgcloud_core install script, built by make from sql/ — do not edit
\echo Use "CREATE EXTENSION pgcloud_core" to load this file. \quit

-- source: sql/core/00_roles.sql
-- Roles are cluster-wide: create the ones that are missing, so a second
-- database installs cleanly. They outlive DROP EXTENSION on purpose.
DO $roles$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('pgcloud_authenticator', 'LOGIN NOINHERIT'),
            ('pgcloud_anon',          'NOLOGIN'),
            ('pgcloud_user',          'NOLOGIN'),
            ('pgcloud_admin',         'NOLOGIN'),
            ('pgcloud_service',       'NOLOGIN'),
            ('pgcloud_svc_core',      'NOLOGIN'),
            ('pgcloud_services',      'NOLOGIN')
        ) AS t(name, options)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I %s', r.name, r.options);
        END IF;
    END LOOP;
    -- PostgREST connects as the authenticator and switches to the JWT's role.
    FOR r IN SELECT unnest(ARRAY['pgcloud_anon', 'pgcloud_user', 'pgcloud_admin', 'pgcloud_service']) AS name
    LOOP
        IF NOT pg_catalog.pg_has_role('pgcloud_authenticator', r.name, 'MEMBER') THEN
            EXECUTE pg_catalog.format('GRANT %I TO pgcloud_authenticator', r.name);
        END IF;
    END LOOP;
END
$roles$;

CREATE SCHEMA pgcloud AUTHORIZATION pgcloud_svc_core;
COMMENT ON SCHEMA pgcloud IS 'pgcloud shared primitives: request context, errors, policy, audit, idempotency, outbox and inbox. Not exposed over HTTP.';

CREATE SCHEMA api AUTHORIZATION pgcloud_svc_core;
COMMENT ON SCHEMA api IS 'The public API of pgcloud: PostgREST serves this schema as it is. Every function is owned by the role of the service that defines it.';

GRANT USAGE ON SCHEMA api TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
-- API roles may call pgcloud.pre_request() and a few pure helpers; nothing
-- else in this schema is granted to them.
GRANT USAGE ON SCHEMA pgcloud TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service, pgcloud_services;

-- source: sql/core/10_context.sql
-- Request context: the same from PostgREST (which sets request.jwt.claims and
-- request.headers per transaction) and from psql (where they are set by hand).

CREATE FUNCTION pgcloud.claims() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    raw text := current_setting('request.jwt.claims', true);
    j jsonb;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN '{}'::jsonb;
    END IF;
    BEGIN
        j := raw::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM pgcloud.raise('invalid_request_context', 'request.jwt.claims is not valid JSON');
    END;
    IF jsonb_typeof(j) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_request_context', 'request.jwt.claims must be a JSON object');
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgcloud.claims() IS 'The JWT claims of the current request (request.jwt.claims), or {} when none.';

CREATE FUNCTION pgcloud.headers() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    raw text := current_setting('request.headers', true);
    j jsonb;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN '{}'::jsonb;
    END IF;
    BEGIN
        j := raw::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        PERFORM pgcloud.raise('invalid_request_context', 'request.headers is not valid JSON');
    END;
    IF jsonb_typeof(j) <> 'object' THEN
        PERFORM pgcloud.raise('invalid_request_context', 'request.headers must be a JSON object');
    END IF;
    RETURN j;
END
$$;
COMMENT ON FUNCTION pgcloud.headers() IS 'The HTTP headers of the current request (request.headers, lower-case names), or {} when none.';

CREATE FUNCTION pgcloud.header(name text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.headers() ->> lower(name) $$;
COMMENT ON FUNCTION pgcloud.header(text) IS 'One request header by name (case-insensitive), or NULL.';

CREATE FUNCTION pgcloud.request_role() RETURNS text
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_role';
COMMENT ON FUNCTION pgcloud.request_role() IS 'The role of the current request: the JWT role claim, else the role set with SET ROLE, else the session user.';

CREATE FUNCTION pgcloud.user_id() RETURNS uuid
LANGUAGE C STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_user_id';
COMMENT ON FUNCTION pgcloud.user_id() IS 'The authenticated principal (the JWT sub claim as uuid), or NULL for anonymous requests; a sub that is not a uuid raises invalid_request_context.';

CREATE FUNCTION pgcloud.correlation_id() RETURNS text
LANGUAGE C VOLATILE PARALLEL UNSAFE
AS 'MODULE_PATHNAME', 'pgcloud_context_correlation_id';
COMMENT ON FUNCTION pgcloud.correlation_id() IS 'The correlation id of the current transaction: X-Correlation-Id when well-formed (1-128 of [A-Za-z0-9._:-]), else a new uuid kept for the rest of the transaction.';

CREATE FUNCTION pgcloud.context() RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT jsonb_build_object(
        'role', pgcloud.request_role(),
        'user_id', pgcloud.user_id(),
        'tenant', pgcloud.claims() ->> 'tenant',
        'project', pgcloud.claims() ->> 'project',
        'scopes', coalesce(pgcloud.claims() -> 'scopes', '[]'::jsonb),
        'correlation_id', pgcloud.correlation_id())
$$;
COMMENT ON FUNCTION pgcloud.context() IS 'The whole request context as JSON: role, user_id, tenant, project, scopes, correlation_id.';

-- source: sql/core/20_errors.sql
-- The error catalogue and the raise function (PostgREST custom-error form).

CREATE TABLE pgcloud.error_codes (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{2,62}$'),
    http_status integer NOT NULL CHECK (http_status BETWEEN 400 AND 599),
    message     text NOT NULL CHECK (message <> ''),
    service     text NOT NULL DEFAULT 'core'
);
COMMENT ON TABLE pgcloud.error_codes IS 'The one error catalogue: every API error has a code, an HTTP status and a message. Services add their codes at install.';
COMMENT ON COLUMN pgcloud.error_codes.code IS 'Stable machine-readable code, returned as "code" in the error body.';
COMMENT ON COLUMN pgcloud.error_codes.http_status IS 'HTTP status PostgREST answers with.';
COMMENT ON COLUMN pgcloud.error_codes.message IS 'Human-readable message, returned as "message".';
COMMENT ON COLUMN pgcloud.error_codes.service IS 'The service that owns the code.';

INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('invalid_argument',          400, 'An argument is missing or not valid.'),
    ('invalid_request_context',   400, 'The request context (claims or headers) is not valid.'),
    ('invalid_event',             400, 'The event is not valid.'),
    ('idempotency_key_invalid',   400, 'The idempotency key must be 1 to 255 printable ASCII characters.'),
    ('unauthenticated',           401, 'Authentication is required.'),
    ('forbidden',                 403, 'You are not allowed to do this.'),
    ('not_found',                 404, 'The requested resource does not exist.'),
    ('conflict',                  409, 'The request conflicts with the current state.'),
    ('idempotency_key_in_use',    409, 'A request with this idempotency key is still being processed.'),
    ('invalid_state_transition',  409, 'This change of state is not allowed.'),
    ('idempotency_key_reused',    422, 'This idempotency key was already used with different arguments.'),
    ('rate_limited',              429, 'Too many requests.'),
    ('policy_missing',            500, 'A required policy value is not configured.'),
    ('policy_invalid',            500, 'A policy value has the wrong type or range.'),
    ('unknown_error_code',        500, 'An internal error occurred.');

CREATE FUNCTION pgcloud.raise(code text, details text DEFAULT NULL, hint text DEFAULT NULL, headers jsonb DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS 'MODULE_PATHNAME', 'pgcloud_error_raise';
COMMENT ON FUNCTION pgcloud.raise(text, text, text, jsonb) IS 'Raises the catalogued error "code" in PostgREST''s custom-error form: SQLSTATE PGRST, message {code, message, details, hint}, detail {status, headers}.';

-- Security boundaries (issue 10).
INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('event_not_permitted',       403, 'This service may not emit this event type.'),
    ('http_target_not_permitted', 403, 'This service may not call this outbound target.'),
    ('insecure_transport',        500, 'Credentials would travel over an unencrypted connection.');

-- source: sql/core/30_policy.sql
-- Policy: every business constant is a row, read through one typed accessor.

CREATE TABLE pgcloud.policy_values (
    key         text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    value       jsonb NOT NULL,
    description text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE pgcloud.policy_values IS 'Business constants as <service>.<name> rows; changed only through pgcloud.set_policy().';
COMMENT ON COLUMN pgcloud.policy_values.key IS '<service>.<name>, e.g. billing.low_balance_threshold.';
COMMENT ON COLUMN pgcloud.policy_values.value IS 'The value as JSON (number, boolean, string, object or array).';
COMMENT ON COLUMN pgcloud.policy_values.description IS 'What the value governs, and its unit.';
COMMENT ON COLUMN pgcloud.policy_values.updated_at IS 'When the value was last set.';
COMMENT ON COLUMN pgcloud.policy_values.updated_by IS 'Who last set the value.';

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.idempotency_ttl_seconds', '86400', 'How long an idempotency key and its stored response are kept (seconds).'),
    ('core.rate_limit_per_second',   '20',    'Sustained API requests per second per principal.'),
    ('core.rate_limit_burst',        '40',    'API requests a principal may make in a burst.'),
    ('auth.dev_login_enabled',       'false', 'Whether api.dev_login() may sign users in without an identity provider.'),
    ('auth.access_token_ttl_seconds',  '900',   'Lifetime of platform access tokens (seconds).'),
    ('auth.refresh_token_ttl_seconds', '2592000', 'Lifetime of refresh tokens (seconds).'),
    ('billing.accrual_interval_seconds', '60', 'Length of one usage accrual interval (seconds).'),
    ('billing.min_balance_to_allocate', '100', 'Balance (minor units) an account needs to create an allocation.'),
    ('billing.low_balance_threshold',  '500', 'Balance (minor units) under which a low-balance event is raised.'),
    ('payments.webhook_tolerance_seconds', '300', 'Maximum age of a Stripe webhook signature timestamp (seconds).'),
    ('payments.checkout_min_amount', '500',     'Smallest top-up (minor units).'),
    ('payments.checkout_max_amount', '1000000', 'Largest top-up (minor units).'),
    ('terminal.token_ttl_seconds',   '60',     'Lifetime of a terminal token (seconds).'),
    -- Rate limiting behind proxies, per endpoint class (issue 10).
    ('core.rate_limit_trusted_proxies', '1', 'Reverse proxies in front of PostgREST that append the client address to X-Forwarded-For; the client is that many entries from the right (0: ignore the header, all anonymous callers share one bucket).'),
    ('core.rate_limit_signin_per_second', '1', 'Sustained sign-in and token exchange requests (token_exchange, dev_login, service_token) per second per principal.'),
    ('core.rate_limit_signin_burst',      '10', 'Sign-in and token exchange requests a principal may make in a burst.'),
    ('core.rate_limit_refresh_per_second', '1', 'Sustained refresh_token requests per second per principal.'),
    ('core.rate_limit_refresh_burst',     '10', 'refresh_token requests a principal may make in a burst.'),
    ('core.rate_limit_webhook_per_second', '50', 'Sustained stripe_webhook requests per second per sending address.'),
    ('core.rate_limit_webhook_burst',     '200', 'stripe_webhook requests a sending address may make in a burst.');

CREATE FUNCTION pgcloud.policy(key text, as_type anyelement) RETURNS anyelement
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS 'MODULE_PATHNAME', 'pgcloud_policy_get';
COMMENT ON FUNCTION pgcloud.policy(text, anyelement) IS 'Reads a policy value as the type of its second argument, e.g. pgcloud.policy(''core.rate_limit_burst'', NULL::int). A missing key raises policy_missing; a value of the wrong type raises policy_invalid.';

-- source: sql/core/35_authorize.sql
-- Authorization, decided in one place. Every api function asks here.

CREATE FUNCTION pgcloud.is_operator() RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    -- A superuser at psql, with no JWT and no SET ROLE, acts as an operator.
    SELECT pgcloud.claims() = '{}'::jsonb
       AND current_setting('role') = 'none'
       AND coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
$$;
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

-- source: sql/core/36_sessions.sql
-- Revoked sessions: pgcloud.pre_request() refuses access tokens whose sid
-- claim names one of these (an indexed lookup per request). auth writes
-- them when a session is revoked (logout, refresh-token reuse); a row is
-- kept until every access token of the session has expired.

INSERT INTO pgcloud.error_codes (code, http_status, message) VALUES
    ('session_revoked', 401, 'This session has been revoked; sign in again.');

CREATE TABLE pgcloud.revoked_sessions (
    session_id uuid PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_sessions_expires_idx ON pgcloud.revoked_sessions (expires_at);
COMMENT ON TABLE pgcloud.revoked_sessions IS 'Sessions whose access tokens pgcloud.pre_request() refuses (sid claim), kept until those tokens have expired.';
COMMENT ON COLUMN pgcloud.revoked_sessions.session_id IS 'The session id (the sid claim of its access tokens).';
COMMENT ON COLUMN pgcloud.revoked_sessions.revoked_at IS 'When the session was revoked.';
COMMENT ON COLUMN pgcloud.revoked_sessions.expires_at IS 'When the last access token of the session expires; the row may be pruned after that.';

CREATE FUNCTION pgcloud.revoke_session(session_id uuid, expires_at timestamptz) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    INSERT INTO pgcloud.revoked_sessions AS r (session_id, expires_at)
    VALUES (revoke_session.session_id, revoke_session.expires_at)
    ON CONFLICT (session_id) DO UPDATE SET expires_at = greatest(r.expires_at, excluded.expires_at)
$$;
COMMENT ON FUNCTION pgcloud.revoke_session(uuid, timestamptz) IS 'Services: marks a session revoked until expires_at (when its last access token expires); pgcloud.pre_request() then refuses its tokens with session_revoked (401).';

CREATE FUNCTION pgcloud.prune_revoked_sessions() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    WITH gone AS (DELETE FROM pgcloud.revoked_sessions WHERE expires_at <= now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION pgcloud.prune_revoked_sessions() IS 'Deletes revocations whose access tokens have all expired; returns how many. Run by the job core.prune_revoked_sessions.';

-- source: sql/core/40_audit.sql
-- Audit log: append-only (the immutable trigger guards it for every role).

CREATE TABLE pgcloud.audit_logs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor          uuid,
    role           text NOT NULL,
    action         text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    target_type    text,
    target_id      text,
    target         text GENERATED ALWAYS AS (coalesce(target_type, '') || ':' || coalesce(target_id, '')) STORED,
    result         text NOT NULL CHECK (result IN ('ok', 'denied', 'rejected', 'failed')),
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    correlation_id text NOT NULL
);
CREATE INDEX audit_logs_at_idx ON pgcloud.audit_logs (at);
CREATE INDEX audit_logs_actor_idx ON pgcloud.audit_logs (actor, at) WHERE actor IS NOT NULL;
CREATE INDEX audit_logs_action_idx ON pgcloud.audit_logs (action, at);
COMMENT ON TABLE pgcloud.audit_logs IS 'Append-only record of every privileged mutation: UPDATE, DELETE and TRUNCATE are rejected for every role.';
COMMENT ON COLUMN pgcloud.audit_logs.id IS 'Monotonic entry number.';
COMMENT ON COLUMN pgcloud.audit_logs.at IS 'When the entry was written.';
COMMENT ON COLUMN pgcloud.audit_logs.actor IS 'The acting user or service account (JWT sub), NULL for operators and anonymous callers.';
COMMENT ON COLUMN pgcloud.audit_logs.role IS 'The role the actor used (JWT role claim, SET ROLE, or the session user).';
COMMENT ON COLUMN pgcloud.audit_logs.action IS 'Dotted action name, e.g. policy.set.';
COMMENT ON COLUMN pgcloud.audit_logs.target_type IS 'Kind of the object acted on.';
COMMENT ON COLUMN pgcloud.audit_logs.target_id IS 'Identifier of the object acted on.';
COMMENT ON COLUMN pgcloud.audit_logs.target IS 'target_type:target_id, for reading and filtering.';
COMMENT ON COLUMN pgcloud.audit_logs.result IS 'ok, denied, rejected or failed.';
COMMENT ON COLUMN pgcloud.audit_logs.details IS 'Further facts as JSON, scrubbed of secrets.';
COMMENT ON COLUMN pgcloud.audit_logs.correlation_id IS 'Correlation id of the request that acted.';

CREATE FUNCTION pgcloud.immutable() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_trigger_immutable';
COMMENT ON FUNCTION pgcloud.immutable() IS 'Trigger: rejects UPDATE, DELETE (BEFORE ... FOR EACH ROW) and TRUNCATE (BEFORE TRUNCATE) for every role, the owner included.';

CREATE FUNCTION pgcloud.transition() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_trigger_transition';
COMMENT ON FUNCTION pgcloud.transition() IS 'Trigger: pgcloud.transition(state_column, transitions_table). Allows a change of state_column only when transitions_table (from_state, to_state) lists it; from_state NULL lists initial states.';

CREATE TRIGGER audit_logs_immutable BEFORE UPDATE OR DELETE ON pgcloud.audit_logs
    FOR EACH ROW EXECUTE FUNCTION pgcloud.immutable();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON pgcloud.audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.immutable();

CREATE FUNCTION pgcloud.sanitize(text) RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_sanitize';
COMMENT ON FUNCTION pgcloud.sanitize(text) IS 'Scrubs secrets from text: e-mail addresses, JWTs and bearer tokens, Authorization headers and password-like fields, Stripe keys, card numbers (Luhn), passwords in URIs, private keys. The server log passes through the same scrubber.';

CREATE FUNCTION pgcloud.audit(action text, target_type text, target_id text,
                              result text DEFAULT 'ok', details jsonb DEFAULT '{}'::jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    clean jsonb;
    r pgcloud.audit_logs;
BEGIN
    IF action IS NULL OR action !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'audit action must be dotted lower-case words, e.g. policy.set');
    END IF;
    IF result IS NULL OR result NOT IN ('ok', 'denied', 'rejected', 'failed') THEN
        PERFORM pgcloud.raise('invalid_argument', 'audit result must be ok, denied, rejected or failed');
    END IF;
    BEGIN
        clean := pgcloud.sanitize(coalesce(details, '{}'::jsonb)::text)::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        clean := jsonb_build_object('redacted', true);
    END;
    INSERT INTO pgcloud.audit_logs (actor, role, action, target_type, target_id, result, details, correlation_id)
    VALUES (pgcloud.user_id(), pgcloud.request_role(), action, target_type, target_id, result, clean,
            pgcloud.correlation_id())
    RETURNING * INTO r;
    -- Every database's audit reaches the admin service as events (one query sees all services).
    PERFORM pgcloud.emit('audit.recorded', 'audit', current_database() || ':' || r.id,
        jsonb_build_object('database', current_database(), 'audit_id', r.id, 'at', r.at, 'actor', r.actor,
                           'role', r.role, 'action', r.action, 'target_type', r.target_type,
                           'target_id', r.target_id, 'result', r.result, 'details', r.details,
                           'correlation_id', r.correlation_id));
    RETURN r.id;
END
$$;
COMMENT ON FUNCTION pgcloud.audit(text, text, text, text, jsonb) IS 'Appends an audit entry for the current request (actor, role and correlation id come from the request context); details are scrubbed. Announces it as audit.recorded {database, audit_id, at, actor, role, action, target_type, target_id, result, details, correlation_id} for the admin service. Returns the entry id.';

-- source: sql/core/45_safe_path.sql
-- Object paths users give us: checked and normalised in C (src/core/safe_path.c).

INSERT INTO pgcloud.error_codes (code, http_status, message, service) VALUES
    ('path_invalid', 400, 'The path is not a safe relative object path.', 'core');

CREATE FUNCTION pgcloud.safe_path(text) RETURNS text
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'pgcloud_storage_safe_path';
COMMENT ON FUNCTION pgcloud.safe_path(text) IS 'A user-supplied object path, checked and normalised (C): refuses empty and absolute paths, empty, ".." and all-dot segments, segments over 255 bytes, paths over 1024 bytes or 64 segments, NUL and control characters, backslashes, invalid UTF-8, Unicode look-alikes of "/", "\" and "." (full-width solidus, division and fraction slash, one-dot leader, ideographic full stop, ...) and invisible characters (zero-width, bidi controls, BOM), with error path_invalid (400) saying which and at what byte; drops "." segments and returns the path in NFC.';

-- source: sql/core/50_idempotency.sql
-- Idempotency: one mechanism for every mutating api function.
--
--   CREATE FUNCTION api.do_thing(a int) RETURNS jsonb ... AS $$
--       SELECT pgcloud.idempotent('svc.do_thing', jsonb_build_object('a', a),
--                                 'svc.do_thing(jsonb)')
--   $$;
--
-- Keys come from the X-Idempotency-Key header and are scoped to the
-- principal and the operation. Same key + same arguments: the stored response
-- again, no second effect. Same key + other arguments: idempotency_key_reused
-- (422). Same key while the first call has not committed: idempotency_key_in_use
-- (409), decided without waiting by a transaction-scoped advisory lock.

CREATE TABLE pgcloud.idempotency_keys (
    principal    text NOT NULL,
    operation    text NOT NULL,
    key          text NOT NULL,
    request_hash bytea NOT NULL,
    response     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (principal, operation, key)
);
CREATE INDEX idempotency_keys_expires_idx ON pgcloud.idempotency_keys (expires_at);
COMMENT ON TABLE pgcloud.idempotency_keys IS 'Responses of mutating API calls made with an X-Idempotency-Key, kept for core.idempotency_ttl_seconds.';
COMMENT ON COLUMN pgcloud.idempotency_keys.principal IS 'The caller (JWT sub, else the request role).';
COMMENT ON COLUMN pgcloud.idempotency_keys.operation IS 'The operation the key was used for.';
COMMENT ON COLUMN pgcloud.idempotency_keys.key IS 'The X-Idempotency-Key value.';
COMMENT ON COLUMN pgcloud.idempotency_keys.request_hash IS 'SHA-256 of the canonical JSON arguments of the first call.';
COMMENT ON COLUMN pgcloud.idempotency_keys.response IS 'The response of the first call, returned again on replay.';
COMMENT ON COLUMN pgcloud.idempotency_keys.created_at IS 'When the first call committed.';
COMMENT ON COLUMN pgcloud.idempotency_keys.expires_at IS 'After this the key may be used afresh.';

CREATE FUNCTION pgcloud.idempotency_principal() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT coalesce(pgcloud.user_id()::text, pgcloud.request_role()) $$;
COMMENT ON FUNCTION pgcloud.idempotency_principal() IS 'The principal idempotency keys are scoped to.';

-- Claims the key for this transaction; returns the stored response on a
-- replay, NULL when the call must run.
CREATE FUNCTION pgcloud.idempotency_begin(operation text, key text, request_hash bytea) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    who text := pgcloud.idempotency_principal();
    prior pgcloud.idempotency_keys;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended(who || E'\n' || operation || E'\n' || key, 1886610284)) THEN
        PERFORM pgcloud.raise('idempotency_key_in_use',
            'another request with this idempotency key has not finished', 'Retry when it has finished.');
    END IF;
    SELECT * INTO prior FROM pgcloud.idempotency_keys k
     WHERE k.principal = who AND k.operation = idempotency_begin.operation AND k.key = idempotency_begin.key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF prior.expires_at <= now() THEN
        DELETE FROM pgcloud.idempotency_keys k
         WHERE k.principal = who AND k.operation = idempotency_begin.operation AND k.key = idempotency_begin.key;
        RETURN NULL;
    END IF;
    IF prior.request_hash <> request_hash THEN
        PERFORM pgcloud.raise('idempotency_key_reused',
            format('key was first used for %s with other arguments', operation),
            'Use a new idempotency key for a different request.');
    END IF;
    PERFORM set_config('response.headers', '[{"Idempotent-Replayed": "true"}]', true);
    RETURN prior.response;
END
$$;
COMMENT ON FUNCTION pgcloud.idempotency_begin(text, text, bytea) IS 'Internal to pgcloud.idempotent(): claims an idempotency key for this transaction.';

CREATE FUNCTION pgcloud.idempotency_finish(operation text, key text, request_hash bytea, response jsonb) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    INSERT INTO pgcloud.idempotency_keys (principal, operation, key, request_hash, response, expires_at)
    VALUES (pgcloud.idempotency_principal(), operation, key, request_hash, coalesce(response, 'null'::jsonb),
            now() + make_interval(secs => pgcloud.policy('core.idempotency_ttl_seconds', NULL::int)))
$$;
COMMENT ON FUNCTION pgcloud.idempotency_finish(text, text, bytea, jsonb) IS 'Internal to pgcloud.idempotent(): stores the response of a first call.';

CREATE FUNCTION pgcloud.idempotent(operation text, args jsonb, handler regprocedure) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    key text := pgcloud.header('x-idempotency-key');
    hash bytea;
    response jsonb;
BEGIN
    IF operation IS NULL OR handler IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'pgcloud.idempotent() needs an operation and a handler');
    END IF;
    IF key IS NOT NULL THEN
        IF key !~ '^[\x21-\x7e]{1,255}$' THEN
            PERFORM pgcloud.raise('idempotency_key_invalid', NULL);
        END IF;
        hash := sha256(convert_to(coalesce(args, 'null'::jsonb)::text, 'UTF8'));
        response := pgcloud.idempotency_begin(operation, key, hash);
        IF response IS NOT NULL THEN
            RETURN response;
        END IF;
    END IF;
    EXECUTE format('SELECT %s($1)', handler::oid::regproc) INTO response USING args;
    IF key IS NOT NULL THEN
        PERFORM pgcloud.idempotency_finish(operation, key, hash, response);
    END IF;
    RETURN response;
END
$$;
COMMENT ON FUNCTION pgcloud.idempotent(text, jsonb, regprocedure) IS 'Runs handler(args) at most once per X-Idempotency-Key: same key and arguments return the stored response; other arguments raise idempotency_key_reused (422); a concurrent call with the key raises idempotency_key_in_use (409). Without the header the handler simply runs.';

CREATE FUNCTION pgcloud.prune_idempotency_keys() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    WITH gone AS (DELETE FROM pgcloud.idempotency_keys WHERE expires_at <= now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION pgcloud.prune_idempotency_keys() IS 'Deletes expired idempotency keys; returns how many. Run by the job core.prune_idempotency_keys.';

-- source: sql/core/60_outbox.sql
-- Transactional outbox, inbox and the service/subscription registry.

CREATE TABLE pgcloud.services (
    name          text PRIMARY KEY,
    schema_name   text NOT NULL UNIQUE,
    database_name text NOT NULL UNIQUE,
    layer         text NOT NULL CHECK (layer IN ('platform', 'shared', 'domain')),
    route_prefix  text NOT NULL UNIQUE,
    publishes     text[] NOT NULL,
    subscribes    text[] NOT NULL,
    depends_on    text[] NOT NULL,
    http_targets  text[] NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE pgcloud.services IS 'The service registry (generated from registry/services.conf).';
COMMENT ON COLUMN pgcloud.services.name IS 'Service name; its extension is pgcloud_<name>.';
COMMENT ON COLUMN pgcloud.services.schema_name IS 'The one schema the service owns.';
COMMENT ON COLUMN pgcloud.services.database_name IS 'The database the service lives in when each service has its own.';
COMMENT ON COLUMN pgcloud.services.layer IS 'platform, shared or domain.';
COMMENT ON COLUMN pgcloud.services.route_prefix IS 'HTTP route prefix of the service behind the reverse proxy.';
COMMENT ON COLUMN pgcloud.services.publishes IS 'Event types the service emits.';
COMMENT ON COLUMN pgcloud.services.subscribes IS 'Event types (or patterns) the service consumes.';
COMMENT ON COLUMN pgcloud.services.depends_on IS 'Services whose events or data this one relies on.';
COMMENT ON COLUMN pgcloud.services.http_targets IS 'Outbound HTTP targets (pgcloud.http_request) the service may call; any other is refused.';

CREATE TABLE pgcloud.subscriptions (
    subscriber text NOT NULL REFERENCES pgcloud.services (name),
    event_type text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.[a-z][a-z0-9_]*|\.\*|\.>)$'),
    PRIMARY KEY (subscriber, event_type)
);
COMMENT ON TABLE pgcloud.subscriptions IS 'Which service consumes which event types (generated from registry/services.conf). A pattern may end in .* (one token) or .> (any tokens).';
COMMENT ON COLUMN pgcloud.subscriptions.subscriber IS 'The consuming service.';
COMMENT ON COLUMN pgcloud.subscriptions.event_type IS 'An event type or a NATS-style pattern.';

CREATE TABLE pgcloud.outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    payload        jsonb NOT NULL,
    headers        jsonb NOT NULL,
    source         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_unpublished_idx ON pgcloud.outbox (id) WHERE published_at IS NULL;
COMMENT ON TABLE pgcloud.outbox IS 'Events written in the transaction of the change they describe; the relay publishes them after commit. Ordered per aggregate by id.';
COMMENT ON COLUMN pgcloud.outbox.id IS 'Position; within one aggregate, commit order.';
COMMENT ON COLUMN pgcloud.outbox.event_id IS 'Unique event id (Nats-Msg-Id, inbox key).';
COMMENT ON COLUMN pgcloud.outbox.event_type IS 'Dotted lower-case type, e.g. allocation.activated.';
COMMENT ON COLUMN pgcloud.outbox.aggregate_type IS 'Kind of the object the event is about.';
COMMENT ON COLUMN pgcloud.outbox.aggregate_id IS 'Id of the object the event is about.';
COMMENT ON COLUMN pgcloud.outbox.payload IS 'Event-carried state (a JSON object).';
COMMENT ON COLUMN pgcloud.outbox.headers IS 'correlation_id, actor, actor_role and source of the emitting request.';
COMMENT ON COLUMN pgcloud.outbox.source IS 'The emitting service (or role).';
COMMENT ON COLUMN pgcloud.outbox.created_at IS 'Time of the emitting transaction.';
COMMENT ON COLUMN pgcloud.outbox.published_at IS 'When delivery was confirmed; NULL while pending.';

CREATE TABLE pgcloud.inbox (
    subscriber   text NOT NULL,
    event_id     uuid NOT NULL,
    event_type   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.inbox IS 'Events each subscriber has applied: the row commits with the handler''s effect, so a redelivered event has no second effect.';
COMMENT ON COLUMN pgcloud.inbox.subscriber IS 'The consuming service.';
COMMENT ON COLUMN pgcloud.inbox.event_id IS 'The applied event.';
COMMENT ON COLUMN pgcloud.inbox.event_type IS 'Its type.';
COMMENT ON COLUMN pgcloud.inbox.processed_at IS 'When it was applied.';

CREATE FUNCTION pgcloud.emit(event_type text, aggregate_type text, aggregate_id text, payload jsonb)
RETURNS uuid
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_outbox_emit';
COMMENT ON FUNCTION pgcloud.emit(text, text, text, jsonb) IS 'Writes an event to the outbox in the current transaction and returns its id. event_type is dotted lower-case (e.g. allocation.activated); payload is a JSON object. Events of one aggregate are ordered by commit.';

CREATE FUNCTION pgcloud.event_matches(pattern text, event_type text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT CASE
        WHEN pattern LIKE '%.>' THEN starts_with(event_type, left(pattern, -1))
        WHEN pattern LIKE '%.*' THEN starts_with(event_type, left(pattern, -1))
                                  AND strpos(substr(event_type, length(pattern)), '.') = 0
        ELSE pattern = event_type
    END
$$;
COMMENT ON FUNCTION pgcloud.event_matches(text, text) IS 'Whether an event type matches a subscription pattern (exact, or ending in .* for one token or .> for any tokens).';

CREATE FUNCTION pgcloud.subscribers(event_type text) RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
     WHERE pgcloud.event_matches(s.event_type, subscribers.event_type)
     ORDER BY 1
$$;
COMMENT ON FUNCTION pgcloud.subscribers(text) IS 'The services subscribed to an event type.';

CREATE FUNCTION pgcloud.build_info() RETURNS jsonb
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'pgcloud_build_info';
COMMENT ON FUNCTION pgcloud.build_info() IS 'Versions of pgcloud, PostgreSQL, libcurl, nats.c and OpenSSL this library runs with.';

CREATE FUNCTION pgcloud.seal(plain bytea, context text) RETURNS bytea
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_seal_seal';
COMMENT ON FUNCTION pgcloud.seal(bytea, text) IS 'Seals a secret with the platform master key (pgcloud.key_file, or $PGDATA/pgcloud.key created 0600 on first use): AES-256-GCM under an HKDF-SHA256 key for context. Services only.';

CREATE FUNCTION pgcloud.unseal(sealed bytea, context text) RETURNS bytea
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'pgcloud_seal_unseal';
COMMENT ON FUNCTION pgcloud.unseal(bytea, text) IS 'Opens a value sealed by pgcloud.seal() for the same context; an error when it was altered or sealed for another context. Services only.';

-- Event authority: which service owns (publishes) an event type. The core
-- owns platform.* and audit.recorded (announced by pgcloud.audit()); a type
-- nobody owns is an operator's own.
CREATE FUNCTION pgcloud.publisher_of(event_type text) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT CASE WHEN publisher_of.event_type LIKE 'platform.%' OR publisher_of.event_type = 'audit.recorded' THEN 'core'
                ELSE (SELECT s.name FROM pgcloud.services s
                       WHERE publisher_of.event_type = ANY (s.publishes) ORDER BY s.name LIMIT 1) END
$$;
COMMENT ON FUNCTION pgcloud.publisher_of(text) IS 'The service that owns an event type (registry publishes; core for platform.* and audit.recorded), or NULL for a type no service owns (an operator''s own).';

CREATE FUNCTION pgcloud.event_authentic(event_type text, source text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT CASE
        WHEN coalesce(source, '') = '' THEN false
        -- a superuser (the operator) stands outside every boundary
        WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = source AND r.rolsuper) THEN true
        WHEN pgcloud.publisher_of(event_type) IS NOT NULL THEN pgcloud.publisher_of(event_type) = source
        ELSE NOT EXISTS (SELECT 1 FROM pgcloud.services s WHERE s.name = source) AND source <> 'core'
    END
$$;
COMMENT ON FUNCTION pgcloud.event_authentic(text, text) IS 'Whether an event of this type may come from this source: its registered publisher, a superuser, or (for a type no service owns) a role that is not a service. Subscribers accept nothing else, in embedded and NATS delivery.';

-- source: sql/core/65_relay.sql
-- Delivery of outbox events to subscribers: embedded (pgcloud.relay_once)
-- and NATS (pgcloud.consume_event, called by the consumer worker). Both go
-- through pgcloud.deliver(): the inbox row and the handler's effect commit
-- together, so a redelivered event has no second effect.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.max_delivery_attempts', '5', 'Tries before an event delivery goes to pgcloud.dead_letters.'),
    ('core.delivery_retry_base_ms', '200', 'First retry delay of a failed delivery (doubles each try, with jitter).'),
    ('core.relay_batch_size', '200', 'Events the relay handles per transaction.');

CREATE TABLE pgcloud.delivery_failures (
    subscriber      text NOT NULL,
    event_id        uuid NOT NULL,
    attempts        integer NOT NULL,
    last_error      text NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    PRIMARY KEY (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.delivery_failures IS 'Deliveries that failed and will be retried (embedded mode; in NATS mode JetStream redelivers).';
COMMENT ON COLUMN pgcloud.delivery_failures.subscriber IS 'The subscribing service.';
COMMENT ON COLUMN pgcloud.delivery_failures.event_id IS 'The event.';
COMMENT ON COLUMN pgcloud.delivery_failures.attempts IS 'Failed tries so far.';
COMMENT ON COLUMN pgcloud.delivery_failures.last_error IS 'The last error, scrubbed.';
COMMENT ON COLUMN pgcloud.delivery_failures.next_attempt_at IS 'Not retried before this time.';

CREATE TABLE pgcloud.dead_letters (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscriber      text NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    aggregate_type  text NOT NULL,
    aggregate_id    text NOT NULL,
    payload         jsonb NOT NULL,
    headers         jsonb NOT NULL,
    attempts        integer NOT NULL,
    error           text NOT NULL,
    dead_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscriber, event_id)
);
COMMENT ON TABLE pgcloud.dead_letters IS 'Event deliveries given up after core.max_delivery_attempts tries, with their last error; each raised a platform.alert event.';
COMMENT ON COLUMN pgcloud.dead_letters.id IS 'Entry number.';
COMMENT ON COLUMN pgcloud.dead_letters.subscriber IS 'The subscribing service whose handler failed.';
COMMENT ON COLUMN pgcloud.dead_letters.event_id IS 'The event.';
COMMENT ON COLUMN pgcloud.dead_letters.event_type IS 'Its type.';
COMMENT ON COLUMN pgcloud.dead_letters.aggregate_type IS 'Its aggregate type.';
COMMENT ON COLUMN pgcloud.dead_letters.aggregate_id IS 'Its aggregate id.';
COMMENT ON COLUMN pgcloud.dead_letters.payload IS 'Its payload.';
COMMENT ON COLUMN pgcloud.dead_letters.headers IS 'Its headers.';
COMMENT ON COLUMN pgcloud.dead_letters.attempts IS 'How many tries failed.';
COMMENT ON COLUMN pgcloud.dead_letters.error IS 'The last error, scrubbed.';
COMMENT ON COLUMN pgcloud.dead_letters.dead_at IS 'When it was given up.';

-- The handler of a subscriber in this database, or NULL when that service is
-- not installed here.
CREATE FUNCTION pgcloud.handler_of(subscriber text) RETURNS regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT to_regprocedure(format('%I.on_event(uuid, text, text, text, jsonb, jsonb)', s.schema_name))
      FROM pgcloud.services s WHERE s.name = subscriber
$$;
COMMENT ON FUNCTION pgcloud.handler_of(text) IS 'The on_event handler of a service in this database, or NULL when the service is not installed here.';

CREATE FUNCTION pgcloud.is_subscribed(subscriber text, event_type text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT EXISTS (SELECT 1 FROM pgcloud.subscriptions s
                    WHERE s.subscriber = is_subscribed.subscriber
                      AND pgcloud.event_matches(s.event_type, is_subscribed.event_type))
$$;
COMMENT ON FUNCTION pgcloud.is_subscribed(text, text) IS 'Whether a service subscribes to an event type.';

CREATE FUNCTION pgcloud.route_of(event_type text) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_array(x.subscriber, x.handler::oid::regproc::text) ORDER BY x.subscriber), '[]')
      FROM (SELECT DISTINCT s.subscriber, pgcloud.handler_of(s.subscriber) AS handler
              FROM pgcloud.subscriptions s
             WHERE pgcloud.event_matches(s.event_type, route_of.event_type)) x
     WHERE x.handler IS NOT NULL
$$;
COMMENT ON FUNCTION pgcloud.route_of(text) IS 'The subscribers of an event type installed in this database, with their handlers: [[subscriber, handler], ...].';

-- Applies one event to one subscriber: inbox row + handler, in the caller's
-- transaction. Returns applied, duplicate or not_installed.
CREATE FUNCTION pgcloud.deliver(subscriber text, event_id uuid, event_type text, aggregate_type text,
                                aggregate_id text, payload jsonb, headers jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    handler regprocedure := pgcloud.handler_of(subscriber);
BEGIN
    IF handler IS NULL THEN
        RETURN 'not_installed';
    END IF;
    INSERT INTO pgcloud.inbox (subscriber, event_id, event_type)
    VALUES (subscriber, event_id, event_type)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;
    -- The correlation id of the event follows it into the handler's audit rows and events.
    PERFORM set_config('pgcloud.correlation_id', coalesce(headers ->> 'correlation_id', ''), true);
    EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', handler::oid::regproc)
      USING event_id, event_type, aggregate_type, aggregate_id, payload, headers;
    PERFORM set_config('pgcloud.correlation_id', '', true);
    RETURN 'applied';
END
$$;
COMMENT ON FUNCTION pgcloud.deliver(text, uuid, text, text, text, jsonb, jsonb) IS 'Applies one event to one subscriber in the current transaction: inbox row and handler effect together; a second delivery is a no-op (duplicate).';

CREATE FUNCTION pgcloud.record_delivery_failure(subscriber text, event_id uuid, event_type text,
                                                aggregate_type text, aggregate_id text, payload jsonb,
                                                headers jsonb, error text, attempts integer DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    tries integer;
    clean text := left(pgcloud.sanitize(coalesce(error, 'unknown error')), 2000);
    base_ms integer := pgcloud.policy('core.delivery_retry_base_ms', NULL::integer);
BEGIN
    IF attempts IS NULL THEN
        INSERT INTO pgcloud.delivery_failures AS f (subscriber, event_id, attempts, last_error, next_attempt_at)
        VALUES (subscriber, event_id, 1, clean, clock_timestamp() + make_interval(secs => base_ms / 1000.0))
        ON CONFLICT ON CONSTRAINT delivery_failures_pkey DO UPDATE
           SET attempts = f.attempts + 1, last_error = excluded.last_error,
               next_attempt_at = clock_timestamp()
                   + make_interval(secs => least(base_ms * 2 ^ f.attempts * (0.5 + random()), 300000) / 1000.0)
        RETURNING f.attempts INTO tries;
    ELSE
        tries := attempts;
    END IF;
    IF tries < pgcloud.policy('core.max_delivery_attempts', NULL::integer) THEN
        RETURN false;
    END IF;
    INSERT INTO pgcloud.dead_letters (subscriber, event_id, event_type, aggregate_type, aggregate_id,
                                      payload, headers, attempts, error)
    VALUES (subscriber, event_id, event_type, aggregate_type, aggregate_id, payload, headers, tries, clean)
    ON CONFLICT DO NOTHING;
    DELETE FROM pgcloud.delivery_failures f WHERE f.subscriber = record_delivery_failure.subscriber
                                              AND f.event_id = record_delivery_failure.event_id;
    PERFORM pgcloud.emit('platform.alert', 'dead_letter', event_id::text,
        jsonb_build_object('kind', 'dead_letter', 'subscriber', subscriber, 'event_id', event_id,
                           'event_type', event_type, 'attempts', tries, 'error', clean));
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgcloud.record_delivery_failure(text, uuid, text, text, text, jsonb, jsonb, text, integer) IS 'Counts a failed delivery (or takes the transport''s count); after core.max_delivery_attempts moves it to pgcloud.dead_letters and emits platform.alert. Returns true when dead-lettered.';

CREATE FUNCTION pgcloud.relay_once(max_events integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    e pgcloud.outbox;
    sub record;
    done integer := 0;
    complete boolean;
    blocked text[] := '{}';
    agg text;
    err text;
    batch integer := coalesce(max_events, pgcloud.policy('core.relay_batch_size', NULL::integer));
    routes jsonb := '{}';       -- event type -> [[subscriber, handler], ...] (installed handlers only)
    route jsonb;
    r jsonb;
    any_failures boolean := EXISTS (SELECT 1 FROM pgcloud.delivery_failures);
    any_dead boolean := EXISTS (SELECT 1 FROM pgcloud.dead_letters);
    authentic jsonb := '{}';    -- type/source -> whether the source may publish the type
    ok jsonb;
BEGIN
    -- Fast path: the whole batch in one subtransaction. When nothing is being
    -- retried and no handler fails, this is all there is to it.
    IF NOT any_failures THEN
        BEGIN
            FOR e IN
                SELECT * FROM pgcloud.outbox o WHERE o.published_at IS NULL
                 ORDER BY o.id LIMIT batch FOR UPDATE SKIP LOCKED
            LOOP
                ok := authentic -> (e.event_type || '/' || e.source);
                IF ok IS NULL THEN
                    ok := to_jsonb(pgcloud.event_authentic(e.event_type, e.source));
                    authentic := authentic || jsonb_build_object(e.event_type || '/' || e.source, ok);
                END IF;
                IF NOT ok::boolean THEN
                    RAISE EXCEPTION 'forged event';   -- the slow path dead-letters it
                END IF;
                route := routes -> e.event_type;
                IF route IS NULL THEN
                    route := pgcloud.route_of(e.event_type);
                    routes := routes || jsonb_build_object(e.event_type, route);
                END IF;
                FOR r IN SELECT * FROM jsonb_array_elements(route) LOOP
                    CONTINUE WHEN any_dead AND EXISTS (SELECT 1 FROM pgcloud.dead_letters d
                                                        WHERE d.subscriber = r ->> 0 AND d.event_id = e.event_id);
                    INSERT INTO pgcloud.inbox (subscriber, event_id, event_type)
                    VALUES (r ->> 0, e.event_id, e.event_type) ON CONFLICT DO NOTHING;
                    IF FOUND THEN
                        PERFORM set_config('pgcloud.correlation_id', coalesce(e.headers ->> 'correlation_id', ''), true);
                        EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', r ->> 1)
                          USING e.event_id, e.event_type, e.aggregate_type, e.aggregate_id, e.payload, e.headers;
                    END IF;
                END LOOP;
                UPDATE pgcloud.outbox SET published_at = clock_timestamp() WHERE id = e.id;
                done := done + 1;
            END LOOP;
            PERFORM set_config('pgcloud.correlation_id', '', true);
            RETURN done;
        EXCEPTION WHEN OTHERS THEN
            done := 0;   -- a handler failed: redo the batch one delivery at a time
        END;
    END IF;

    FOR e IN
        SELECT * FROM pgcloud.outbox o WHERE o.published_at IS NULL
         ORDER BY o.id LIMIT batch FOR UPDATE SKIP LOCKED
    LOOP
        agg := e.aggregate_type || '/' || e.aggregate_id;
        CONTINUE WHEN agg = ANY (blocked);   -- keep per-aggregate order behind a retry
        complete := true;
        IF NOT pgcloud.event_authentic(e.event_type, e.source) THEN
            -- Not from the event type's registered publisher: no subscriber
            -- applies it; each gets a dead letter (and operators an alert).
            FOR sub IN SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
                        WHERE pgcloud.event_matches(s.event_type, e.event_type) ORDER BY 1
            LOOP
                PERFORM pgcloud.record_delivery_failure(sub.subscriber, e.event_id, e.event_type, e.aggregate_type,
                    e.aggregate_id, e.payload, e.headers,
                    format('refused: event type %s is published by %s, but this event came from %s',
                           e.event_type, coalesce(pgcloud.publisher_of(e.event_type), 'no service'), e.source),
                    greatest(pgcloud.policy('core.max_delivery_attempts', NULL::integer), 1));
            END LOOP;
            UPDATE pgcloud.outbox SET published_at = clock_timestamp() WHERE id = e.id;
            done := done + 1;
            CONTINUE;
        END IF;
        FOR sub IN SELECT DISTINCT s.subscriber FROM pgcloud.subscriptions s
                    WHERE pgcloud.event_matches(s.event_type, e.event_type) ORDER BY 1
        LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM pgcloud.dead_letters d WHERE d.subscriber = sub.subscriber AND d.event_id = e.event_id);
            IF EXISTS (SELECT 1 FROM pgcloud.delivery_failures f
                        WHERE f.subscriber = sub.subscriber AND f.event_id = e.event_id
                          AND f.next_attempt_at > clock_timestamp()) THEN
                complete := false;
                CONTINUE;
            END IF;
            BEGIN
                PERFORM pgcloud.deliver(sub.subscriber, e.event_id, e.event_type, e.aggregate_type, e.aggregate_id,
                                        e.payload, e.headers);
                DELETE FROM pgcloud.delivery_failures f WHERE f.subscriber = sub.subscriber AND f.event_id = e.event_id;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
                IF NOT pgcloud.record_delivery_failure(sub.subscriber, e.event_id, e.event_type, e.aggregate_type,
                                                       e.aggregate_id, e.payload, e.headers, err) THEN
                    complete := false;
                END IF;
            END;
        END LOOP;
        IF complete THEN
            UPDATE pgcloud.outbox SET published_at = clock_timestamp() WHERE id = e.id;
            done := done + 1;
        ELSE
            blocked := blocked || agg;
        END IF;
    END LOOP;
    RETURN done;
END
$$;
COMMENT ON FUNCTION pgcloud.relay_once(integer) IS 'Embedded delivery: hands pending outbox events, in id order, to every subscribing service installed in this database (inbox row + handler in one transaction), marks them published, retries failures with backoff and dead-letters them after core.max_delivery_attempts. Returns the number of events published. The relay worker calls it; tests may too.';

-- NATS mode: the consumer worker hands each message to this function.
-- The tokens_valid_until of a session.revoked payload, or NULL when it is not a time.
CREATE FUNCTION pgcloud.revocation_until(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    RETURN least(value::timestamptz, now() + interval '7 days');
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgcloud.revocation_until(text) IS 'NATS mode: how long a session revoked in another database stays refused here: its tokens_valid_until (at most 7 days ahead), or NULL when that is not a time.';

CREATE FUNCTION pgcloud.consume_event(subscriber text, envelope jsonb, subject text) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF envelope IS NULL OR jsonb_typeof(envelope) <> 'object' OR envelope ->> 'event_id' IS NULL
       OR envelope ->> 'event_type' IS NULL
       OR envelope ->> 'event_id' !~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        PERFORM pgcloud.raise('invalid_event', 'message is not a pgcloud event envelope');
    END IF;
    -- Platform effects every database applies, whatever services it holds
    -- (database-per-service): a session revoked in the auth database is
    -- refused by this database's pgcloud.pre_request() too. Idempotent, so
    -- each durable of the database may apply it.
    IF envelope ->> 'event_type' = 'session.revoked' AND subject = 'pgcloud.session.revoked'
       AND pgcloud.event_authentic('session.revoked', envelope ->> 'source')
       AND envelope -> 'payload' ->> 'session_id' ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' THEN
        PERFORM pgcloud.revoke_session((envelope -> 'payload' ->> 'session_id')::uuid,
            coalesce(pgcloud.revocation_until(envelope -> 'payload' ->> 'tokens_valid_until'), now() + interval '1 day'));
    END IF;
    IF NOT pgcloud.is_subscribed(subscriber, envelope ->> 'event_type') THEN
        RETURN 'ignored';
    END IF;
    -- The broker lets a service's NATS user publish only the subjects of the
    -- event types it owns (deploy/nats/nats-server.conf, generated from the
    -- registry): the subject vouches for the publisher, the envelope must
    -- agree with it.
    IF subject IS DISTINCT FROM 'pgcloud.' || (envelope ->> 'event_type') THEN
        PERFORM pgcloud.raise('event_not_permitted',
            format('the message came on subject %s, not on the subject of its event type %s',
                   left(subject, 200), left(envelope ->> 'event_type', 200)));
    END IF;
    IF NOT pgcloud.event_authentic(envelope ->> 'event_type', envelope ->> 'source') THEN
        PERFORM pgcloud.raise('event_not_permitted',
            format('event type %s is published by %s, but this event came from %s',
                   envelope ->> 'event_type', coalesce(pgcloud.publisher_of(envelope ->> 'event_type'), 'no service'),
                   coalesce(envelope ->> 'source', 'nobody')));
    END IF;
    RETURN pgcloud.deliver(subscriber, (envelope ->> 'event_id')::uuid, envelope ->> 'event_type',
                           coalesce(envelope ->> 'aggregate_type', ''), coalesce(envelope ->> 'aggregate_id', ''),
                           coalesce(envelope -> 'payload', '{}'::jsonb), coalesce(envelope -> 'headers', '{}'::jsonb));
END
$$;
COMMENT ON FUNCTION pgcloud.consume_event(text, jsonb, text) IS 'NATS mode: applies one message (the event envelope, received on subject) to one subscriber; returns applied, duplicate, ignored or not_installed. A session.revoked from auth also marks the session revoked in this database (pgcloud.revoked_sessions), for every database''s pgcloud.pre_request(). Refuses (event_not_permitted) a message whose subject is not its event type''s or whose source is not the type''s registered publisher.';

-- Operator views.
CREATE FUNCTION pgcloud.worker_status(OUT database text, OUT worker text, OUT pid integer, OUT state text,
                                      OUT started_at timestamptz, OUT last_activity timestamptz,
                                      OUT processed bigint, OUT failures bigint, OUT last_error text)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_worker_status';
COMMENT ON FUNCTION pgcloud.worker_status() IS 'Operators: every pgcloud background worker, its state, counters and last (scrubbed) error.';

CREATE FUNCTION pgcloud.wake_workers() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_wake_workers';
COMMENT ON FUNCTION pgcloud.wake_workers() IS 'Operators: wakes the launcher and every worker when the current transaction commits (installing pgcloud does this). False when pgcloud is not preloaded.';

CREATE VIEW pgcloud.outbox_lag AS
    SELECT count(*) AS pending,
           min(created_at) AS oldest_pending_at,
           coalesce(extract(epoch FROM now() - min(created_at)), 0)::numeric(12, 3) AS oldest_pending_seconds,
           (SELECT max(published_at) FROM pgcloud.outbox) AS last_published_at,
           (SELECT count(*) FROM pgcloud.delivery_failures) AS retrying,
           (SELECT count(*) FROM pgcloud.dead_letters) AS dead_letters
      FROM pgcloud.outbox WHERE published_at IS NULL;
COMMENT ON VIEW pgcloud.outbox_lag IS 'Operators: undelivered events, the oldest one and its age, deliveries being retried, dead letters.';
COMMENT ON COLUMN pgcloud.outbox_lag.pending IS 'Events not yet published.';
COMMENT ON COLUMN pgcloud.outbox_lag.oldest_pending_at IS 'Creation time of the oldest undelivered event.';
COMMENT ON COLUMN pgcloud.outbox_lag.oldest_pending_seconds IS 'Its age in seconds (0 when none).';
COMMENT ON COLUMN pgcloud.outbox_lag.last_published_at IS 'When the last event was published.';
COMMENT ON COLUMN pgcloud.outbox_lag.retrying IS 'Deliveries waiting for a retry.';
COMMENT ON COLUMN pgcloud.outbox_lag.dead_letters IS 'Deliveries given up.';

CREATE VIEW pgcloud.oldest_undelivered AS
    SELECT o.id, o.event_id, o.event_type, o.aggregate_type, o.aggregate_id, o.created_at,
           now() - o.created_at AS age
      FROM pgcloud.outbox o WHERE o.published_at IS NULL ORDER BY o.id LIMIT 20;
COMMENT ON VIEW pgcloud.oldest_undelivered IS 'Operators: the 20 oldest undelivered events.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.id IS 'Outbox position.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.event_id IS 'Event id.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.event_type IS 'Event type.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.aggregate_type IS 'Aggregate type.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.aggregate_id IS 'Aggregate id.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.created_at IS 'When it was emitted.';
COMMENT ON COLUMN pgcloud.oldest_undelivered.age IS 'How long it has waited.';

CREATE VIEW pgcloud.workers AS SELECT * FROM pgcloud.worker_status();
COMMENT ON VIEW pgcloud.workers IS 'Operators: pgcloud background workers (see pgcloud.worker_status()).';
COMMENT ON COLUMN pgcloud.workers.database IS 'Database the worker serves.';
COMMENT ON COLUMN pgcloud.workers.worker IS 'relay or consumer.';
COMMENT ON COLUMN pgcloud.workers.pid IS 'Process id while running.';
COMMENT ON COLUMN pgcloud.workers.state IS 'running, stopped or not installed.';
COMMENT ON COLUMN pgcloud.workers.started_at IS 'When it started.';
COMMENT ON COLUMN pgcloud.workers.last_activity IS 'When it last did work.';
COMMENT ON COLUMN pgcloud.workers.processed IS 'Events handled since start.';
COMMENT ON COLUMN pgcloud.workers.failures IS 'Failures since start.';
COMMENT ON COLUMN pgcloud.workers.last_error IS 'Last error, scrubbed.';

-- NATS mode: a message that could not be applied. Returns true when it was
-- dead-lettered (the consumer then terminates it), false to redeliver.
CREATE FUNCTION pgcloud.consume_failed(subscriber text, msg_id text, body text, error text, deliveries integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    env jsonb;
BEGIN
    BEGIN
        env := body::jsonb;
    EXCEPTION WHEN OTHERS THEN
        env := jsonb_build_object('unparsable_body', left(body, 1000));
    END;
    IF jsonb_typeof(env) <> 'object' THEN
        env := jsonb_build_object('unparsable_body', left(body, 1000));
    END IF;
    RETURN pgcloud.record_delivery_failure(
        subscriber,
        CASE WHEN coalesce(env ->> 'event_id', msg_id) ~ '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$'
             THEN coalesce(env ->> 'event_id', msg_id)::uuid ELSE gen_random_uuid() END,
        coalesce(env ->> 'event_type', 'unknown.event'), coalesce(env ->> 'aggregate_type', ''),
        coalesce(env ->> 'aggregate_id', ''), coalesce(env -> 'payload', env), coalesce(env -> 'headers', '{}'::jsonb),
        error, deliveries);
END
$$;
COMMENT ON FUNCTION pgcloud.consume_failed(text, text, text, text, integer) IS 'NATS mode: records a message that failed for a subscriber; with JetStream''s delivery count at core.max_delivery_attempts it is dead-lettered (returns true).';

CREATE FUNCTION pgcloud.nats_subscribers() RETURNS SETOF text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT s.name FROM pgcloud.services s
     WHERE s.subscribes <> '{}' AND pgcloud.handler_of(s.name) IS NOT NULL
     ORDER BY s.name
$$;
COMMENT ON FUNCTION pgcloud.nats_subscribers() IS 'NATS mode: the subscribing services installed in this database; each has a durable JetStream consumer named after it.';

-- Operator alerts from any service: platform.alert is the core's type, so a
-- service raises one through this function (it runs as the core).
CREATE FUNCTION pgcloud.alert(kind text, subject text, details jsonb DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF kind IS NULL OR kind !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'kind must be a lower-case word such as release_stuck');
    END IF;
    RETURN pgcloud.emit('platform.alert', 'alert', left(coalesce(subject, kind), 200),
        coalesce(details, '{}'::jsonb) || jsonb_build_object('kind', kind));
END
$$;
COMMENT ON FUNCTION pgcloud.alert(text, text, jsonb) IS 'Services: raises an operator alert (a platform.alert event, emitted as the core) of a kind, e.g. release_stuck, about subject, with details. Returns the event id.';

-- source: sql/core/67_http.sql
-- HTTP intents: every outbound call (Stripe, MAAS, SMTP, S3; "test" for the test
-- suites) is a row written in the caller's transaction by
-- pgcloud.http_request(). After commit the HTTP executor worker
-- (bgworkers/http_executor.c, libcurl multi) claims due intents per target
-- within the target's concurrency limit, adds the target's credentials at send
-- time (they are never stored here), records each outcome with
-- pgcloud.http_record() and hands final outcomes to the owning service's
-- callback in that same new transaction, exactly once.
--
--   pending ──claim──> in_flight ──2xx──────────────> succeeded
--      ^                  │ ──retryable, tries left─> failed ──due──> in_flight
--      └──worker start────┘ ──otherwise─────────────> dead
--
-- Retryable: connection errors, timeouts, 429 and 5xx (SMTP: 4xx replies and
-- connection errors). Backoff: core.http_backoff_base_ms doubled per try,
-- with jitter, or the target's Retry-After.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.http_max_attempts', '5', 'Tries of an outbound HTTP intent before it is dead-lettered.'),
    ('core.http_backoff_base_ms', '500', 'Delay before the first retry of an HTTP intent (ms); doubles each try, with jitter (x0.5 to x1.5).'),
    ('core.http_backoff_max_ms', '300000', 'Longest delay between two tries of an HTTP intent (ms), before jitter.'),
    ('core.http_retry_after_max_seconds', '3600', 'Longest Retry-After a target may impose (seconds); longer answers are capped.'),
    ('core.http_connect_timeout_ms', '5000', 'Connect timeout of an outbound request (ms).'),
    ('core.http_total_timeout_ms', '30000', 'Total timeout of an outbound request, connect to last byte (ms).'),
    ('core.http_concurrency', '{"stripe": 8, "maas": 4, "smtp": 2, "test": 8, "s3": 4}', 'Outbound requests in flight at once, per target (JSON object target -> count).'),
    ('core.http_response_max_bytes', '65536', 'Bytes of a response body kept with its intent; the rest is dropped and the body marked truncated.'),
    ('core.http_callback_max_attempts', '5', 'Tries of a failing result callback before it is given up (with a platform.alert event).'),
    ('core.plaintext_allowed_hosts', '["127.0.0.1", "::1", "localhost"]', 'Hosts (JSON array) to which credentials may travel unencrypted: Stripe and MAAS over http://, SMTP without STARTTLS. Any other host must be https://, smtps:// or offer STARTTLS, or the request fails. Loopback only by default.');

CREATE TABLE pgcloud.http_intent_transitions (
    from_state text,
    to_state   text NOT NULL,
    UNIQUE NULLS NOT DISTINCT (from_state, to_state)
);
COMMENT ON TABLE pgcloud.http_intent_transitions IS 'Allowed changes of pgcloud.http_intents.state (guarded by pgcloud.transition()).';
COMMENT ON COLUMN pgcloud.http_intent_transitions.from_state IS 'State before; NULL lists the initial state.';
COMMENT ON COLUMN pgcloud.http_intent_transitions.to_state IS 'State after.';
INSERT INTO pgcloud.http_intent_transitions (from_state, to_state) VALUES
    (NULL, 'pending'),
    ('pending', 'in_flight'),
    ('in_flight', 'succeeded'),
    ('in_flight', 'failed'),
    ('in_flight', 'dead'),
    ('in_flight', 'pending'),   -- left in flight by a crash or a stop: sent again
    ('failed', 'in_flight');

CREATE TABLE pgcloud.http_intents (
    id                   uuid PRIMARY KEY,
    target               text NOT NULL CHECK (target IN ('stripe', 'maas', 'smtp', 'test', 's3')),
    method               text NOT NULL,
    path                 text NOT NULL,
    body                 text CHECK (octet_length(body) <= 4194304),
    content_type         text,
    headers              jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key      text,
    callback             regprocedure,
    context              jsonb NOT NULL DEFAULT '{}'::jsonb,
    requested_by         name NOT NULL,
    correlation_id       text NOT NULL,
    state                text NOT NULL,
    attempts             integer NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    last_attempt_at      timestamptz,
    completed_at         timestamptz,
    response_status      integer,
    response_headers     jsonb,
    response_body        text,
    response_truncated   boolean NOT NULL DEFAULT false,
    last_error           text,
    callback_done_at     timestamptz,
    callback_attempts    integer NOT NULL DEFAULT 0,
    callback_next_at     timestamptz,
    callback_error       text,
    callback_given_up_at timestamptz
);
CREATE INDEX http_intents_due_idx ON pgcloud.http_intents (target, next_attempt_at)
    WHERE state IN ('pending', 'failed');
CREATE INDEX http_intents_in_flight_idx ON pgcloud.http_intents (id) WHERE state = 'in_flight';
CREATE INDEX http_intents_callback_idx ON pgcloud.http_intents (callback_next_at)
    WHERE callback IS NOT NULL AND callback_done_at IS NULL AND callback_given_up_at IS NULL
      AND state IN ('succeeded', 'dead');
COMMENT ON TABLE pgcloud.http_intents IS 'Outbound HTTP (and SMTP) calls written in the caller''s transaction with pgcloud.http_request() and carried out after commit by the HTTP executor worker. Credentials are added at send time and never stored here.';
COMMENT ON COLUMN pgcloud.http_intents.id IS 'Intent id; the Idempotency-Key sent when none was given.';
COMMENT ON COLUMN pgcloud.http_intents.target IS 'stripe, maas, smtp, s3 or test; the base URL and credentials come from pgcloud.* settings.';
COMMENT ON COLUMN pgcloud.http_intents.method IS 'GET, POST, PUT, PATCH or DELETE (and HEAD for s3); SEND for smtp.';
COMMENT ON COLUMN pgcloud.http_intents.path IS 'Path (and query) appended to the target''s base URL; for smtp the envelope recipient; for s3 "/" and the URI-encoded object key (bucket, addressing and SigV4 query signature added at send time).';
COMMENT ON COLUMN pgcloud.http_intents.body IS 'Request body; for smtp the complete RFC 5322 message.';
COMMENT ON COLUMN pgcloud.http_intents.content_type IS 'Content-Type of the body.';
COMMENT ON COLUMN pgcloud.http_intents.headers IS 'Extra request headers (name -> value); for smtp {"mail_from": envelope sender}. Never credentials.';
COMMENT ON COLUMN pgcloud.http_intents.idempotency_key IS 'Idempotency-Key header (the intent id when NULL); the same on every try.';
COMMENT ON COLUMN pgcloud.http_intents.callback IS 'SECURITY DEFINER function of the requesting service called with the final outcome: (intent_id uuid, status integer, response_headers jsonb, response_body text, context jsonb, final boolean).';
COMMENT ON COLUMN pgcloud.http_intents.context IS 'Caller''s data handed back to the callback.';
COMMENT ON COLUMN pgcloud.http_intents.requested_by IS 'The role that wrote the intent (the service role).';
COMMENT ON COLUMN pgcloud.http_intents.correlation_id IS 'Correlation id of the request that wrote the intent; set again while its callback runs.';
COMMENT ON COLUMN pgcloud.http_intents.state IS 'pending, in_flight, succeeded, failed (waiting for a retry) or dead.';
COMMENT ON COLUMN pgcloud.http_intents.attempts IS 'Tries started so far.';
COMMENT ON COLUMN pgcloud.http_intents.next_attempt_at IS 'Not sent (again) before this time.';
COMMENT ON COLUMN pgcloud.http_intents.created_at IS 'When the intent was written.';
COMMENT ON COLUMN pgcloud.http_intents.last_attempt_at IS 'When the last try started.';
COMMENT ON COLUMN pgcloud.http_intents.completed_at IS 'When it became succeeded or dead.';
COMMENT ON COLUMN pgcloud.http_intents.response_status IS 'HTTP status (SMTP reply code) of the last answer; NULL after a connection error or timeout.';
COMMENT ON COLUMN pgcloud.http_intents.response_headers IS 'Headers of the last answer (lower-case name -> value).';
COMMENT ON COLUMN pgcloud.http_intents.response_body IS 'Body of the last answer, at most core.http_response_max_bytes.';
COMMENT ON COLUMN pgcloud.http_intents.response_truncated IS 'Whether the body was cut at core.http_response_max_bytes.';
COMMENT ON COLUMN pgcloud.http_intents.last_error IS 'Why the last try failed, scrubbed of secrets.';
COMMENT ON COLUMN pgcloud.http_intents.callback_done_at IS 'When the callback ran for the final outcome (committed with its effect, so it never runs twice).';
COMMENT ON COLUMN pgcloud.http_intents.callback_attempts IS 'Failed runs of the final callback.';
COMMENT ON COLUMN pgcloud.http_intents.callback_next_at IS 'When a failed final callback is run again.';
COMMENT ON COLUMN pgcloud.http_intents.callback_error IS 'The callback''s last error, scrubbed.';
COMMENT ON COLUMN pgcloud.http_intents.callback_given_up_at IS 'When a failing callback was given up after core.http_callback_max_attempts (a platform.alert was emitted).';

-- Fills the fields a caller must not choose and validates the request. Runs
-- as the inserting role (not SECURITY DEFINER), so current_user is the service.
CREATE FUNCTION pgcloud.http_intent_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    k text;
    v jsonb;
    cb record;
    forbidden text[] := ARRAY['authorization', 'proxy-authorization', 'cookie', 'host', 'content-length',
                              'content-type', 'transfer-encoding', 'connection', 'expect', 'idempotency-key',
                              'te', 'upgrade'];
BEGIN
    IF NEW.target IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'a target is required (stripe, maas, smtp, s3 or test)');
    END IF;
    IF NEW.target NOT IN ('stripe', 'maas', 'smtp', 'test', 's3') THEN
        PERFORM pgcloud.raise('invalid_argument',
            format('unknown HTTP target "%s" (stripe, maas, smtp, s3 or test)', left(NEW.target, 64)));
    END IF;
    -- Outbound authority: a service calls only the targets its registry
    -- entry grants (http_targets); superusers (the operator) any.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
       AND NOT EXISTS (SELECT 1 FROM pgcloud.services s
                        WHERE 'pgcloud_svc_' || s.name = current_user AND NEW.target = ANY (s.http_targets)) THEN
        PERFORM pgcloud.raise('http_target_not_permitted',
            format('role %s may not call target %s', current_user, NEW.target),
            'registry/services.conf lists the targets each service may call (http_targets).');
    END IF;
    IF NEW.target = 'smtp' THEN
        IF NEW.method IS DISTINCT FROM 'SEND' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the method of an smtp intent is SEND');
        END IF;
        IF NEW.path IS NULL OR length(NEW.path) > 254 OR NEW.path !~ '^[^\s<>@,;:"\\]+@[^\s<>@,;:"\\]+$' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the path of an smtp intent is the recipient''s e-mail address');
        END IF;
        IF NEW.body IS NULL OR NEW.body = '' THEN
            PERFORM pgcloud.raise('invalid_argument', 'an smtp intent needs the message as its body');
        END IF;
        IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object'
           OR (SELECT array_agg(x ORDER BY x) FROM jsonb_object_keys(NEW.headers) x) IS DISTINCT FROM ARRAY['mail_from']
           OR jsonb_typeof(NEW.headers -> 'mail_from') <> 'string'
           OR length(NEW.headers ->> 'mail_from') > 254
           OR NEW.headers ->> 'mail_from' !~ '^[^\s<>@,;:"\\]+@[^\s<>@,;:"\\]+$' THEN
            PERFORM pgcloud.raise('invalid_argument', 'the headers of an smtp intent are {"mail_from": envelope sender address}');
        END IF;
    ELSE
        IF NEW.method IS NULL OR NEW.method NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')
           AND NOT (NEW.target = 's3' AND NEW.method = 'HEAD') THEN
            PERFORM pgcloud.raise('invalid_argument',
                format('HTTP method "%s" is not supported (GET, POST, PUT, PATCH or DELETE; HEAD for s3)', left(NEW.method, 16)));
        END IF;
        IF NEW.path IS NULL OR length(NEW.path) > 2048 OR NEW.path !~ '^/[\x21-\x7e]*$' THEN
            PERFORM pgcloud.raise('invalid_argument',
                'the path must start with / and hold at most 2048 printable ASCII characters, no spaces');
        END IF;
        IF NEW.headers IS NULL OR jsonb_typeof(NEW.headers) <> 'object' THEN
            PERFORM pgcloud.raise('invalid_argument', 'headers must be a JSON object of name -> string value');
        END IF;
        IF (SELECT count(*) FROM jsonb_object_keys(NEW.headers)) > 32 THEN
            PERFORM pgcloud.raise('invalid_argument', 'at most 32 extra headers');
        END IF;
        FOR k, v IN SELECT * FROM jsonb_each(NEW.headers) LOOP
            IF k !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]{1,64}$' THEN
                PERFORM pgcloud.raise('invalid_argument', format('"%s" is not a valid header name', left(k, 64)));
            END IF;
            IF lower(k) = ANY (forbidden) THEN
                PERFORM pgcloud.raise('invalid_argument',
                    format('header "%s" may not be set on an intent', k),
                    'The executor sets credentials and framing headers at send time; use the content_type and idempotency_key arguments.');
            END IF;
            IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') > 1024 OR (v #>> '{}') !~ '^[\x20-\x7e]*$' THEN
                PERFORM pgcloud.raise('invalid_argument',
                    format('the value of header "%s" must be a string of at most 1024 printable ASCII characters', k));
            END IF;
        END LOOP;
    END IF;
    IF NEW.content_type IS NOT NULL AND NEW.content_type !~ '^[\x21-\x7e][\x20-\x7e]{0,254}$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'content_type must be 1 to 255 printable ASCII characters');
    END IF;
    IF NEW.idempotency_key IS NOT NULL AND NEW.idempotency_key !~ '^[\x21-\x7e]{1,255}$' THEN
        PERFORM pgcloud.raise('idempotency_key_invalid', NULL);
    END IF;
    IF NEW.body IS NOT NULL AND octet_length(NEW.body) > 4194304 THEN
        PERFORM pgcloud.raise('invalid_argument', 'the body may hold at most 4 MB');
    END IF;
    NEW.context := coalesce(NEW.context, '{}'::jsonb);
    IF jsonb_typeof(NEW.context) <> 'object' OR octet_length(NEW.context::text) > 65536 THEN
        PERFORM pgcloud.raise('invalid_argument', 'context must be a JSON object of at most 64 kB');
    END IF;
    IF NEW.callback IS NOT NULL THEN
        SELECT p.prorettype, pg_catalog.oidvectortypes(p.proargtypes) AS args, p.prosecdef, p.proowner, p.prokind
          INTO cb FROM pg_catalog.pg_proc p WHERE p.oid = NEW.callback;
        IF NOT FOUND OR cb.prokind <> 'f' OR cb.prorettype <> 'void'::regtype
           OR cb.args <> 'uuid, integer, jsonb, text, jsonb, boolean' THEN
            PERFORM pgcloud.raise('invalid_argument',
                'the callback must be a function (intent_id uuid, status integer, response_headers jsonb, response_body text, context jsonb, final boolean) RETURNS void');
        END IF;
        IF NOT cb.prosecdef THEN
            PERFORM pgcloud.raise('invalid_argument', 'the callback must be SECURITY DEFINER: it runs as its service');
        END IF;
        IF cb.proowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
           AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
            PERFORM pgcloud.raise('invalid_argument', 'the callback must belong to the requesting service');
        END IF;
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}'::jsonb);
    NEW.requested_by := current_user;
    NEW.correlation_id := pgcloud.correlation_id();
    NEW.state := 'pending';
    NEW.attempts := 0;
    NEW.created_at := now();
    NEW.next_attempt_at := now();
    NEW.last_attempt_at := NULL;
    NEW.completed_at := NULL;
    NEW.response_status := NULL;
    NEW.response_headers := NULL;
    NEW.response_body := NULL;
    NEW.response_truncated := false;
    NEW.last_error := NULL;
    NEW.callback_done_at := NULL;
    NEW.callback_attempts := 0;
    NEW.callback_next_at := NULL;
    NEW.callback_error := NULL;
    NEW.callback_given_up_at := NULL;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION pgcloud.http_intent_guard() IS 'Trigger: validates a new HTTP intent (target, method, path, headers without credentials, callback signature and owner) and sets the fields the caller may not choose (requested_by, state, attempts, ...).';

CREATE TRIGGER http_intents_10_guard BEFORE INSERT ON pgcloud.http_intents
    FOR EACH ROW EXECUTE FUNCTION pgcloud.http_intent_guard();
CREATE TRIGGER http_intents_20_state BEFORE INSERT OR UPDATE OF state ON pgcloud.http_intents
    FOR EACH ROW EXECUTE FUNCTION pgcloud.transition('state', 'pgcloud.http_intent_transitions');

CREATE FUNCTION pgcloud.http_wake() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_http_wake';
COMMENT ON FUNCTION pgcloud.http_wake() IS 'Wakes this database''s HTTP executor when the current transaction commits (pgcloud.http_request() calls it). False when pgcloud is not preloaded.';

CREATE FUNCTION pgcloud.http_request(target text, method text, path text, body text DEFAULT NULL,
                                     content_type text DEFAULT NULL, headers jsonb DEFAULT '{}',
                                     idempotency_key text DEFAULT NULL, callback regprocedure DEFAULT NULL,
                                     context jsonb DEFAULT '{}') RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    intent uuid := gen_random_uuid();
BEGIN
    -- Not SECURITY DEFINER: the intent records the calling service's role.
    INSERT INTO pgcloud.http_intents (id, target, method, path, body, content_type, headers, idempotency_key,
                                      callback, context, requested_by, correlation_id, state, next_attempt_at)
    VALUES (intent, target, method, path, body, content_type, headers, idempotency_key, callback, context,
            current_user, '', 'pending', now());
    PERFORM pgcloud.http_wake();
    RETURN intent;
END
$$;
COMMENT ON FUNCTION pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb) IS 'Services: writes an outbound request to target stripe, maas, smtp, s3 or test in the current transaction and returns its id; the HTTP executor sends it after commit (retries, backoff, dead letter) and calls callback(intent_id, status, response_headers, response_body, context, final) as its SECURITY DEFINER owner, once for the final outcome. Credentials are added at send time: Stripe Bearer key and Idempotency-Key, MAAS OAuth 1.0 PLAINTEXT, S3 SigV4 query signature.';

-- ---- the executor's side (superuser only) -------------------------------

CREATE FUNCTION pgcloud.http_recover() RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n integer;
BEGIN
    UPDATE pgcloud.http_intents SET state = 'pending', next_attempt_at = now(),
           last_error = coalesce(last_error, 'interrupted while in flight; sent again')
     WHERE state = 'in_flight';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.http_recover() IS 'HTTP executor, at start: intents left in flight by a crash or a stop go back to pending and are sent again with the same Idempotency-Key. Returns how many.';

CREATE FUNCTION pgcloud.http_claim_all(targets text[], slots integer[])
RETURNS TABLE (target text, id uuid, method text, path text, body text, content_type text, header_lines text[],
               mail_from text, idempotency_key text, attempt integer)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    -- One statement for every target; plpgsql so that the plan is kept.
    RETURN QUERY
    UPDATE pgcloud.http_intents i
       SET state = 'in_flight', attempts = i.attempts + 1, last_attempt_at = clock_timestamp()
      FROM (SELECT c.id
              FROM unnest(targets, slots) AS t (target, n)
             CROSS JOIN LATERAL (
                   SELECT c.id FROM pgcloud.http_intents c
                    WHERE c.target = t.target AND c.state IN ('pending', 'failed')
                      AND c.next_attempt_at <= clock_timestamp()
                    ORDER BY c.next_attempt_at, c.created_at
                    LIMIT greatest(t.n, 0)
                    FOR UPDATE SKIP LOCKED) c) due
     WHERE i.id = due.id
    RETURNING i.target, i.id, i.method, i.path, i.body, i.content_type,
              CASE WHEN i.target = 'smtp' THEN '{}'::text[]
                   ELSE ARRAY(SELECT h.key || ': ' || (h.value #>> '{}') FROM jsonb_each(i.headers) h ORDER BY h.key) END,
              i.headers ->> 'mail_from', coalesce(i.idempotency_key, i.id::text), i.attempts;
END
$$;
COMMENT ON FUNCTION pgcloud.http_claim_all(text[], integer[]) IS 'HTTP executor: marks due intents in flight (one more try each), at most slots[i] of targets[i], oldest due first, and returns what to send.';

CREATE FUNCTION pgcloud.http_claim(target text, max_intents integer)
RETURNS TABLE (id uuid, method text, path text, body text, content_type text, header_lines text[],
               mail_from text, idempotency_key text, attempt integer)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT c.id, c.method, c.path, c.body, c.content_type, c.header_lines, c.mail_from, c.idempotency_key, c.attempt
      FROM pgcloud.http_claim_all(ARRAY[target], ARRAY[max_intents]) c
$$;
COMMENT ON FUNCTION pgcloud.http_claim(text, integer) IS 'HTTP executor: pgcloud.http_claim_all() for one target.';

CREATE FUNCTION pgcloud.http_backoff_ms(attempt integer) RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT (least(pgcloud.policy('core.http_backoff_base_ms', NULL::bigint)::float8 * 2 ^ least(greatest(attempt - 1, 0), 30),
                  pgcloud.policy('core.http_backoff_max_ms', NULL::bigint)::float8)
            * (0.5 + random()))::bigint
$$;
COMMENT ON FUNCTION pgcloud.http_backoff_ms(integer) IS 'Delay before the next try after failed try number attempt: core.http_backoff_base_ms * 2^(attempt-1), capped at core.http_backoff_max_ms, times a jitter factor in [0.5, 1.5).';

-- Runs the callback of an intent in a subtransaction of the current
-- transaction. For the final outcome the run is recorded in the same
-- subtransaction as the callback's effect (callback_done_at), so it happens
-- exactly once; a failing final callback is retried with backoff and given up
-- after core.http_callback_max_attempts. A non-final call (final = false,
-- after a failed try that will be retried) is best effort.
CREATE FUNCTION pgcloud.http_run_callback(intent_id uuid, final boolean DEFAULT true) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    i pgcloud.http_intents;
    err text;
    max_tries integer;
BEGIN
    SELECT * INTO i FROM pgcloud.http_intents h WHERE h.id = intent_id FOR UPDATE;
    IF NOT FOUND OR i.callback IS NULL THEN
        RETURN false;
    END IF;
    IF final AND (i.state NOT IN ('succeeded', 'dead') OR i.callback_done_at IS NOT NULL
                  OR i.callback_given_up_at IS NOT NULL) THEN
        RETURN false;
    END IF;
    IF NOT final AND i.state <> 'failed' THEN
        RETURN false;
    END IF;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.oid = i.callback AND p.prosecdef) THEN
            RAISE EXCEPTION 'callback function % of intent % no longer exists or is not SECURITY DEFINER',
                i.callback::oid, i.id;
        END IF;
        PERFORM set_config('pgcloud.correlation_id', i.correlation_id, true);
        EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', i.callback::oid::regproc)
          USING i.id, i.response_status, i.response_headers, i.response_body, i.context, final;
        PERFORM set_config('pgcloud.correlation_id', '', true);
        IF final THEN
            UPDATE pgcloud.http_intents h SET callback_done_at = clock_timestamp(), callback_error = NULL,
                   callback_next_at = NULL
             WHERE h.id = i.id;
        END IF;
        RETURN true;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
        err := left(pgcloud.sanitize(coalesce(err, 'unknown error')), 2000);
        IF NOT final THEN
            UPDATE pgcloud.http_intents h SET callback_error = err WHERE h.id = i.id;
            RETURN false;
        END IF;
        max_tries := pgcloud.policy('core.http_callback_max_attempts', NULL::integer);
        UPDATE pgcloud.http_intents h
           SET callback_attempts = h.callback_attempts + 1, callback_error = err,
               callback_next_at = clock_timestamp()
                   + make_interval(secs => pgcloud.http_backoff_ms(h.callback_attempts + 1) / 1000.0),
               callback_given_up_at = CASE WHEN h.callback_attempts + 1 >= max_tries THEN clock_timestamp() END
         WHERE h.id = i.id
        RETURNING * INTO i;
        IF i.callback_given_up_at IS NOT NULL THEN
            PERFORM pgcloud.emit('platform.alert', 'http_intent', i.id::text,
                jsonb_build_object('kind', 'http_callback_failed', 'intent_id', i.id, 'target', i.target,
                                   'service', i.requested_by, 'callback', i.callback::text,
                                   'attempts', i.callback_attempts, 'error', err));
        END IF;
        RETURN false;
    END;
END
$$;
COMMENT ON FUNCTION pgcloud.http_run_callback(uuid, boolean) IS 'HTTP executor: runs an intent''s callback as its SECURITY DEFINER owner in a subtransaction. Final: at most once (recorded with its effect), retried with backoff when it fails, given up with a platform.alert after core.http_callback_max_attempts. Returns whether it ran.';

CREATE FUNCTION pgcloud.http_record(intent_id uuid, attempt integer, status integer, response_headers jsonb,
                                    response_body text, truncated boolean, error text,
                                    retry_after_seconds integer DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    i pgcloud.http_intents;
    ok boolean;
    retryable boolean;
    next_state text;
    delay_ms bigint;
    clean text := CASE WHEN error IS NOT NULL THEN left(pgcloud.sanitize(error), 2000) END;
BEGIN
    SELECT * INTO i FROM pgcloud.http_intents h WHERE h.id = intent_id FOR UPDATE;
    IF NOT FOUND OR i.state <> 'in_flight' OR i.attempts <> attempt THEN
        RETURN 'stale';      -- a try that was superseded (e.g. recovered and claimed again)
    END IF;
    IF i.target = 'smtp' THEN
        ok := coalesce(error IS NULL AND status BETWEEN 200 AND 399, false);
        retryable := status IS NULL OR status < 500;         -- 4xx: transient; 5xx: permanent
    ELSE
        ok := coalesce(error IS NULL AND status BETWEEN 200 AND 299, false);
        retryable := status IS NULL OR status = 429 OR status >= 500;
    END IF;
    IF ok THEN
        next_state := 'succeeded';
    ELSIF retryable AND attempt < pgcloud.policy('core.http_max_attempts', NULL::integer) THEN
        next_state := 'failed';
    ELSE
        next_state := 'dead';
    END IF;
    IF clean IS NULL AND NOT ok THEN
        clean := CASE WHEN i.target = 'smtp' THEN format('SMTP reply %s', status)
                      ELSE format('HTTP %s', status) END
                 || CASE WHEN next_state = 'dead' AND NOT retryable THEN ' (not retried)' ELSE '' END;
    END IF;
    IF next_state = 'failed' THEN
        IF retry_after_seconds IS NOT NULL AND retry_after_seconds >= 0 THEN
            delay_ms := least(retry_after_seconds, pgcloud.policy('core.http_retry_after_max_seconds', NULL::integer))
                        * 1000::bigint;
        ELSE
            delay_ms := pgcloud.http_backoff_ms(attempt);
        END IF;
    END IF;
    UPDATE pgcloud.http_intents h
       SET state = next_state,
           response_status = status,
           response_headers = http_record.response_headers,
           response_body = http_record.response_body,
           response_truncated = coalesce(truncated, false),
           last_error = coalesce(clean, h.last_error),
           next_attempt_at = CASE WHEN next_state = 'failed'
                                  THEN clock_timestamp() + make_interval(secs => delay_ms / 1000.0)
                                  ELSE h.next_attempt_at END,
           completed_at = CASE WHEN next_state IN ('succeeded', 'dead') THEN clock_timestamp() END,
           callback_next_at = CASE WHEN next_state IN ('succeeded', 'dead') AND h.callback IS NOT NULL
                                   THEN clock_timestamp() END
     WHERE h.id = i.id;
    IF next_state = 'dead' AND retryable AND i.target <> 'smtp' THEN
        -- Retries exhausted: tell the operators (not for e-mail: alerts go out by e-mail).
        PERFORM pgcloud.emit('platform.alert', 'http_intent', i.id::text,
            jsonb_build_object('kind', 'http_dead', 'intent_id', i.id, 'target', i.target, 'method', i.method,
                               'path', pgcloud.sanitize(i.path), 'service', i.requested_by, 'attempts', attempt,
                               'status', status, 'error', clean));
    END IF;
    IF i.callback IS NOT NULL THEN
        PERFORM pgcloud.http_run_callback(i.id, next_state <> 'failed');
    END IF;
    RETURN next_state;
END
$$;
COMMENT ON FUNCTION pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer) IS 'HTTP executor: records the outcome of try number attempt (status NULL = no answer; error scrubbed before it is stored), decides succeeded, failed (retry after Retry-After or backoff with jitter) or dead, and runs the callback in the same transaction. Returns the new state, or stale for a superseded try.';

CREATE FUNCTION pgcloud.http_callbacks_due(max_intents integer) RETURNS SETOF uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    RETURN QUERY
    SELECT h.id FROM pgcloud.http_intents h
     WHERE h.callback IS NOT NULL AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL
       AND h.state IN ('succeeded', 'dead') AND h.callback_next_at <= clock_timestamp()
     ORDER BY h.callback_next_at
     LIMIT max_intents;
END
$$;
COMMENT ON FUNCTION pgcloud.http_callbacks_due(integer) IS 'HTTP executor: final outcomes whose callback failed and is due again.';

CREATE FUNCTION pgcloud.http_next_due_ms(targets text[]) RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    due timestamptz;
BEGIN
    SELECT min(x.m) INTO due
      FROM (SELECT (SELECT h.next_attempt_at FROM pgcloud.http_intents h
                     WHERE h.target = tg AND h.state IN ('pending', 'failed')
                     ORDER BY h.next_attempt_at LIMIT 1) AS m
              FROM unnest(targets) tg
            UNION ALL
            SELECT min(h.callback_next_at) FROM pgcloud.http_intents h
             WHERE h.callback IS NOT NULL AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL
               AND h.state IN ('succeeded', 'dead')) x;
    IF due IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(ceil(extract(epoch FROM due - clock_timestamp()) * 1000), 0)::bigint;
END
$$;
COMMENT ON FUNCTION pgcloud.http_next_due_ms(text[]) IS 'HTTP executor: milliseconds until the next intent of the given targets (those with free capacity) or failed callback is due; NULL when none waits.';

-- ---- operators ----------------------------------------------------------

CREATE VIEW pgcloud.http_intents_status AS
    SELECT t.target,
           count(h.id) FILTER (WHERE h.state = 'pending') AS pending,
           count(h.id) FILTER (WHERE h.state = 'in_flight') AS in_flight,
           count(h.id) FILTER (WHERE h.state = 'failed') AS retrying,
           count(h.id) FILTER (WHERE h.state = 'succeeded') AS succeeded,
           count(h.id) FILTER (WHERE h.state = 'dead') AS dead,
           min(h.created_at) FILTER (WHERE h.state IN ('pending', 'failed', 'in_flight')) AS oldest_pending_at,
           coalesce(extract(epoch FROM now() - min(h.created_at)
                    FILTER (WHERE h.state IN ('pending', 'failed', 'in_flight'))), 0)::numeric(12, 3)
               AS oldest_pending_seconds,
           max(h.completed_at) FILTER (WHERE h.state = 'dead') AS last_dead_at,
           count(h.id) FILTER (WHERE h.callback IS NOT NULL AND h.state IN ('succeeded', 'dead')
                                 AND h.callback_done_at IS NULL AND h.callback_given_up_at IS NULL)
               AS callbacks_pending,
           count(h.id) FILTER (WHERE h.callback_given_up_at IS NOT NULL) AS callbacks_failed
      FROM (VALUES ('stripe'), ('maas'), ('smtp'), ('test'), ('s3')) AS t (target)
      LEFT JOIN pgcloud.http_intents h ON h.target = t.target
     GROUP BY t.target
     ORDER BY t.target;
COMMENT ON VIEW pgcloud.http_intents_status IS 'Operators: outbound HTTP intents per target and state, the oldest undone one, dead letters and callbacks waiting or given up.';
COMMENT ON COLUMN pgcloud.http_intents_status.target IS 'stripe, maas, smtp, s3 or test.';
COMMENT ON COLUMN pgcloud.http_intents_status.pending IS 'Intents not yet tried.';
COMMENT ON COLUMN pgcloud.http_intents_status.in_flight IS 'Intents being sent now.';
COMMENT ON COLUMN pgcloud.http_intents_status.retrying IS 'Intents that failed and wait for a retry (state failed).';
COMMENT ON COLUMN pgcloud.http_intents_status.succeeded IS 'Intents answered with success.';
COMMENT ON COLUMN pgcloud.http_intents_status.dead IS 'Intents given up (retries exhausted or refused).';
COMMENT ON COLUMN pgcloud.http_intents_status.oldest_pending_at IS 'Creation time of the oldest intent not yet done.';
COMMENT ON COLUMN pgcloud.http_intents_status.oldest_pending_seconds IS 'Its age in seconds (0 when none).';
COMMENT ON COLUMN pgcloud.http_intents_status.last_dead_at IS 'When the last intent was given up.';
COMMENT ON COLUMN pgcloud.http_intents_status.callbacks_pending IS 'Final outcomes whose callback has not run yet (failed and waiting for a retry).';
COMMENT ON COLUMN pgcloud.http_intents_status.callbacks_failed IS 'Callbacks given up after core.http_callback_max_attempts.';

CREATE VIEW pgcloud.http_dead_intents AS
    SELECT h.id, h.target, h.method, pgcloud.sanitize(h.path) AS path, h.requested_by, h.attempts,
           h.response_status, h.last_error, h.created_at, h.completed_at
      FROM pgcloud.http_intents h
     WHERE h.state = 'dead'
     ORDER BY h.completed_at DESC
     LIMIT 100;
COMMENT ON VIEW pgcloud.http_dead_intents IS 'Operators: the 100 most recent dead HTTP intents and why they died.';
COMMENT ON COLUMN pgcloud.http_dead_intents.id IS 'Intent id.';
COMMENT ON COLUMN pgcloud.http_dead_intents.target IS 'Target.';
COMMENT ON COLUMN pgcloud.http_dead_intents.method IS 'Method.';
COMMENT ON COLUMN pgcloud.http_dead_intents.path IS 'Path (scrubbed).';
COMMENT ON COLUMN pgcloud.http_dead_intents.requested_by IS 'The requesting service role.';
COMMENT ON COLUMN pgcloud.http_dead_intents.attempts IS 'Tries made.';
COMMENT ON COLUMN pgcloud.http_dead_intents.response_status IS 'Last status (NULL: no answer).';
COMMENT ON COLUMN pgcloud.http_dead_intents.last_error IS 'Last error, scrubbed.';
COMMENT ON COLUMN pgcloud.http_dead_intents.created_at IS 'When it was written.';
COMMENT ON COLUMN pgcloud.http_dead_intents.completed_at IS 'When it was given up.';

COMMENT ON COLUMN pgcloud.workers.worker IS 'relay, consumer or http (the HTTP intent executor).';

-- source: sql/core/70_policy_admin.sql
-- pgcloud.set_policy(): the only way policy changes (admin, audited, idempotent).

CREATE FUNCTION pgcloud.set_policy_apply(args jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    k text := args ->> 'key';
    v jsonb := args -> 'value';
    old jsonb;
BEGIN
    PERFORM pgcloud.authorize('admin');
    IF k IS NULL OR k !~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$' THEN
        PERFORM pgcloud.raise('invalid_argument', 'policy key must be <service>.<name> in lower case');
    END IF;
    IF split_part(k, '.', 1) <> 'core'
       AND NOT EXISTS (SELECT 1 FROM pgcloud.services s WHERE s.name = split_part(k, '.', 1)) THEN
        PERFORM pgcloud.raise('invalid_argument', format('"%s" is not a pgcloud service', split_part(k, '.', 1)));
    END IF;
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        PERFORM pgcloud.raise('invalid_argument', 'policy value must not be null');
    END IF;
    SELECT p.value INTO old FROM pgcloud.policy_values p WHERE p.key = k FOR UPDATE;
    INSERT INTO pgcloud.policy_values AS p (key, value, updated_at, updated_by)
    VALUES (k, v, now(), pgcloud.request_role())
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
                                    updated_by = excluded.updated_by;
    PERFORM pgcloud.audit('policy.set', 'policy', k, 'ok', jsonb_build_object('old', old, 'new', v));
    PERFORM pgcloud.wake_scheduler();   -- a job's new interval counts from its last run, at once
    RETURN jsonb_build_object('key', k, 'value', v, 'previous', old);
END
$$;
COMMENT ON FUNCTION pgcloud.set_policy_apply(jsonb) IS 'Internal to pgcloud.set_policy(): applies {key, value}.';

CREATE FUNCTION pgcloud.set_policy(key text, value jsonb) RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT pgcloud.idempotent('policy.set', jsonb_build_object('key', key, 'value', value),
                              'pgcloud.set_policy_apply(jsonb)')
$$;
COMMENT ON FUNCTION pgcloud.set_policy(text, jsonb) IS 'Sets a policy value (<service>.<name>) — admin only, audited as policy.set, safe to retry with X-Idempotency-Key. Returns {key, value, previous}.';

CREATE FUNCTION pgcloud.pre_request() RETURNS void
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS 'MODULE_PATHNAME', 'pgcloud_pre_request';
COMMENT ON FUNCTION pgcloud.pre_request() IS 'PostgREST db-pre-request: refuses access tokens of revoked sessions (sid claim, pgcloud.revoked_sessions) with session_revoked (401), then applies the per-principal rate limit (token bucket in shared memory, core.rate_limit_per_second and core.rate_limit_burst; sign-in and token exchange, refresh and webhooks have buckets and policies of their own, core.rate_limit_<class>_per_second/_burst); answers 429 with Retry-After when exceeded. Anonymous callers are keyed by the address the trusted proxies saw (core.rate_limit_trusted_proxies entries from the right of X-Forwarded-For; IPv6 by /64), never by what the client wrote.';

CREATE FUNCTION pgcloud.rate_limit_status(OUT principal text, OUT tokens float8, OUT refilled_at timestamptz,
                                          OUT allowed bigint, OUT denied bigint)
RETURNS SETOF record
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_rate_limit_status';
COMMENT ON FUNCTION pgcloud.rate_limit_status() IS 'Operators: the rate limiter''s buckets (principal, tokens left, last refill, allowed and denied counts).';

CREATE FUNCTION pgcloud.rate_limit_reset(principal text DEFAULT NULL) RETURNS bigint
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_rate_limit_reset';
COMMENT ON FUNCTION pgcloud.rate_limit_reset(text) IS 'Operators: forgets one principal''s bucket (or all when NULL); returns how many were removed.';


-- source: sql/core/80_jobs.sql
-- Jobs: what the platform runs by itself. Each service registers its
-- periodic jobs when it is installed; the scheduler worker (started by the
-- launcher for every database of pgcloud.databases) runs them at the
-- cadence their policy says, as the role that owns the job's function, and
-- records each outcome here. Nothing to call by hand: installing pgcloud in
-- a database its workers serve starts everything.

INSERT INTO pgcloud.policy_values (key, value, description) VALUES
    ('core.job_timeout_ms', '300000', 'Statement timeout of one run of a scheduled job (ms).'),
    ('core.prune_interval_seconds', '600', 'How often the expiry and pruning jobs run (seconds).'),
    ('core.outbox_retention_seconds', '604800', 'How long a published outbox row is kept as the archive (seconds).'),
    ('core.inbox_retention_seconds', '604800', 'How long an applied event''s inbox row (its deduplication key) is kept (seconds); longer than any redelivery.'),
    ('core.http_intent_retention_seconds', '604800', 'How long a finished HTTP intent (succeeded or dead, callback done or given up) is kept (seconds).'),
    ('core.cron_history_retention_seconds', '604800', 'How long pg_cron''s run history (cron.job_run_details) is kept (seconds).');

CREATE TABLE pgcloud.scheduled_jobs (
    name             text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    service          text NOT NULL,
    function         regprocedure NOT NULL,
    interval_policy  text NOT NULL,
    interval_unit    text NOT NULL CHECK (interval_unit IN ('ms', 's')),
    run_on_wake      boolean NOT NULL DEFAULT false,
    run_as_owner     boolean NOT NULL DEFAULT true,
    enabled          boolean NOT NULL DEFAULT true,
    description      text NOT NULL,
    next_run         timestamptz NOT NULL DEFAULT now(),
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_status      text CHECK (last_status IN ('succeeded', 'failed')),
    last_result      text,
    last_error       text,
    last_error_at    timestamptz,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE pgcloud.scheduled_jobs IS 'The periodic jobs of the services installed in this database, registered at installation (pgcloud.register_job) and run by the scheduler worker; pgcloud.jobs shows them.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.name IS '<service>.<job>, e.g. maas.poll.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.service IS 'The service that registered the job.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.function IS 'The function run, with no arguments (defaults apply); its result is kept as text.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.interval_policy IS 'The policy key whose value is the time between two runs.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.interval_unit IS 'Unit of that policy value: ms or s.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.run_on_wake IS 'Whether the job also runs at once when the scheduler is woken (pgcloud.wake_scheduler()).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.run_as_owner IS 'Whether the job runs as the owner of its function (the service role); false only for jobs that need the superuser (pg_cron''s history).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.enabled IS 'Whether the scheduler runs the job (operators may pause one with pgcloud.set_job_enabled).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.description IS 'What the job does.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.next_run IS 'When the job is due next.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_started_at IS 'Start of the last run.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_finished_at IS 'End of the last run.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_status IS 'Outcome of the last run: succeeded or failed.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_result IS 'Result of the last successful run, as text (truncated to 1,000 characters).';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_error IS 'Error of the last failed run (scrubbed); kept after later successes, with last_error_at.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.last_error_at IS 'When the job last failed.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.runs IS 'Runs since installation.';
COMMENT ON COLUMN pgcloud.scheduled_jobs.failures IS 'Failed runs since installation.';

-- The time between two runs of a job, read from its policy (a missing or
-- invalid value falls back to a minute rather than stopping the job).
CREATE FUNCTION pgcloud.job_interval(j pgcloud.scheduled_jobs) RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    v numeric;
BEGIN
    BEGIN
        v := pgcloud.policy(j.interval_policy, NULL::numeric);
    EXCEPTION WHEN OTHERS THEN
        RETURN interval '1 minute';
    END;
    IF v IS NULL OR v <= 0 THEN
        RETURN interval '1 minute';
    END IF;
    RETURN CASE j.interval_unit WHEN 'ms' THEN make_interval(secs => v / 1000.0) ELSE make_interval(secs => v) END;
END
$$;
COMMENT ON FUNCTION pgcloud.job_interval(pgcloud.scheduled_jobs) IS 'The time between two runs of a job, from its interval policy (one minute when the policy is missing or not a positive number).';

CREATE FUNCTION pgcloud.register_job(name text, function regprocedure, interval_policy text, interval_unit text,
                                     description text, run_on_wake boolean DEFAULT false,
                                     run_as_owner boolean DEFAULT true) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    INSERT INTO pgcloud.scheduled_jobs AS j (name, service, function, interval_policy, interval_unit, description,
                                             run_on_wake, run_as_owner)
    VALUES (register_job.name, split_part(register_job.name, '.', 1), register_job.function,
            register_job.interval_policy, register_job.interval_unit, register_job.description,
            register_job.run_on_wake, register_job.run_as_owner)
    ON CONFLICT (name) DO UPDATE
       SET function = excluded.function, interval_policy = excluded.interval_policy,
           interval_unit = excluded.interval_unit, description = excluded.description,
           run_on_wake = excluded.run_on_wake, run_as_owner = excluded.run_as_owner
$$;
COMMENT ON FUNCTION pgcloud.register_job(text, regprocedure, text, text, text, boolean, boolean) IS 'Install-time: registers (or updates) a periodic job of a service; the scheduler runs it from then on. Superuser only.';

-- A service's jobs leave with the service (DROP EXTENSION drops the
-- function; the job row must not outlive it).
CREATE FUNCTION pgcloud.forget_dropped_jobs() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    IF to_regclass('pgcloud.scheduled_jobs') IS NOT NULL
       AND EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o WHERE o.object_type = 'function') THEN
        DELETE FROM pgcloud.scheduled_jobs j
         WHERE NOT EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = j.function::oid);
    END IF;
END
$$;
COMMENT ON FUNCTION pgcloud.forget_dropped_jobs() IS 'Event trigger: forgets the jobs whose function was dropped (a service extension dropped).';
CREATE EVENT TRIGGER pgcloud_forget_dropped_jobs ON sql_drop EXECUTE FUNCTION pgcloud.forget_dropped_jobs();

-- When a job is due: its interval after its last run, as the policy says
-- now (a shortened interval applies at once), or next_run when sooner
-- (never run, or resumed).
CREATE FUNCTION pgcloud.job_due_at(j pgcloud.scheduled_jobs) RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT least(j.next_run, j.last_finished_at + pgcloud.job_interval(j)) $$;
COMMENT ON FUNCTION pgcloud.job_due_at(pgcloud.scheduled_jobs) IS 'When a job is due: its current interval after its last run, or its next_run when that is sooner.';

CREATE FUNCTION pgcloud.due_jobs(woken boolean, OUT name text, OUT call text, OUT run_as text, OUT timeout_ms integer)
RETURNS SETOF record
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT j.name,
           quote_ident(n.nspname) || '.' || quote_ident(p.proname),
           CASE WHEN j.run_as_owner THEN pg_get_userbyid(p.proowner)::text END,
           pgcloud.policy('core.job_timeout_ms', NULL::integer)
      FROM pgcloud.scheduled_jobs j
      JOIN pg_proc p ON p.oid = j.function::oid
      JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE j.enabled AND (pgcloud.job_due_at(j) <= clock_timestamp() OR (woken AND j.run_on_wake))
     ORDER BY pgcloud.job_due_at(j), j.name
$$;
COMMENT ON FUNCTION pgcloud.due_jobs(boolean) IS 'Scheduler: the jobs due now (on a wake-up, also those that run on a wake-up), with the function to call, the role to run as and the statement timeout.';

CREATE FUNCTION pgcloud.job_finished(name text, ok boolean, result text, error text, started timestamptz)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
    UPDATE pgcloud.scheduled_jobs j
       SET last_started_at = started,
           last_finished_at = clock_timestamp(),
           last_status = CASE WHEN ok THEN 'succeeded' ELSE 'failed' END,
           last_result = CASE WHEN ok THEN left(result, 1000) ELSE j.last_result END,
           last_error = CASE WHEN ok THEN j.last_error ELSE left(pgcloud.sanitize(error), 1000) END,
           last_error_at = CASE WHEN ok THEN j.last_error_at ELSE clock_timestamp() END,
           runs = j.runs + 1,
           failures = j.failures + CASE WHEN ok THEN 0 ELSE 1 END,
           next_run = clock_timestamp() + pgcloud.job_interval(j)
     WHERE j.name = job_finished.name
$$;
COMMENT ON FUNCTION pgcloud.job_finished(text, boolean, text, text, timestamptz) IS 'Scheduler: records the outcome of a run (the error scrubbed) and when the job runs next.';

CREATE FUNCTION pgcloud.jobs_next_in_ms() RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pgcloud
AS $$
    SELECT greatest(0, ceil(extract(epoch FROM min(pgcloud.job_due_at(j)) - clock_timestamp()) * 1000))::bigint
      FROM pgcloud.scheduled_jobs j WHERE j.enabled
$$;
COMMENT ON FUNCTION pgcloud.jobs_next_in_ms() IS 'Scheduler: milliseconds until the next job is due (NULL when there is none).';

CREATE FUNCTION pgcloud.set_job_enabled(name text, enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    UPDATE pgcloud.scheduled_jobs j SET enabled = set_job_enabled.enabled, next_run = now()
     WHERE j.name = set_job_enabled.name;
    IF NOT FOUND THEN
        PERFORM pgcloud.raise('not_found', format('no job named %s', set_job_enabled.name));
    END IF;
    PERFORM pgcloud.audit(CASE WHEN enabled THEN 'job.enabled' ELSE 'job.paused' END, 'job', name, 'ok',
                          '{}'::jsonb);
    RETURN enabled;
END
$$;
COMMENT ON FUNCTION pgcloud.set_job_enabled(text, boolean) IS 'Operators: pauses or resumes a scheduled job (audited). A paused job shows in pgcloud.jobs with enabled = false.';

CREATE VIEW pgcloud.jobs AS
    SELECT j.name AS job,
           j.service,
           j.function::text AS function,
           format('every %s %s (policy %s)', pgcloud.policy(j.interval_policy, NULL::numeric), j.interval_unit,
                  j.interval_policy)
             || CASE WHEN j.run_on_wake THEN ', and when woken' ELSE '' END AS schedule,
           j.enabled,
           j.last_started_at AS last_run,
           j.last_status,
           j.last_finished_at - j.last_started_at AS last_duration,
           j.last_result,
           j.last_error,
           j.last_error_at,
           CASE WHEN j.enabled THEN pgcloud.job_due_at(j) END AS next_run,
           j.runs,
           j.failures,
           j.description
      FROM pgcloud.scheduled_jobs j;
COMMENT ON VIEW pgcloud.jobs IS 'Operators: every job the platform runs by itself in this database: its schedule, last run and outcome, last error, next run and counts. The scheduler worker runs them (pgcloud.workers, worker = scheduler).';

-- ---- expiry and pruning -----------------------------------------------------

-- One way to prune: delete the rows of a table whose time column is older
-- than a retention policy, and that satisfy a fixed condition.
CREATE FUNCTION pgcloud.prune_past_retention(rel regclass, time_column text, retention_policy text,
                                             condition text DEFAULT 'true') RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('WITH gone AS (DELETE FROM %s x WHERE (%s) AND x.%I < now() - make_interval(secs => $1) RETURNING 1) '
                   'SELECT count(*) FROM gone', rel, condition, time_column)
       INTO n USING pgcloud.policy(retention_policy, NULL::numeric);
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.prune_past_retention(regclass, text, text, text) IS 'Deletes the rows of rel whose time_column is older than the retention policy (seconds) and that satisfy condition (fixed SQL of the caller, never user input); returns how many.';

CREATE FUNCTION pgcloud.prune_outbox() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.outbox', 'published_at', 'core.outbox_retention_seconds',
                                           'x.published_at IS NOT NULL') $$;
COMMENT ON FUNCTION pgcloud.prune_outbox() IS 'Deletes published outbox rows older than core.outbox_retention_seconds (unpublished rows are never touched); returns how many.';

CREATE FUNCTION pgcloud.prune_inbox() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.inbox', 'processed_at', 'core.inbox_retention_seconds') $$;
COMMENT ON FUNCTION pgcloud.prune_inbox() IS 'Deletes inbox rows (deduplication keys of applied events) older than core.inbox_retention_seconds; returns how many.';

CREATE FUNCTION pgcloud.prune_http_intents() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.prune_past_retention('pgcloud.http_intents', 'completed_at', 'core.http_intent_retention_seconds',
           $c$x.state IN ('succeeded', 'dead') AND (x.callback IS NULL OR x.callback_done_at IS NOT NULL
              OR x.callback_given_up_at IS NOT NULL)$c$) $$;
COMMENT ON FUNCTION pgcloud.prune_http_intents() IS 'Deletes finished HTTP intents (succeeded or dead, callback done or given up) completed longer ago than core.http_intent_retention_seconds; returns how many.';

CREATE FUNCTION pgcloud.prune_cron_history() RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    n bigint := 0;
BEGIN
    IF to_regclass('cron.job_run_details') IS NULL THEN
        RETURN 0;      -- pg_cron lives in another database (cron.database_name) or not at all
    END IF;
    EXECUTE 'WITH gone AS (DELETE FROM cron.job_run_details d WHERE d.end_time < now() - make_interval(secs => $1)
             RETURNING 1) SELECT count(*) FROM gone'
       INTO n USING pgcloud.policy('core.cron_history_retention_seconds', NULL::numeric);
    RETURN n;
END
$$;
COMMENT ON FUNCTION pgcloud.prune_cron_history() IS 'Deletes pg_cron''s run history (cron.job_run_details) older than core.cron_history_retention_seconds, where pg_cron is installed in this database; returns how many.';

SELECT pgcloud.register_job('core.prune_idempotency_keys', 'pgcloud.prune_idempotency_keys()',
    'core.prune_interval_seconds', 's', 'Deletes expired idempotency keys (core.idempotency_ttl_seconds).');
SELECT pgcloud.register_job('core.prune_revoked_sessions', 'pgcloud.prune_revoked_sessions()',
    'core.prune_interval_seconds', 's', 'Deletes session revocations whose access tokens have all expired.');
SELECT pgcloud.register_job('core.prune_outbox', 'pgcloud.prune_outbox()',
    'core.prune_interval_seconds', 's', 'Deletes published outbox rows past core.outbox_retention_seconds.');
SELECT pgcloud.register_job('core.prune_inbox', 'pgcloud.prune_inbox()',
    'core.prune_interval_seconds', 's', 'Deletes inbox rows past core.inbox_retention_seconds.');
SELECT pgcloud.register_job('core.prune_http_intents', 'pgcloud.prune_http_intents()',
    'core.prune_interval_seconds', 's', 'Deletes finished HTTP intents past core.http_intent_retention_seconds.');
SELECT pgcloud.register_job('core.prune_cron_history', 'pgcloud.prune_cron_history()',
    'core.prune_interval_seconds', 's', 'Deletes pg_cron''s run history past core.cron_history_retention_seconds.',
    run_as_owner => false);

CREATE FUNCTION pgcloud.wake_scheduler() RETURNS boolean
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'pgcloud_wake_scheduler';
COMMENT ON FUNCTION pgcloud.wake_scheduler() IS 'Services: wakes this database''s scheduler when the transaction commits, so the jobs that run on a wake-up (the MAAS poller) run at once. False without the workers (pgcloud not preloaded).';
COMMENT ON COLUMN pgcloud.jobs.job IS 'The job''s name, <service>.<job>.';
COMMENT ON COLUMN pgcloud.jobs.service IS 'The service that registered it.';
COMMENT ON COLUMN pgcloud.jobs.function IS 'The function it runs.';
COMMENT ON COLUMN pgcloud.jobs.schedule IS 'How often it runs (its interval policy and current value), and whether a wake-up runs it too.';
COMMENT ON COLUMN pgcloud.jobs.enabled IS 'Whether it runs (pgcloud.set_job_enabled).';
COMMENT ON COLUMN pgcloud.jobs.last_run IS 'When its last run started.';
COMMENT ON COLUMN pgcloud.jobs.last_status IS 'succeeded or failed.';
COMMENT ON COLUMN pgcloud.jobs.last_duration IS 'How long the last run took.';
COMMENT ON COLUMN pgcloud.jobs.last_result IS 'What the last successful run returned.';
COMMENT ON COLUMN pgcloud.jobs.last_error IS 'The last error (scrubbed), kept after later successes; see last_error_at.';
COMMENT ON COLUMN pgcloud.jobs.last_error_at IS 'When it last failed.';
COMMENT ON COLUMN pgcloud.jobs.next_run IS 'When it runs next (NULL while paused).';
COMMENT ON COLUMN pgcloud.jobs.runs IS 'Runs since installation.';
COMMENT ON COLUMN pgcloud.jobs.failures IS 'Failed runs since installation.';
COMMENT ON COLUMN pgcloud.jobs.description IS 'What it does.';

-- source: sql/core/90_services.sql
-- Service extension lifecycle. Every service install script is wrapped by
-- the build in service_begin()/service_end().

CREATE FUNCTION pgcloud.service_begin(service text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    role_name text := 'pgcloud_svc_' || service;
    s pgcloud.services;
BEGIN
    SELECT * INTO s FROM pgcloud.services WHERE name = service;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'service "%" is not in the pgcloud registry', service;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
    END IF;
    IF NOT pg_catalog.pg_has_role(role_name, 'pgcloud_services', 'MEMBER') THEN
        EXECUTE format('GRANT pgcloud_services TO %I', role_name);
    END IF;
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', s.schema_name, role_name);
    EXECUTE format('COMMENT ON SCHEMA %I IS %L', s.schema_name,
                   format('pgcloud %s service (layer %s), owned by %s.', service, s.layer, role_name));
END
$$;
COMMENT ON FUNCTION pgcloud.service_begin(text) IS 'Install-time: creates the service role (if missing) and its schema. Called by each service install script.';

CREATE FUNCTION pgcloud.hand_over(extension name, role_name name) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    ext oid := (SELECT oid FROM pg_catalog.pg_extension WHERE extname = extension);
    obj record;
BEGIN
    IF ext IS NULL THEN
        RAISE EXCEPTION 'extension "%" is not being installed', extension;
    END IF;
    FOR obj IN
        SELECT c.oid::regclass AS name, c.relkind
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    LOOP
        IF obj.relkind = 'S' AND EXISTS (
            SELECT 1 FROM pg_catalog.pg_depend a
             WHERE a.classid = 'pg_catalog.pg_class'::regclass AND a.objid = obj.name::oid AND a.deptype IN ('a', 'i')) THEN
            CONTINUE;  -- owned by its table
        END IF;
        EXECUTE format('ALTER TABLE %s OWNER TO %I', obj.name, role_name);
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', obj.name, role_name);
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', obj.name);
    END LOOP;
    FOR obj IN
        SELECT t.oid::regtype AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_type t ON t.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.refobjid = ext AND d.deptype = 'e'
           AND t.typtype IN ('c', 'e', 'd', 'r') AND t.typrelid = 0
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO %I', obj.name, role_name);
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgcloud.hand_over(name, name) IS 'Install-time: gives every member object of an extension to a role and revokes PUBLIC execute on its routines.';

CREATE FUNCTION pgcloud.service_end(service text) RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$ SELECT pgcloud.hand_over(('pgcloud_' || service)::name, ('pgcloud_svc_' || service)::name) $$;
COMMENT ON FUNCTION pgcloud.service_end(text) IS 'Install-time: gives every object of pgcloud_<service> to role pgcloud_svc_<service>. Called by each service install script.';

-- source: sql/core/99_privileges.sql
-- Ownership and privileges of the core. Everything belongs to
-- pgcloud_svc_core; PUBLIC gets nothing; each group gets what it must.
SELECT pgcloud.hand_over('pgcloud_core', 'pgcloud_svc_core');

-- Install-time and operator-only routines stay superuser-only.
REVOKE ALL ON ROUTINE pgcloud.service_begin(text), pgcloud.service_end(text), pgcloud.hand_over(name, name),
    pgcloud.rate_limit_reset(text),
    pgcloud.relay_once(integer), pgcloud.consume_event(text, jsonb, text), pgcloud.wake_workers(),
    pgcloud.http_recover(), pgcloud.http_claim(text, integer), pgcloud.http_claim_all(text[], integer[]),
    pgcloud.http_record(uuid, integer, integer, jsonb, text, boolean, text, integer),
    pgcloud.http_run_callback(uuid, boolean), pgcloud.http_callbacks_due(integer),
    pgcloud.http_next_due_ms(text[]), pgcloud.http_backoff_ms(integer),
    pgcloud.register_job(text, regprocedure, text, text, text, boolean, boolean),
    pgcloud.due_jobs(boolean), pgcloud.job_finished(text, boolean, text, text, timestamptz),
    pgcloud.jobs_next_in_ms(), pgcloud.prune_cron_history()
    FROM pgcloud_svc_core;

-- Every API role: the pre-request hook and the scrubber.
GRANT EXECUTE ON ROUTINE pgcloud.pre_request(), pgcloud.sanitize(text)
    TO pgcloud_anon, pgcloud_user, pgcloud_admin, pgcloud_service;
-- Signed-in callers may check a path before they ask for a URL.
GRANT EXECUTE ON ROUTINE pgcloud.safe_path(text) TO pgcloud_user, pgcloud_admin, pgcloud_service;

-- Request context and the primitives services build on.
GRANT EXECUTE ON ROUTINE
    pgcloud.claims(), pgcloud.headers(), pgcloud.header(text), pgcloud.request_role(), pgcloud.user_id(),
    pgcloud.correlation_id(), pgcloud.context(), pgcloud.raise(text, text, text, jsonb),
    pgcloud.is_operator(), pgcloud.authorize(text), pgcloud.authorize_scope(text, text, text),
    pgcloud.authorize_service(text, text, text), pgcloud.refuse_unscoped_service(),
    pgcloud.scopes(), pgcloud.valid_scope(text), pgcloud.idempotency_principal(),
    pgcloud.idempotent(text, jsonb, regprocedure), pgcloud.idempotency_begin(text, text, bytea),
    pgcloud.idempotency_finish(text, text, bytea, jsonb)
    TO pgcloud_services, pgcloud_admin, pgcloud_user, pgcloud_service;
GRANT EXECUTE ON ROUTINE
    pgcloud.emit(text, text, text, jsonb), pgcloud.audit(text, text, text, text, jsonb),
    pgcloud.policy(text, anyelement), pgcloud.event_matches(text, text), pgcloud.subscribers(text),
    pgcloud.immutable(), pgcloud.transition(), pgcloud.build_info(),
    pgcloud.seal(bytea, text), pgcloud.unseal(bytea, text), pgcloud.revoke_session(uuid, timestamptz),
    pgcloud.sanitize(text), pgcloud.wake_scheduler(), pgcloud.safe_path(text)
    TO pgcloud_services;
-- No INSERT on pgcloud.outbox: only pgcloud.emit() writes it (as the outbox
-- owner, after checking the caller owns the event type).
GRANT EXECUTE ON ROUTINE pgcloud.publisher_of(text), pgcloud.event_authentic(text, text), pgcloud.alert(text, text, jsonb)
    TO pgcloud_services;
-- Outbound HTTP: services write intents (the guard trigger records who).
GRANT EXECUTE ON ROUTINE
    pgcloud.http_request(text, text, text, text, text, jsonb, text, regprocedure, jsonb), pgcloud.http_wake()
    TO pgcloud_services;
GRANT INSERT ON pgcloud.http_intents TO pgcloud_services;
GRANT SELECT ON pgcloud.http_intent_transitions TO pgcloud_services;
GRANT SELECT ON pgcloud.services, pgcloud.subscriptions, pgcloud.error_codes, pgcloud.policy_values TO pgcloud_services;

-- Admins: policy changes and the rate limiter's state.
GRANT EXECUTE ON ROUTINE pgcloud.set_policy(text, jsonb), pgcloud.set_policy_apply(jsonb),
    pgcloud.rate_limit_status(), pgcloud.build_info(), pgcloud.worker_status(),
    pgcloud.set_job_enabled(text, boolean)
    TO pgcloud_admin;
GRANT SELECT ON pgcloud.outbox_lag, pgcloud.oldest_undelivered, pgcloud.workers, pgcloud.dead_letters,
    pgcloud.http_intents_status, pgcloud.http_dead_intents, pgcloud.jobs
    TO pgcloud_admin;

-- Start this database's workers as soon as the installation commits.
SELECT pgcloud.wake_workers();

-- source: sql/generated/subscriptions.sql
-- generated from registry/services.conf — do not edit
--
-- Service and subscription registry rows. Concatenated into the
-- pgcloud_core install script: plain INSERTs only.

INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on, http_targets) VALUES
  ('auth', 'auth', 'pgcloud_auth', 'platform', '/auth',
   ARRAY['user.created', 'user.signed_in', 'session.revoked', 'service_account.created']::text[],
   '{}'::text[],
   '{}'::text[],
   '{}'::text[]),
  ('inventory', 'inventory', 'pgcloud_inventory', 'domain', '/inventory',
   ARRAY['sku.upserted', 'image.upserted', 'node.registered', 'node.state_changed']::text[],
   ARRAY['maas.machine_commissioned', 'maas.machine_status_changed', 'allocation.requested', 'allocation.released', 'allocation.failed']::text[],
   ARRAY['maas', 'provisioning']::text[],
   '{}'::text[]),
  ('provisioning', 'provisioning', 'pgcloud_provisioning', 'domain', '/provisioning',
   ARRAY['allocation.requested', 'allocation.provisioning', 'allocation.activated', 'allocation.releasing', 'allocation.released', 'allocation.failed', 'deploy.requested', 'release.requested']::text[],
   ARRAY['sku.upserted', 'image.upserted', 'node.registered', 'node.state_changed', 'account.standing_changed', 'billing.force_release_requested', 'admin.force_release_requested', 'maas.machine_deployed', 'maas.machine_released', 'maas.deploy_failed', 'ssh_key.added', 'ssh_key.deleted']::text[],
   ARRAY['inventory', 'billing', 'maas', 'admin', 'releases']::text[],
   '{}'::text[]),
  ('maas', 'maas', 'pgcloud_maas', 'shared', '/maas',
   ARRAY['maas.machine_commissioned', 'maas.machine_status_changed', 'maas.machine_deployed', 'maas.machine_released', 'maas.deploy_failed']::text[],
   ARRAY['node.registered', 'deploy.requested', 'release.requested']::text[],
   ARRAY['inventory', 'provisioning']::text[],
   ARRAY['maas']::text[]),
  ('releases', 'releases', 'pgcloud_releases', 'domain', '/releases',
   ARRAY['ssh_key.added', 'ssh_key.deleted', 'access.minted']::text[],
   ARRAY['user.created', 'allocation.activated', 'allocation.releasing', 'allocation.released', 'allocation.failed']::text[],
   ARRAY['auth', 'provisioning']::text[],
   '{}'::text[]),
  ('billing', 'billing', 'pgcloud_billing', 'domain', '/billing',
   ARRAY['ledger.entry_posted', 'billing.low_balance', 'account.standing_changed', 'billing.force_release_requested', 'billing.refund_declined']::text[],
   ARRAY['user.created', 'allocation.activated', 'allocation.released', 'allocation.failed', 'payment.succeeded', 'refund.requested', 'refund.failed']::text[],
   ARRAY['auth', 'provisioning', 'payments']::text[],
   '{}'::text[]),
  ('payments', 'payments', 'pgcloud_payments', 'domain', '/payments',
   ARRAY['checkout.created', 'payment.succeeded', 'refund.requested', 'payment.refunded', 'refund.failed']::text[],
   ARRAY['user.created', 'ledger.entry_posted', 'billing.refund_declined']::text[],
   ARRAY['auth', 'billing']::text[],
   ARRAY['stripe']::text[]),
  ('terminal', 'terminal', 'pgcloud_terminal', 'domain', '/terminal',
   ARRAY['terminal.token_minted', 'terminal.token_redeemed']::text[],
   ARRAY['user.created', 'allocation.activated', 'allocation.released', 'allocation.failed']::text[],
   ARRAY['auth', 'provisioning']::text[],
   '{}'::text[]),
  ('appruntime', 'appruntime', 'pgcloud_appruntime', 'domain', '/apps',
   ARRAY['app.instance_launched', 'app.instance_running', 'app.instance_stopped', 'app.instance_released']::text[],
   ARRAY['allocation.activated', 'allocation.released', 'allocation.failed']::text[],
   ARRAY['provisioning']::text[],
   '{}'::text[]),
  ('storage', 'storage', 'pgcloud_storage', 'domain', '/storage',
   ARRAY['namespace.created', 'namespace.deleted', 'object.stored', 'object.deleted']::text[],
   ARRAY['user.created']::text[],
   ARRAY['auth']::text[],
   ARRAY['s3']::text[]),
  ('admin', 'admin', 'pgcloud_admin', 'platform', '/admin',
   ARRAY['admin.force_release_requested']::text[],
   ARRAY['audit.recorded', 'user.created', 'user.signed_in', 'allocation.>', 'node.registered', 'node.state_changed', 'ledger.entry_posted', 'account.standing_changed', 'payment.succeeded', 'payment.refunded', 'refund.requested', 'refund.failed']::text[],
   ARRAY['auth', 'provisioning', 'billing', 'payments', 'inventory']::text[],
   '{}'::text[]),
  ('notification', 'notification', 'pgcloud_notification', 'shared', '/notifications',
   ARRAY['notification.sent', 'notification.dead_lettered']::text[],
   ARRAY['user.created', 'allocation.activated', 'allocation.released', 'allocation.failed', 'billing.low_balance', 'account.standing_changed', 'payment.succeeded', 'payment.refunded', 'platform.alert']::text[],
   ARRAY['auth', 'provisioning', 'billing', 'payments']::text[],
   ARRAY['smtp']::text[]),
  ('databases', 'databases', 'pgcloud_databases', 'domain', '/databases',
   ARRAY['environment.created', 'database_server.registered', 'service.created', 'service.deletion_scheduled', 'service.deleted', 'deployment.state_changed', 'database.credentials_rotated', 'config.changed']::text[],
   '{}'::text[],
   ARRAY['auth']::text[],
   '{}'::text[]);

INSERT INTO pgcloud.subscriptions (subscriber, event_type) VALUES
  ('inventory', 'maas.machine_commissioned'),
  ('inventory', 'maas.machine_status_changed'),
  ('inventory', 'allocation.requested'),
  ('inventory', 'allocation.released'),
  ('inventory', 'allocation.failed'),
  ('provisioning', 'sku.upserted'),
  ('provisioning', 'image.upserted'),
  ('provisioning', 'node.registered'),
  ('provisioning', 'node.state_changed'),
  ('provisioning', 'account.standing_changed'),
  ('provisioning', 'billing.force_release_requested'),
  ('provisioning', 'admin.force_release_requested'),
  ('provisioning', 'maas.machine_deployed'),
  ('provisioning', 'maas.machine_released'),
  ('provisioning', 'maas.deploy_failed'),
  ('provisioning', 'ssh_key.added'),
  ('provisioning', 'ssh_key.deleted'),
  ('maas', 'node.registered'),
  ('maas', 'deploy.requested'),
  ('maas', 'release.requested'),
  ('releases', 'user.created'),
  ('releases', 'allocation.activated'),
  ('releases', 'allocation.releasing'),
  ('releases', 'allocation.released'),
  ('releases', 'allocation.failed'),
  ('billing', 'user.created'),
  ('billing', 'allocation.activated'),
  ('billing', 'allocation.released'),
  ('billing', 'allocation.failed'),
  ('billing', 'payment.succeeded'),
  ('billing', 'refund.requested'),
  ('billing', 'refund.failed'),
  ('payments', 'user.created'),
  ('payments', 'ledger.entry_posted'),
  ('payments', 'billing.refund_declined'),
  ('terminal', 'user.created'),
  ('terminal', 'allocation.activated'),
  ('terminal', 'allocation.released'),
  ('terminal', 'allocation.failed'),
  ('appruntime', 'allocation.activated'),
  ('appruntime', 'allocation.released'),
  ('appruntime', 'allocation.failed'),
  ('storage', 'user.created'),
  ('admin', 'audit.recorded'),
  ('admin', 'user.created'),
  ('admin', 'user.signed_in'),
  ('admin', 'allocation.>'),
  ('admin', 'node.registered'),
  ('admin', 'node.state_changed'),
  ('admin', 'ledger.entry_posted'),
  ('admin', 'account.standing_changed'),
  ('admin', 'payment.succeeded'),
  ('admin', 'payment.refunded'),
  ('admin', 'refund.requested'),
  ('admin', 'refund.failed'),
  ('notification', 'user.created'),
  ('notification', 'allocation.activated'),
  ('notification', 'allocation.released'),
  ('notification', 'allocation.failed'),
  ('notification', 'billing.low_balance'),
  ('notification', 'account.standing_changed'),
  ('notification', 'payment.succeeded'),
  ('notification', 'payment.refunded'),
  ('notification', 'platform.alert');

