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

-- Not SECURITY DEFINER (a SET clause costs every call, and a request reads
-- a dozen policies): the C function reads the table as its owner, with
-- every name qualified, and keeps what it read until the table changes.
CREATE FUNCTION pgcloud.policy(key text, as_type anyelement) RETURNS anyelement
LANGUAGE C STABLE
AS 'MODULE_PATHNAME', 'pgcloud_policy_get';
COMMENT ON FUNCTION pgcloud.policy(text, anyelement) IS 'Reads a policy value as the type of its second argument, e.g. pgcloud.policy(''core.rate_limit_burst'', NULL::int). A missing key raises policy_missing; a value of the wrong type raises policy_invalid.';

CREATE FUNCTION pgcloud.policy_changed() RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'pgcloud_relation_changed';
COMMENT ON FUNCTION pgcloud.policy_changed() IS 'Statement trigger on pgcloud.policy_values: every backend forgets the policies pgcloud.policy() kept.';
REVOKE ALL ON FUNCTION pgcloud.policy_changed() FROM PUBLIC;
CREATE TRIGGER policy_values_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pgcloud.policy_values
    FOR EACH STATEMENT EXECUTE FUNCTION pgcloud.policy_changed();
COMMENT ON TRIGGER policy_values_changed ON pgcloud.policy_values IS 'Empties every backend''s cache of policies.';
