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
