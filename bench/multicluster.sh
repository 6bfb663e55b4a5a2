#!/bin/bash
# bench/multicluster.sh: commit-to-handler latency (p50/p99) of user.created
# from the auth database to billing's handler, at a target rate
# (BENCH_RATE events/s, default 1000, for BENCH_SECONDS, default 10), and the
# relay's throughput for a burst of BENCH_BURST events (default 20000):
#   shape (c)  auth on cluster identity -> relay -> 3-node JetStream (R3) ->
#              consumer on cluster money -> billing.on_<event>
#   shape (a)  one database, embedded relay -> billing.on_<event>
# in the same run. Latency = the inbox row's processed_at (the handler's
# transaction) - the outbox row's created_at (the emitting transaction);
# throughput = events / (last published_at - first created_at).
# Appends its section to $BENCH_RESULTS (default bench/RESULTS.md): the
# command, the machine's load, the figures. Not part of the test suite, nor
# of make bench (bench/all.sh keeps its section).
# Needs pgcloud installed (make install; PGCLOUD_PG_ROOT honoured).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
RATE=${BENCH_RATE:-1000}
SECONDS_=${BENCH_SECONDS:-10}
BURST=${BENCH_BURST:-20000}
WORK=${BENCH_DIR:-/var/tmp/bench-multicluster}
export PGCLOUD_MULTI_DIR=$WORK/multi PGCLOUD_MULTI_PORT_SHIFT=${BENCH_PORT_SHIFT:-300}
MC="$REPO/scripts/multicluster.sh"

single_data=$WORK/single
single_port=$(free_port)
single() { as_runner psql -X -q -tA -v ON_ERROR_STOP=1 -h "$single_data/run" -p "$single_port" -d pgcloud "$@"; }
multi() { local svc=$1; shift; "$MC" psql "$svc" -X -q -tA -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
    "$MC" down >/dev/null 2>&1 || true
    as_runner pg_ctl -D "$single_data/db" -m fast -w stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

mkdir -p "$WORK"
rm -rf "$single_data" "$PGCLOUD_MULTI_DIR"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"

# Shape (a): one cluster, one database, embedded relay.
as_runner mkdir -p "$single_data/run"
as_runner initdb -D "$single_data/db" -A trust -U "$RUN_USER" --no-instructions >/dev/null
cat >> "$single_data/db/postgresql.conf" <<CONF
port = $single_port
listen_addresses = ''
unix_socket_directories = '$single_data/run'
shared_preload_libraries = 'pgcloud'
pgcloud.databases = 'pgcloud'
max_worker_processes = 16
CONF
# The settings shape (a) generates for its cluster (the workers' slots).
grep -E '^max_(worker_processes|parallel_workers|connections) ' "$REPO/deploy/single/dev/postgresql.conf" >> "$single_data/db/postgresql.conf"
as_runner pg_ctl -D "$single_data/db" -l "$single_data/server.log" -w start >/dev/null
single -d postgres -c 'CREATE DATABASE pgcloud' >/dev/null
single -c 'CREATE EXTENSION pgcloud CASCADE' >/dev/null

# Shape (c): the three clusters and the NATS cluster.
"$MC" up >/dev/null

# Emits $RATE user.created per second for $SECONDS_ seconds, in 10 ms ticks
# (one transaction per tick), with a run tag in the e-mail addresses.
paced_sql() {
    local tag=$1 per_tick=$(( RATE / 100 )) ticks=$(( SECONDS_ * 100 ))
    cat <<SQL
DO \$\$
DECLARE t0 timestamptz := clock_timestamp();
BEGIN
    FOR k IN 1..$ticks LOOP
        PERFORM pgcloud.emit('user.created', 'user', u::text, jsonb_build_object('user_id', u, 'email', '$tag-' || u || '@bench.invalid'))
           FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $per_tick)) s;
        COMMIT;
        PERFORM pg_sleep(greatest(0, extract(epoch FROM t0 + k * interval '10 ms' - clock_timestamp())));
    END LOOP;
END \$\$;
SQL
}
burst_sql() {
    echo "SELECT count(pgcloud.emit('user.created', 'user', u::text, jsonb_build_object('user_id', u, 'email', '$1-' || u || '@bench.invalid')))
            FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, $BURST)) s;"
}
# p50/p99 in ms of the inbox-minus-outbox delay of the tagged events: the
# outbox times come in as "event_id|created_at" lines on stdin.
latency_sql() {
    echo "CREATE TEMP TABLE sent (event_id uuid, created_at timestamptz);
          COPY sent FROM STDIN WITH (FORMAT text, DELIMITER '|');"
}

run_shape() {
    local shape=$1 n=$(( RATE * SECONDS_ ))
    local emit_sql; emit_sql=$(paced_sql "lat-$shape")
    if [ "$shape" = a ]; then single -c "$emit_sql" >/dev/null || return 1; else multi auth -c "$emit_sql" >/dev/null || return 1; fi
    # Wait until billing applied them all.
    local q="SELECT count(*) FROM pgcloud.inbox WHERE subscriber = 'billing' AND event_type = 'user.created'"
    for _ in $(seq 1 600); do
        local got; if [ "$shape" = a ]; then got=$(single -c "$q" || echo 0); else got=$(multi billing -c "$q" || echo 0); fi
        [ "${got:-0}" -ge "$n" ] && break
        sleep 0.5
    done
    local out="SELECT event_id, created_at FROM pgcloud.outbox WHERE event_type = 'user.created' AND payload ->> 'email' LIKE 'lat-$shape-%'"
    local stats="SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' ||
                        round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' || count(*)
                   FROM (SELECT extract(epoch FROM i.processed_at - s.created_at) * 1000 AS ms
                           FROM sent s JOIN pgcloud.inbox i ON i.event_id = s.event_id AND i.subscriber = 'billing') x"
    if [ "$shape" = a ]; then
        single -c "$out" -F '|' | single -c "$(latency_sql)" -c "$stats"
    else
        multi auth -c "$out" -F '|' | multi billing -c "$(latency_sql)" -c "$stats"
    fi
}
run_burst() {
    local shape=$1
    local q="SELECT round($BURST / extract(epoch FROM max(published_at) - min(created_at))::numeric)
               FROM pgcloud.outbox WHERE payload ->> 'email' LIKE 'burst-$shape-%' HAVING count(*) FILTER (WHERE published_at IS NULL) = 0"
    if [ "$shape" = a ]; then single -c "$(burst_sql "burst-$shape")" >/dev/null || { echo failed; return; }
    else multi auth -c "$(burst_sql "burst-$shape")" >/dev/null || { echo failed; return; }; fi
    for _ in $(seq 1 600); do
        local got; if [ "$shape" = a ]; then got=$(single -c "$q" || true); else got=$(multi auth -c "$q" || true); fi
        [ -n "$got" ] && { echo "$got"; return; }
        sleep 0.5
    done
    echo "timeout"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
# A phase that fails (a cluster crash-restarting under it) leaves "failed" in
# its cells; the section still records what was measured, and the crashes.
measure() { local r; if r=$(run_shape "$1") && [ -n "$r" ]; then echo "$r"; else echo "failed failed 0"; fi; }
read -r a50 a99 an <<<"$(measure a)"; echo "shape (a): p50 $a50 ms, p99 $a99 ms, $an events" >&2
read -r c50 c99 cn <<<"$(measure c)"; echo "shape (c): p50 $c50 ms, p99 $c99 ms, $cn events" >&2
a_tp=$(run_burst a); echo "shape (a): relay $a_tp events/s" >&2
c_tp=$(run_burst c); echo "shape (c): relay $c_tp events/s" >&2

# A consumer that crashed meanwhile (the cluster restarts: the figures include the recovery).
crashes=$(cat "$PGCLOUD_MULTI_DIR"/pg-*/server.log "$single_data/server.log" 2>/dev/null | grep -c 'terminated by signal' || true)
crash_lines=$(grep -H 'terminated by signal' "$PGCLOUD_MULTI_DIR"/pg-*/server.log "$single_data/server.log" 2>/dev/null \
    | sed "s|^$PGCLOUD_MULTI_DIR/||; s|^$single_data/|single/|; s|/server.log:| |" | head -n 5 || true)
{
    echo
    echo "## Multi-cluster events: commit-to-handler latency and relay throughput, shapes (a) and (c) ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/multicluster.sh\` (BENCH_RATE=$RATE, BENCH_SECONDS=$SECONDS_, BENCH_BURST=$BURST), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - T0 )) s."
    echo "Load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)."
    echo "Workers crashed during the run (server logs, 'terminated by signal'): $crashes."
    [ -n "$crash_lines" ] && printf '%s\n' "$crash_lines" | sed 's/^/    /'
    echo
    echo
    echo "user.created emitted in auth's database, latency to billing's handler (inbox processed_at - outbox created_at;"
    echo "user.created has 6 subscribers, on all three clusters in shape (c)), paced at $RATE events/s in 10 ms ticks"
    echo "for $SECONDS_ s; then a burst of $BURST events in one transaction: relay throughput = events / (last published_at -"
    echo "first created_at), in (c) to the R3 stream, in (a) to the handlers (embedded relay). Shape (c): three PostgreSQL"
    echo "clusters and a 3-node JetStream cluster (TLS) on this one machine, as scripts/multicluster.sh brings them up."
    echo
    echo "| shape | p50 ms | p99 ms | events | relay throughput (events/s) |"
    echo "|---|---|---|---|---|"
    echo "| (a) one database, embedded relay | $a50 | $a99 | $an | $a_tp (to the handler) |"
    echo "| (c) 3 clusters, 3-node JetStream R3 | $c50 | $c99 | $cn | $c_tp (to the R3 stream) |"
} | tee -a "${BENCH_RESULTS:-$REPO/bench/RESULTS.md}"
