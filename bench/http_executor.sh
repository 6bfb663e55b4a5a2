#!/bin/bash
# HTTP intent executor benchmark (issues 3, 16). One command:  bench/http_executor.sh
# (or all benchmarks at once: make bench). Starts a private cluster, a private
# nginx (Debian's nginx-light: the fast loopback target, GET
# /MAAS/api/2.0/version/ answered from its configuration) and the MAAS fake
# (test/fakes/fake_maas.py, for the slow target), then measures, in the same run:
#   1. throughput against nginx, commit -> every intent answered, recorded and
#      its callback committed (the intents' commit timestamp to the last
#      callback's), at core.http_concurrency test = 8, against a
#      baseline: wrk with 8 keep-alive connections on the same URL (what nginx
#      can serve on this machine while nothing else runs);
#   2. the same throughput against the MAAS fake (Python) beside a plain
#      Python client with 8 keep-alive connections;
#   3. a target that answers after 50 ms (the fake): concurrency 16 against
#      concurrency 1 (the speed-up the multi interface buys on a slow target);
# and appends the figures to $BENCH_RESULTS (default bench/RESULTS.md).
# Settings: N (intents, 20000), N_FAKE (2000), N_SLOW (intents at 50 ms, 160);
# CONC_HIGH=<n>: also measure nginx at core.http_concurrency test = n (the
# executor's own ceiling; the comparison with wrk stays at 8).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
N=${N:-20000}
N_FAKE=${N_FAKE:-2000}
N_SLOW=${N_SLOW:-160}
WORK=$(mktemp -d /tmp/pgcloud-bench-http.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$(free_port) PGCLOUD_DB=bench
FAKE_PID=
NGINX_PID=
cleanup() {
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
python3 test/fakes/fake_maas.py --port 0 --state-dir "$WORK/fake" >"$WORK/fake.log" 2>&1 &
FAKE_PID=$!
for _ in $(seq 100); do [ -s "$WORK/fake/port" ] && break; sleep 0.05; done
FAKE_PORT=$(cat "$WORK/fake/port")
command -v nginx >/dev/null || { echo "bench/http_executor.sh needs nginx (Debian: apt-get install nginx-light)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/http_executor.sh needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location = /MAAS/api/2.0/version/ {
            default_type application/json;
            return 200 '{"capabilities": ["networks-management"], "version": "3.4.0", "subversion": "nginx"}';
        }
    }
}
NGINX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
NGINX_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/MAAS/api/2.0/version/" >/dev/null && break; sleep 0.05; done
scripts/cluster.sh start >/dev/null 2>&1
# Commit times of the intents' transaction and of each callback's (run_intents).
echo "track_commit_timestamp = on" >> "$PGCLOUD_DATA/postgresql.conf"
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }
set_target() { psql_b -c "ALTER SYSTEM SET pgcloud.test_http_url = 'http://127.0.0.1:$1'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 0.5; }
set_target "$NGINX_PORT"
psql_b -c "
CREATE SCHEMA benchh;
CREATE TABLE benchh.results (intent_id uuid, status integer);
CREATE FUNCTION benchh.cb(intent_id uuid, status integer, response_headers jsonb, response_body text,
                          context jsonb, final boolean) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
AS \$\$ INSERT INTO benchh.results VALUES (intent_id, status) \$\$;
-- Callbacks are called by the core (pgcloud_svc_core) and run as their owner.
GRANT USAGE ON SCHEMA benchh TO pgcloud_svc_core;" >/dev/null
until [ "$(psql_b -c "SELECT pid IS NOT NULL FROM pgcloud.workers WHERE worker = 'http'")" = t ]; do sleep 0.1; done

set_concurrency() {
    psql_b -c "SELECT pgcloud.set_policy('core.http_concurrency', '{\"stripe\": 8, \"maas\": 4, \"smtp\": 2, \"test\": $1}')" >/dev/null
}
# Writes n intents in one transaction; prints ms from its commit until the
# last callback's commit (both commit timestamps, read from the rows once all
# are done: the polling interval and the polling client's start-ups are not
# counted, and the figure does not depend on n through them).
run_intents() {
    local n=$1 xid
    psql_b -c "TRUNCATE benchh.results; DELETE FROM pgcloud.http_intents;" >/dev/null
    xid=$(psql_b -c "SELECT txid_current() % 4294967296, count(pgcloud.http_request('test', 'GET', '/MAAS/api/2.0/version/',
                   callback => 'benchh.cb(uuid, integer, jsonb, text, jsonb, boolean)')) FROM generate_series(1, $n)")
    xid=${xid%%|*}
    until [ "$(psql_b -c "SELECT count(*) >= $n FROM benchh.results")" = t ]; do sleep 0.1; done
    [ "$(psql_b -c "SELECT count(*) FROM benchh.results WHERE status = 200")" = "$n" ] || { echo "not every request succeeded" >&2; exit 1; }
    psql_b -c "SELECT greatest(1, round(extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - pg_xact_commit_timestamp('$xid'::xid)) * 1000))::bigint
                 FROM benchh.results"
}
fake_control() { printf '%s' "$1" > "$WORK/fake/control.tmp"; mv "$WORK/fake/control.tmp" "$WORK/fake/control.json"; }

# 1. Throughput against nginx, beside wrk's.
set_concurrency 8
run_intents 200 >/dev/null      # warm-up
MS=$(run_intents "$N")
RATE=$(( N * 1000 / MS ))
WRK=$(wrk -t 2 -c 8 -d 5s "http://127.0.0.1:$NGINX_PORT/MAAS/api/2.0/version/" | sed -n 's/^Requests\/sec: *\([0-9]*\).*/\1/p')
echo "nginx: $N intents in $MS ms after commit: $RATE intents/s; wrk, 8 connections: $WRK requests/s"
if [ -n "${CONC_HIGH:-}" ]; then
    set_concurrency "$CONC_HIGH"
    MSH=$(run_intents "$N")
    RATEH=$(( N * 1000 / MSH ))
    set_concurrency 8
    echo "nginx at concurrency $CONC_HIGH: $N intents in $MSH ms after commit: $RATEH intents/s"
fi

# 2. Throughput against the fake's own capacity.
set_target "$FAKE_PORT"
run_intents 200 >/dev/null      # warm-up
MSF=$(run_intents "$N_FAKE")
RATEF=$(( N_FAKE * 1000 / MSF ))
RAW=$(python3 - "$FAKE_PORT" "$N_FAKE" <<'PY'
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
echo "MAAS fake: $N_FAKE intents in $MSF ms after commit: $RATEF intents/s; plain client, 8 connections: $RAW requests/s"

# 3. A slow target: concurrency 16 against 1.
fake_control '{"delay_seconds": 0.05}'
set_concurrency 1
MS1=$(run_intents "$N_SLOW")
set_concurrency 16
MS16=$(run_intents "$N_SLOW")
fake_control ''
echo "50 ms target: $N_SLOW intents in $MS1 ms at concurrency 1, $MS16 ms at concurrency 16"

RATIO=$(python3 -c "print('%.3f' % ($RATE / $WRK))")
RATIOF=$(python3 -c "print('%.2f' % ($RATEF / $RAW))")
SPEEDUP=$(python3 -c "print('%.1f' % ($MS1 / $MS16))")
{
    echo
    echo "## HTTP intent executor ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/http_executor.sh\` (N=$N, N_FAKE=$N_FAKE, N_SLOW=$N_SLOW; targets: nginx (Debian nginx-light) and the MAAS fake, GET version/, plain HTTP on loopback)"
    echo
    echo "| measure | result | baseline (same run) | ratio |"
    echo "|---|---|---|---|"
    echo "| throughput against nginx, commit → answered, recorded, callback committed (concurrency 8) | $RATE intents/s | wrk, 2 threads, 8 keep-alive connections: $WRK requests/s | $RATIO (goal ≥ 0.1 and ≥ 5,000/s) |"
    [ -n "${CONC_HIGH:-}" ] && echo "| the same at concurrency $CONC_HIGH | $RATEH intents/s | (wrk above) | $(python3 -c "print('%.3f' % ($RATEH / $WRK))") |"
    echo "| throughput against the MAAS fake (Python), same path | $RATEF intents/s | Python client, 8 keep-alive connections: $RAW requests/s | $RATIOF |"
    echo "| $N_SLOW requests to a target answering in 50 ms | concurrency 16: $MS16 ms | concurrency 1: $MS1 ms | ${SPEEDUP}x faster |"
} >> "${BENCH_RESULTS:-bench/RESULTS.md}"
echo "appended to ${BENCH_RESULTS:-bench/RESULTS.md}"
