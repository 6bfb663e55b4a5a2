-- The baseline of bench/jwt.sh: HS256 verification written the pgjwt way,
-- in PL/pgSQL with pgcrypto's hmac(), doing the same checks as
-- auth.jwt_verify (three parts, alg, signature, exp, iss, aud) and returning
-- the claims as jsonb. pgcrypto has no RSA or ECDSA signature verification,
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

CREATE FUNCTION bench.verify_hs256(token text, secret bytea, iss text, aud text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parts text[] := string_to_array(token, '.');
    header jsonb;
    claims jsonb;
BEGIN
    IF cardinality(parts) <> 3 THEN
        RAISE EXCEPTION 'invalid token';
    END IF;
    header := convert_from(bench.url_decode(parts[1]), 'UTF8')::jsonb;
    IF header ->> 'alg' IS DISTINCT FROM 'HS256' THEN
        RAISE EXCEPTION 'unexpected alg';
    END IF;
    IF bench.url_encode(public.hmac(convert_to(parts[1] || '.' || parts[2], 'UTF8'), secret, 'sha256')) <> parts[3] THEN
        RAISE EXCEPTION 'signature does not verify';
    END IF;
    claims := convert_from(bench.url_decode(parts[2]), 'UTF8')::jsonb;
    IF (claims ->> 'exp')::numeric <= extract(epoch FROM clock_timestamp()) THEN
        RAISE EXCEPTION 'token expired';
    END IF;
    IF claims ->> 'iss' IS DISTINCT FROM iss OR claims ->> 'aud' IS DISTINCT FROM aud THEN
        RAISE EXCEPTION 'wrong issuer or audience';
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
