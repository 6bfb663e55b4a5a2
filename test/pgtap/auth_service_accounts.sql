-- Service accounts, service tokens and their scopes; pgcloud.authorize_scope()
-- (global -> tenant -> project) with the scopes claim as array or string.
BEGIN;
SELECT * FROM no_plan();


-- 1. Creating a service account: administrators only, secret shown once, stored hashed.
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "11111111-1111-4111-8111-111111111111"}';
SET LOCAL ROLE pgcloud_admin;
SELECT is(pg_temp.error_full_of($$ SELECT api.admin_create_service_account('relay', '{}') $$) ->> 'code', 'forbidden',
          'a user cannot create a service account');
RESET ROLE;
RESET request.jwt.claims;
SELECT api.admin_create_service_account('terminal-relay',
    ARRAY['terminal:redeem', 'tenant:acme/inventory:read', 'tenant:acme/project:ml/allocations:write', 'terminal:redeem']) AS sa \gset
SELECT ok(:'sa'::jsonb ->> 'client_id' ~ '^sa_[A-Za-z0-9_-]{22}$', 'a client id is returned');
SELECT ok(:'sa'::jsonb ->> 'client_secret' ~ '^pgcs_[A-Za-z0-9_-]{43}$', 'a client secret (256 bits) is returned once');
SELECT is(:'sa'::jsonb -> 'scopes', '["tenant:acme/inventory:read", "tenant:acme/project:ml/allocations:write", "terminal:redeem"]',
          'scopes are stored sorted and without duplicates');
SELECT is((SELECT secret_hash FROM auth.service_accounts WHERE name = 'terminal-relay'),
          sha256(convert_to(:'sa'::jsonb ->> 'client_secret', 'UTF8')), 'only the SHA-256 of the secret is stored');
SELECT ok(NOT EXISTS (SELECT 1 FROM auth.service_accounts s WHERE s::text LIKE '%' || (:'sa'::jsonb ->> 'client_secret') || '%')
          AND NOT EXISTS (SELECT 1 FROM pgcloud.outbox o WHERE o::text LIKE '%' || (:'sa'::jsonb ->> 'client_secret') || '%')
          AND NOT EXISTS (SELECT 1 FROM pgcloud.audit_logs a WHERE a::text LIKE '%' || (:'sa'::jsonb ->> 'client_secret') || '%'),
          'the secret is in no table, event or audit entry');
SELECT is((SELECT payload ->> 'client_id' FROM pgcloud.outbox WHERE event_type = 'service_account.created'),
          :'sa'::jsonb ->> 'client_id', 'service_account.created is emitted');
SELECT ok(EXISTS (SELECT 1 FROM pgcloud.audit_logs WHERE action = 'service_account.create'), 'creation is audited');
SELECT is(pg_temp.error_full_of($$ SELECT api.admin_create_service_account('terminal-relay', '{}') $$) ->> 'code', 'conflict',
          'a second account with the same name: conflict (409)');
SELECT is(pg_temp.error_full_of($$ SELECT api.admin_create_service_account('x', '{}') $$) ->> 'code', 'invalid_argument',
          'a too short name is refused');
SELECT is(pg_temp.error_full_of($$ SELECT api.admin_create_service_account('bad-scopes', ARRAY['Inventory Read']) $$) ->> 'details',
          'scope "Inventory Read" is not valid: use [tenant:<t>/[project:<p>/]]<name>, e.g. allocations:read',
          'a malformed scope is refused');
SELECT is(pg_temp.error_full_of($$ SELECT api.admin_create_service_account('no-scopes', NULL) $$) ->> 'code', 'invalid_argument',
          'scopes must be given');

-- 2. The client credentials exchange.
SET LOCAL ROLE pgcloud_anon;
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT is(pg_temp.error_full_of(format('SELECT api.service_token(%L, %L)', :'sa'::jsonb ->> 'client_id', 'pgcs_wrong')) - 'headers' - 'hint' - 'message',
          '{"code": "invalid_client", "status": 401, "details": "the client id or the client secret is wrong, or the account is disabled"}',
          'a wrong secret: invalid_client (401)');
SELECT is(pg_temp.error_full_of(format('SELECT api.service_token(%L, %L)', 'sa_unknown', :'sa'::jsonb ->> 'client_secret')) ->> 'code',
          'invalid_client', 'an unknown client: invalid_client');
SELECT api.service_token(:'sa'::jsonb ->> 'client_id', :'sa'::jsonb ->> 'client_secret') AS st \gset
RESET ROLE;
SELECT auth.verify_access_token(:'st'::jsonb ->> 'access_token') AS sc \gset
SELECT is(:'sc'::jsonb ->> 'role', 'pgcloud_service', 'the token has role pgcloud_service');
SELECT is(:'sc'::jsonb ->> 'sub', :'sa'::jsonb ->> 'id', 'sub is the service account');
SELECT is(:'sc'::jsonb -> 'scopes', :'sa'::jsonb -> 'scopes', 'the token carries the account''s scopes');
SELECT ok(:'st'::jsonb ->> 'refresh_token' IS NULL AND (:'st'::jsonb ->> 'expires_in')::int = 900,
          'no refresh token; expires_in from auth.service_token_ttl_seconds');
SELECT ok((:'sc'::jsonb ->> 'sid')::uuid IN (SELECT id FROM auth.sessions WHERE method = 'service'),
          'a service session makes the token revocable');
UPDATE auth.service_accounts SET disabled_at = now() WHERE name = 'terminal-relay';
SET LOCAL ROLE pgcloud_anon;
SELECT is(pg_temp.error_full_of(format('SELECT api.service_token(%L, %L)', :'sa'::jsonb ->> 'client_id', :'sa'::jsonb ->> 'client_secret')) ->> 'code',
          'invalid_client', 'a disabled account gets no token');
RESET ROLE;

-- 3. Scopes decide: global -> tenant -> project.
SET LOCAL request.jwt.claims = :'sc';
SELECT is(pgcloud.authorize_scope('terminal:redeem'), 'pgcloud_service', 'a global scope: granted');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('terminal:mint') $$) - 'hint' - 'message',
          '{"code": "insufficient_scope", "status": 403, "details": "this call needs scope \"terminal:mint\"", "headers": {"WWW-Authenticate": "Bearer error=\"insufficient_scope\", scope=\"terminal:mint\""}}',
          'a scope not granted: insufficient_scope (403) with WWW-Authenticate');
SELECT is(pgcloud.authorize_scope('terminal:redeem', 'globex', 'p1'), 'pgcloud_service', 'a global grant covers every tenant and project');
SELECT is(pgcloud.authorize_scope('inventory:read', 'acme'), 'pgcloud_service', 'a tenant grant covers its tenant');
SELECT is(pgcloud.authorize_scope('inventory:read', 'acme', 'ml'), 'pgcloud_service', '... and the tenant''s projects');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('inventory:read', 'globex') $$) ->> 'details',
          'this call needs scope "inventory:read" in tenant globex', 'a tenant grant does not cover another tenant');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('inventory:read') $$) ->> 'code', 'insufficient_scope',
          'a tenant grant does not cover a global resource');
SELECT is(pgcloud.authorize_scope('allocations:write', 'acme', 'ml'), 'pgcloud_service', 'a project grant covers its project');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('allocations:write', 'acme', 'other') $$) ->> 'code', 'insufficient_scope',
          'a project grant does not cover another project');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('allocations:write', 'acme') $$) ->> 'code', 'insufficient_scope',
          'a project grant does not cover its whole tenant');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('allocations:write', NULL, 'ml') $$) ->> 'code', 'invalid_argument',
          'a project needs its tenant');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('tenant:acme/inventory:read') $$) ->> 'code', 'invalid_argument',
          'the required scope is a plain name');

-- The scopes claim as a space-separated string (OAuth "scope"), wildcards, and tenant-bound tokens.
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "sub": "22222222-2222-4222-8222-222222222222", "scope": "billing:read  tenant:acme/inventory:*"}';
SELECT is(pgcloud.scopes(), ARRAY['billing:read', 'tenant:acme/inventory:*'], 'a space-separated scope claim is read');
SELECT ok(pgcloud.authorize_scope('billing:read') = 'pgcloud_service' AND pgcloud.authorize_scope('inventory:write', 'acme') = 'pgcloud_service',
          'string scopes and prefix wildcards are granted');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_user", "sub": "22222222-2222-4222-8222-222222222222", "tenant": "acme", "scopes": ["*"]}';
SELECT ok(pgcloud.authorize_scope('anything:at_all', 'acme', 'ml') = 'pgcloud_user', 'a * grant covers every scope');
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('anything:at_all', 'globex') $$) ->> 'details',
          'this token is bound to tenant acme and cannot act in tenant globex', 'a token bound to a tenant acts only there');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_admin", "sub": "22222222-2222-4222-8222-222222222222"}';
SELECT is(pgcloud.authorize_scope('anything:at_all', 'globex'), 'pgcloud_admin', 'administrators hold every scope');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_anon"}';
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('billing:read') $$) ->> 'code', 'unauthenticated', 'anon: unauthenticated (401)');
SET LOCAL request.jwt.claims = '{"role": "pgcloud_service", "scopes": 7}';
SELECT is(pg_temp.error_full_of($$ SELECT pgcloud.authorize_scope('billing:read') $$) ->> 'code', 'invalid_request_context',
          'a scopes claim that is neither array nor string is refused');

SELECT * FROM finish();
ROLLBACK;
