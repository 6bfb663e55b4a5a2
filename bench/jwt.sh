#!/bin/bash
# bench/jwt.sh — JWT verification throughput per core, C (auth.jwt_verify)
# against the same HS256 verification in PL/pgSQL with pgcrypto's hmac()
# (pgjwt style, bench/jwt_pgcrypto.sql), measured in the same run on one
# backend; RS256 and ES256 in C (pgcrypto cannot verify them); then
# api.me() under pgbench with a PostgREST-style request (role, claims and
# headers set per transaction, pgcloud.pre_request(), the call).
#
#   bench/jwt.sh                      (PGCLOUD_PG_ROOT=<dir> for a private PostgreSQL copy)
#   N=20000 DURATION=15 bench/jwt.sh  (rows per verification run, pgbench seconds)
#
# Builds and installs the extension, runs a throw-away cluster, and appends
# its results to bench/RESULTS.md.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"

N=${N:-20000}
N_SLOW=${N_SLOW:-$((N / 10))}
DURATION=${DURATION:-15}
USERS=${USERS:-1000}

make -s PG_CONFIG="$PG_CONFIG" >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
else sudo make -s install PG_CONFIG="$PG_CONFIG" >/dev/null; fi

WORK=$(mktemp -d /tmp/pgcloud-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
PORT=$(free_port)
cleanup() {
    as_runner pg_ctl -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

as_runner initdb -D "$WORK/data" -A trust -U "$RUN_USER" --no-instructions -E UTF8 >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
shared_preload_libraries = 'pgcloud'
log_min_messages = warning
CONF
as_runner pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
sql() { as_runner psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d bench -tA "$@"; }
as_runner psql -X -q -h "$WORK" -p "$PORT" -d postgres -c "CREATE DATABASE bench" >/dev/null
sql -c "CREATE EXTENSION pgcloud CASCADE; CREATE EXTENSION pgcrypto;" >/dev/null 2>&1
sql -f bench/jwt_pgcrypto.sql >/dev/null

# Tokens with the claims of a platform access token, valid for an hour.
sql >/dev/null <<SQL
CREATE TABLE bench.keys AS
SELECT alg, CASE WHEN alg = 'HS256' THEN jsonb_build_object('kty', 'oct', 'k', bench.url_encode(convert_to(s, 'UTF8')))
                 ELSE auth.jwk_generate(alg) END AS priv, s AS secret
  FROM unnest(ARRAY['HS256', 'RS256', 'ES256']) alg, bench.url_encode(gen_random_bytes(32)) s;
CREATE TABLE bench.tokens AS
SELECT alg, k.priv - 'd' - 'p' - 'q' - 'dp' - 'dq' - 'qi' AS pub, k.secret,
       auth.jwt_sign(jsonb_build_object('iss', 'https://bench.example', 'aud', 'bench', 'role', 'pgcloud_user',
                     'sub', gen_random_uuid(), 'sid', gen_random_uuid(), 'scopes', '[]'::jsonb,
                     'iat', extract(epoch FROM now())::bigint, 'nbf', extract(epoch FROM now())::bigint,
                     'exp', extract(epoch FROM now())::bigint + 3600, 'jti', gen_random_uuid()), k.priv) AS token
  FROM bench.keys k;
CREATE TABLE bench.rows_fast AS SELECT alg, token FROM bench.tokens, generate_series(1, $N);
CREATE TABLE bench.rows_slow AS SELECT alg, token FROM bench.tokens, generate_series(1, $N_SLOW);
VACUUM ANALYZE bench.rows_fast; VACUUM ANALYZE bench.rows_slow;
SQL

OPTS='{"iss": "https://bench.example", "aud": "bench"}'
c_rate() {   # alg rows-table rows
    local alg=$1 table=$2 n=$3 keys secs
    keys=$(sql -c "SELECT pub FROM bench.tokens WHERE alg = '$alg'")
    secs=$(sql -c "SELECT bench.best_seconds(\$q\$SELECT count(auth.jwt_verify(token, '$keys', '$OPTS')) FROM bench.$table WHERE alg = '$alg'\$q\$, 3)")
    python3 -c "print(round($n / $secs))"
}
pl_rate() {   # function
    local secret secs
    secret=$(sql -c "SELECT secret FROM bench.tokens WHERE alg = 'HS256'")
    secs=$(sql -c "SELECT bench.best_seconds(\$q\$SELECT count(bench.$1(token, '$secret', 'https://bench.example', 'bench')) FROM bench.rows_slow WHERE alg = 'HS256'\$q\$, 3)")
    python3 -c "print(round($N_SLOW / $secs))"
}
# Both verifiers accept the same token and return the same claims.
same=$(sql -c "SELECT auth.jwt_verify(t.token, t.pub, '$OPTS') = bench.verify_hs256(t.token, t.secret, 'https://bench.example', 'bench')
                   AND auth.jwt_verify(t.token, t.pub, '$OPTS') = bench.verify_hs256_lean(t.token, t.secret, 'https://bench.example', 'bench')
                  FROM bench.tokens t WHERE alg = 'HS256'")
[ "$same" = t ] || { echo "the two HS256 verifiers disagree" >&2; exit 1; }

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
HS_C=$(c_rate HS256 rows_fast "$N")
HS_PL=$(pl_rate verify_hs256)
HS_LEAN=$(pl_rate verify_hs256_lean)
RS_C=$(c_rate RS256 rows_slow "$N_SLOW")
ES_C=$(c_rate ES256 rows_slow "$N_SLOW")
RATIO=$(python3 -c "print(round($HS_C / $HS_PL, 1))")
RATIO_LEAN=$(python3 -c "print(round($HS_C / $HS_LEAN, 1))")

# api.me() as PostgREST calls it: one statement sets role, claims and headers
# for the transaction, then the pre-request hook, then the function.
sql >/dev/null <<SQL
SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
CREATE TABLE bench.me_claims AS
SELECT i, auth.verify_access_token(api.dev_login(format('bench-user-%s@example.com', i)) ->> 'access_token')::text AS claims
  FROM generate_series(1, $USERS) i;
ALTER TABLE bench.me_claims ADD PRIMARY KEY (i);
GRANT USAGE ON SCHEMA bench TO pgcloud_authenticator;
GRANT SELECT ON bench.me_claims TO pgcloud_authenticator;
SQL
cat > "$WORK/me.sql" <<'PGB'
\set uid random(1, :users)
BEGIN;
SELECT set_config('role', 'pgcloud_user', true), set_config('request.jwt.claims', c.claims, true),
       set_config('request.headers', '{"accept": "application/json", "x-forwarded-for": "203.0.113.7", "user-agent": "pgbench"}', true),
       set_config('request.method', 'POST', true), set_config('request.path', '/rpc/me', true)
  FROM bench.me_claims c WHERE c.i = :uid;
SELECT pgcloud.pre_request();
SELECT api.me();
COMMIT;
PGB
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK/me.sql"
pgb() {
    as_runner pgbench -n -M prepared -h "$WORK" -p "$PORT" -U pgcloud_authenticator -D users="$USERS" \
        -f "$WORK/me.sql" -c "$1" -j "$1" -T "$DURATION" bench 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' | cut -d. -f1
}
sql -c "SELECT pgcloud.rate_limit_reset()" >/dev/null
ME1=$(pgb 1)
sql -c "SELECT pgcloud.rate_limit_reset()" >/dev/null
ME2=$(pgb 2)
FAILS=$(sql -c "SELECT coalesce(sum(denied), 0) FROM pgcloud.rate_limit_status()")

CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
{
    echo
    echo "## JWT verification and api.me() ($(date -u +%Y-%m-%d), $(nproc) cores, ${CPU:-unknown CPU})"
    echo
    echo "Command: \`bench/jwt.sh\` (N=$N, N_SLOW=$N_SLOW, DURATION=$DURATION, USERS=$USERS)."
    echo "One backend verifies the same token N times in one query (best of 3);"
    echo "every verifier checks the signature, alg, nbf/exp, iss and aud and returns the claims as jsonb."
    echo "pgjwt-style = pgjwt's verify() (regexp split, pgcrypto hmac(), try_cast_double, tstzrange) plus the alg/iss/aud checks."
    echo "Load average at the start: $LOAD (the machine may be shared with other work: compare figures of one run)."
    echo
    echo "| verification (one core) | tokens/s |"
    echo "|---|---|"
    echo "| HS256, C (\`auth.jwt_verify\`) | $HS_C |"
    echo "| HS256, pgjwt-style SQL/PL/pgSQL + pgcrypto \`hmac()\` | $HS_PL |"
    echo "| **ratio C / pgjwt-style** | **${RATIO}x** |"
    echo "| HS256, lean hand-written PL/pgSQL + pgcrypto \`hmac()\` (no regexp, no exception block) | $HS_LEAN |"
    echo "| ratio C / lean PL/pgSQL | ${RATIO_LEAN}x |"
    echo "| RS256 (2048-bit), C | $RS_C |"
    echo "| ES256 (P-256), C | $ES_C |"
    echo
    echo "pgcrypto has no RSA or ECDSA signature verification, so RS256 and ES256 have no PL/pgSQL baseline."
    echo
    echo "| \`api.me()\` under pgbench (set role + claims + headers, \`pgcloud.pre_request()\`, \`api.me()\`; $USERS users) | transactions/s |"
    echo "|---|---|"
    echo "| 1 client | $ME1 |"
    echo "| 2 clients | $ME2 |"
    echo
    echo "Rate-limiter refusals during the run: $FAILS."
} | tee -a "${BENCH_RESULTS:-bench/RESULTS.md}"
