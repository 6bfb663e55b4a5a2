-- pgcloud.set_policy(): the only way policy changes (admin, audited, idempotent).

CREATE FUNCTION pgcloud.set_policy_apply(k text, v jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    old jsonb;
BEGIN
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
    -- One database per service: a service's policies live where it runs (its
    -- jobs and functions read them there); set elsewhere, they would do nothing.
    IF split_part(k, '.', 1) <> 'core' AND NOT pgcloud.installed_here(split_part(k, '.', 1)) THEN
        PERFORM pgcloud.raise('invalid_argument',
            (SELECT format('service "%s" is not installed in this database; set its policies in database %s, where it runs',
                           s.name, s.database_name)
               FROM pgcloud.services s WHERE s.name = split_part(k, '.', 1)));
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
COMMENT ON FUNCTION pgcloud.set_policy_apply(text, jsonb) IS 'Internal to pgcloud.set_policy() (which authorizes): sets policy key k to value v.';

CREATE FUNCTION pgcloud.set_policy(key text, value jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
BEGIN
    PERFORM pgcloud.authorize('admin');
    RETURN coalesce(pgcloud.idempotent('policy.set', jsonb_build_object('key', key, 'value', value)),
                    pgcloud.idempotent_done('policy.set', pgcloud.set_policy_apply(key, value)));
END
$$;
COMMENT ON FUNCTION pgcloud.set_policy(text, jsonb) IS 'Sets a policy value (<service>.<name>) — admin only, audited as policy.set, safe to retry with X-Idempotency-Key; a service''s key only where the service is installed (core keys everywhere). Returns {key, value, previous}.';

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

