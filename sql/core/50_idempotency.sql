-- Idempotency: one mechanism for every mutating api function. The api
-- function authorizes once, then
--
--   CREATE FUNCTION api.do_thing(a int) RETURNS jsonb ... AS $$
--   BEGIN
--       PERFORM pgcloud.authorize('user');
--       RETURN coalesce(pgcloud.idempotent('svc.do_thing', jsonb_build_object('a', a)),
--                       pgcloud.idempotent_done('svc.do_thing', svc.do_thing_apply(a)));
--   END $$;
--
-- The handler of operation <op> is <op>_apply, called with the typed
-- arguments; the jsonb argument of pgcloud.idempotent() is only the request's
-- fingerprint. pgcloud.idempotent() returns the stored response of a replay
-- (COALESCE then never runs the handler) or NULL; pgcloud.idempotent_done()
-- stores the handler's response under the key and returns it.
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

CREATE FUNCTION pgcloud.idempotent(operation text, fingerprint jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    key text := pgcloud.header('x-idempotency-key');
    hash bytea;
    response jsonb;
    pending jsonb;
BEGIN
    IF operation IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument', 'pgcloud.idempotent() needs an operation');
    END IF;
    IF key IS NULL THEN
        RETURN NULL;
    END IF;
    IF key !~ '^[\x21-\x7e]{1,255}$' THEN
        PERFORM pgcloud.raise('idempotency_key_invalid', NULL);
    END IF;
    hash := sha256(convert_to(coalesce(fingerprint, 'null'::jsonb)::text, 'UTF8'));
    response := pgcloud.idempotency_begin(operation, key, hash);
    IF response IS NOT NULL THEN
        RETURN response;
    END IF;
    -- The call must run: remember its fingerprint for idempotent_done(),
    -- for this transaction only.
    pending := coalesce(nullif(current_setting('pgcloud_idempotency.pending', true), '')::jsonb, '{}'::jsonb);
    PERFORM set_config('pgcloud_idempotency.pending',
                       (pending || jsonb_build_object(operation, encode(hash, 'hex')))::text, true);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION pgcloud.idempotent(text, jsonb) IS 'Begins an idempotent call of operation (whose handler is <operation>_apply, called by the api function with its typed arguments): with an X-Idempotency-Key, the same key and fingerprint return the stored response (the handler must not run); other arguments raise idempotency_key_reused (422); a concurrent call with the key raises idempotency_key_in_use (409). Returns NULL when the handler must run; its response then goes through pgcloud.idempotent_done(operation, response). Without the header it returns NULL.';

CREATE FUNCTION pgcloud.idempotent_done(operation text, response jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pgcloud
AS $$
DECLARE
    key text := pgcloud.header('x-idempotency-key');
    pending jsonb;
    hash text;
BEGIN
    IF key IS NULL THEN
        RETURN response;
    END IF;
    pending := coalesce(nullif(current_setting('pgcloud_idempotency.pending', true), '')::jsonb, '{}'::jsonb);
    hash := pending ->> operation;
    IF hash IS NULL THEN
        PERFORM pgcloud.raise('invalid_argument',
            format('pgcloud.idempotent_done(%s) without a pending pgcloud.idempotent(%s) in this transaction', operation, operation));
    END IF;
    PERFORM set_config('pgcloud_idempotency.pending', (pending - operation)::text, true);
    PERFORM pgcloud.idempotency_finish(operation, key, decode(hash, 'hex'), response);
    RETURN response;
END
$$;
COMMENT ON FUNCTION pgcloud.idempotent_done(text, jsonb) IS 'Ends an idempotent call begun by pgcloud.idempotent(operation, fingerprint) that returned NULL: stores response under the X-Idempotency-Key (if any) and returns it.';

CREATE FUNCTION pgcloud.prune_idempotency_keys() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pgcloud
AS $$
    WITH gone AS (DELETE FROM pgcloud.idempotency_keys WHERE expires_at <= now() RETURNING 1)
    SELECT count(*) FROM gone
$$;
COMMENT ON FUNCTION pgcloud.prune_idempotency_keys() IS 'Deletes expired idempotency keys; returns how many. Run by the job core.prune_idempotency_keys.';
