#!/bin/bash
# HTTP intent executor benchmark (issue 3). One command:  bench/http_executor.sh
# Starts a private cluster and the MAAS fake (test/fakes/fake_maas.py; its
# unauthenticated GET /MAAS/api/2.0/version/ is the target "test"), then
# measures, in the same run:
#   1. throughput, commit -> every intent answered, recorded and its callback
#      committed, at core.http_concurrency test = 8, against a baseline: a
#      plain Python client with 8 keep-alive connections fetching the same
#      URL as fast as it can (what the fake itself can serve);
#   2. a target that answers after 50 ms: concurrency 16 against concurrency 1
#      (the speed-up the multi interface buys on a slow target);
# and appends the figures to bench/RESULTS.md. Settings: N (intents, 2000),
# N_SLOW (intents at 50 ms, 160).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
N=${N:-2000}
N_SLOW=${N_SLOW:-160}
WORK=$(mktemp -d /tmp/pgcloud-bench-http.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$(free_port) PGCLOUD_DB=bench
FAKE_PID=
cleanup() {
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
python3 test/fakes/fake_maas.py --port 0 --state-dir "$WORK/fake" >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$WORK/fake/port" ] && break; sleep 0.05; done
FAKE_PORT=$(cat "$WORK/fake/port")
scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }
psql_b -c "ALTER SYSTEM SET pgcloud.test_http_url = 'http://127.0.0.1:$FAKE_PORT'" -c "SELECT pg_reload_conf()" >/dev/null
psql_b -c "
CREATE SCHEMA benchh;
CREATE TABLE benchh.results (intent_id uuid, status integer);
CREATE FUNCTION benchh.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                          context jsonb, final boolean) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS \$\$ INSERT INTO benchh.results VALUES (intent_id, status) \$\$;" >/dev/null
until [ "$(psql_b -c "SELECT pid IS NOT NULL FROM pgcloud.workers WHERE worker = 'http'")" = t ]; do sleep 0.1; done

now_ms() { date +%s%3N; }
set_concurrency() {
    psql_b -c "SELECT pgcloud.set_policy('core.http_concurrency', '{\"stripe\": 8, \"maas\": 4, \"smtp\": 2, \"test\": $1}')" >/dev/null
}
# Writes n intents in one transaction; prints ms from its commit until all are done.
run_intents() {
    local n=$1 t1 t2
    psql_b -c "TRUNCATE benchh.results; DELETE FROM pgcloud.http_intents;" >/dev/null
    psql_b -c "SELECT count(pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                   callback => 'benchh.cb(uuid, integer, jsonb, text, jsonb, boolean)')) FROM generate_series(1, $n)" >/dev/null
    t1=$(now_ms)
    until [ "$(psql_b -c "SELECT count(*) >= $n FROM benchh.results")" = t ]; do sleep 0.02; done
    t2=$(now_ms)
    [ "$(psql_b -c "SELECT count(*) FROM benchh.results WHERE status = 200")" = "$n" ] || { echo "not every request succeeded" >&2; exit 1; }
    echo $((t2 - t1))
}
fake_control() { printf '%s' "$1" > "$WORK/fake/control.tmp"; mv "$WORK/fake/control.tmp" "$WORK/fake/control.json"; }

# 1. Throughput against the fake's own capacity.
set_concurrency 8
run_intents 200 >/dev/null      # warm-up
MS=$(run_intents "$N")
RATE=$(( N * 1000 / MS ))
RAW=$(python3 - "$FAKE_PORT" "$N" <<'PY'
import http.client, sys, threading, time
port, n = int(sys.argv[1]), int(sys.argv[2])
left = [n]; lock = threading.Lock()
def worker():
    c = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            if left[0] == 0: return
            left[0] -= 1
        c.request("GET", "/MAAS/api/2.0/version/"); r = c.getresponse(); r.read()
        assert r.status == 200
t0 = time.time()
ts = [threading.Thread(target=worker) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(int(n / (time.time() - t0)))
PY
)
echo "throughput: $N intents in $MS ms after commit: $RATE intents/s; plain client, 8 connections: $RAW requests/s"

# 2. A slow target: concurrency 16 against 1.
fake_control '{"delay_seconds": 0.05}'
set_concurrency 1
MS1=$(run_intents "$N_SLOW")
set_concurrency 16
MS16=$(run_intents "$N_SLOW")
fake_control ''
echo "50 ms target: $N_SLOW intents in $MS1 ms at concurrency 1, $MS16 ms at concurrency 16"

RATIO=$(python3 -c "print('%.2f' % ($RATE / $RAW))")
SPEEDUP=$(python3 -c "print('%.1f' % ($MS1 / $MS16))")
{
    echo
    echo "## HTTP intent executor (issue 3, $(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/http_executor.sh\` (N=$N, N_SLOW=$N_SLOW; target: the MAAS fake's GET version/, plain HTTP on loopback)"
    echo
    echo "| measure | result | baseline (same run) | ratio |"
    echo "|---|---|---|---|"
    echo "| throughput, commit → answered, recorded, callback committed (concurrency 8) | $RATE intents/s | Python client, 8 keep-alive connections: $RAW requests/s | $RATIO |"
    echo "| $N_SLOW requests to a target answering in 50 ms | concurrency 16: $MS16 ms | concurrency 1: $MS1 ms | ${SPEEDUP}x faster |"
} >> bench/RESULTS.md
echo "appended to bench/RESULTS.md"
