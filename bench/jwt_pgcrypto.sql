-- The baseline of bench/jwt.sh: HS256 verification the pgjwt way (its
-- verify() rewritten here in the same style: SQL + PL/pgSQL + pgcrypto's
-- hmac()), with the checks auth.jwt_verify also makes (signature, alg,
-- nbf/exp, iss, aud), returning the claims as jsonb. pgcrypto has no RSA or ECDSA signature verification,
-- so there is no RS256 or ES256 baseline.
CREATE SCHEMA bench;

CREATE FUNCTION bench.url_decode(data text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    WITH t AS (SELECT translate(data, '-_', '+/') AS trans),
         rem AS (SELECT length(t.trans) % 4 AS remainder FROM t)
    SELECT decode(t.trans || CASE WHEN rem.remainder > 0 THEN repeat('=', 4 - rem.remainder) ELSE '' END, 'base64')
      FROM t, rem
$$;

CREATE FUNCTION bench.url_encode(data bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT translate(encode(data, 'base64'), E'+/=\n', '-_')
$$;

-- pgjwt's own helpers and verify(), in its style: a SQL function that splits
-- with a regular expression, decodes with translate/decode, signs again with
-- pgcrypto's hmac(secret text) and checks nbf/exp through try_cast_double
-- (an exception block) and a tstzrange.
CREATE FUNCTION bench.algorithm_sign(signables text, secret text, algorithm text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    WITH alg AS (
        SELECT CASE WHEN algorithm = 'HS256' THEN 'sha256'
                    WHEN algorithm = 'HS384' THEN 'sha384'
                    WHEN algorithm = 'HS512' THEN 'sha512'
                    ELSE '' END AS id)
    SELECT bench.url_encode(public.hmac(signables, secret, alg.id)) FROM alg
$$;

CREATE FUNCTION bench.try_cast_double(inp text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    BEGIN
        RETURN inp::double precision;
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
END
$$;

CREATE FUNCTION bench.verify(token text, secret text, algorithm text DEFAULT 'HS256')
RETURNS TABLE (header json, payload json, valid boolean)
LANGUAGE sql IMMUTABLE AS $$
    SELECT jwt.header, jwt.payload,
           jwt.signature_ok AND tstzrange(to_timestamp(bench.try_cast_double(jwt.payload ->> 'nbf')),
                                          to_timestamp(bench.try_cast_double(jwt.payload ->> 'exp')))
                                @> CURRENT_TIMESTAMP AS valid
      FROM (SELECT convert_from(bench.url_decode(r[1]), 'utf8')::json AS header,
                   convert_from(bench.url_decode(r[2]), 'utf8')::json AS payload,
                   r[3] = bench.algorithm_sign(r[1] || '.' || r[2], secret, algorithm) AS signature_ok
              FROM regexp_split_to_array(token, '\.') r) jwt
$$;

-- The same checks as auth.jwt_verify on top: alg, iss, aud; claims as jsonb.
CREATE FUNCTION bench.verify_hs256(token text, secret text, iss text, aud text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v record;
BEGIN
    SELECT * INTO v FROM bench.verify(token, secret, 'HS256');
    IF NOT coalesce(v.valid, false) OR v.header ->> 'alg' IS DISTINCT FROM 'HS256' THEN
        RAISE EXCEPTION 'invalid token';
    END IF;
    IF v.payload ->> 'iss' IS DISTINCT FROM iss OR v.payload ->> 'aud' IS DISTINCT FROM aud THEN
        RAISE EXCEPTION 'wrong issuer or audience';
    END IF;
    RETURN v.payload::jsonb;
END
$$;

-- A second, leaner baseline: the same checks hand-written in one PL/pgSQL
-- function (no regular expression, no exception block), to show the lower
-- bound of what PL/pgSQL with pgcrypto can do.
CREATE FUNCTION bench.verify_hs256_lean(token text, secret text, iss text, aud text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[] := string_to_array(token, '.');
    claims jsonb;
BEGIN
    IF cardinality(parts) <> 3
       OR convert_from(bench.url_decode(parts[1]), 'UTF8')::jsonb ->> 'alg' IS DISTINCT FROM 'HS256'
       OR bench.url_encode(public.hmac(convert_to(parts[1] || '.' || parts[2], 'UTF8'), convert_to(secret, 'UTF8'), 'sha256')) <> parts[3] THEN
        RAISE EXCEPTION 'invalid token';
    END IF;
    claims := convert_from(bench.url_decode(parts[2]), 'UTF8')::jsonb;
    IF (claims ->> 'exp')::numeric <= extract(epoch FROM clock_timestamp())
       OR (claims ->> 'nbf')::numeric > extract(epoch FROM clock_timestamp())
       OR claims ->> 'iss' IS DISTINCT FROM iss OR claims ->> 'aud' IS DISTINCT FROM aud THEN
        RAISE EXCEPTION 'invalid claims';
    END IF;
    RETURN claims;
END
$$;

-- Seconds one query takes (best of `runs`).
CREATE FUNCTION bench.best_seconds(q text, runs int) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    best float8;
    dt float8;
    n bigint;
BEGIN
    FOR i IN 1..runs LOOP
        t0 := clock_timestamp();
        EXECUTE q INTO n;
        dt := extract(epoch FROM clock_timestamp() - t0);
        IF best IS NULL OR dt < best THEN
            best := dt;
        END IF;
    END LOOP;
    RETURN best;
END
$$;
