#!/bin/bash
# Event pipeline benchmark (issues 3, 16). One command:  bench/events.sh (all: make bench)
# Starts a private cluster and a nats-server (JetStream, file storage), then
# measures, in the same run:
#   1. relay throughput, embedded mode (commit -> subscriber's handler applied)
#   2. commit-to-handler latency p50/p99 at a steady 1,000 events/s (embedded)
#      and at NATS_RATE_LAT (200) events/s in NATS mode, where every service
#      installed in the database has its durable consumer
#   3. relay throughput, NATS mode (commit -> JetStream ack), alone and with
#      every service consuming, against raw asynchronous JetStream publishing
#      of the same number of messages by a small nats.c program
#      (test/tools/natstool.c) to the same server
#   4. the cost of pgcloud.emit() in a one-row-insert transaction, beside
#      the floor: the same event row written by a plain INSERT into a copy
#      of the outbox
# and appends the figures to $BENCH_RESULTS (default bench/RESULTS.md).
# Settings: N (events, 20000), SECONDS_PER_RUN (10), NATS_RATE_LAT (200),
# RELAY_N (events per relay drain, 50000), RELAY_DRAINS (3), EMIT_ROUNDS (5),
# EMIT_ROUND_SECONDS (2).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
N=${N:-20000}
DUR=${SECONDS_PER_RUN:-10}
NATS_RATE_LAT=${NATS_RATE_LAT:-200}
WORK=$(mktemp -d /tmp/pgcloud-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
PORT=$(free_port)
NPORT=$(free_port)
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$PORT PGCLOUD_DB=bench
NATS_PID=
cleanup() {
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
gcc -O2 -o "$WORK/natstool" test/tools/natstool.c -lnats
nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
scripts/cluster.sh start >/dev/null 2>&1
cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
track_commit_timestamp = on
max_worker_processes = 16
CONF
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }
sleep 1

psql_b -c "
INSERT INTO pgcloud.services (name, schema_name, database_name, layer, route_prefix, publishes, subscribes, depends_on)
VALUES ('benchsvc', 'benchsvc', 'bench', 'domain', '/benchsvc', '{}', '{bench.*}', '{}');
INSERT INTO pgcloud.subscriptions VALUES ('benchsvc', 'bench.*');
CREATE SCHEMA benchsvc;
CREATE TABLE benchsvc.effects (event_id uuid, applied_at timestamptz DEFAULT clock_timestamp(), latency_ms float8);
-- Records commit-to-handler latency: the emitting transaction's commit time
-- (track_commit_timestamp) to the moment the handler runs.
-- Handlers are called by the core (pgcloud_svc_core) and run as their owner (SECURITY DEFINER).
CREATE FUNCTION benchsvc.on_bench_tick(event pgcloud.event_envelope) RETURNS void LANGUAGE sql SECURITY DEFINER AS
\$\$ INSERT INTO benchsvc.effects (event_id, latency_ms)
    SELECT o.event_id, extract(epoch FROM clock_timestamp() - pg_xact_commit_timestamp(o.xmin)) * 1000
      FROM pgcloud.outbox o WHERE o.event_id = (event).event_id \$\$;
GRANT USAGE ON SCHEMA benchsvc TO pgcloud_svc_core;
CREATE TABLE bench_plain (id bigserial, v text);
CREATE INDEX bench_outbox_event_id ON pgcloud.outbox (event_id);  -- for the latency handler only
SELECT pgcloud.wake_workers();" >/dev/null

now_ms() { date +%s%3N; }
wait_sql() {  # wait until query returns "t"
    until [ "$(psql_b -c "$1")" = t ]; do sleep 0.05; done
}
emit_sql="SELECT count(pgcloud.emit('bench.tick', 'thing', 'a' || (i % 100), jsonb_build_object('i', i, 'pad', repeat('x', 100)))) FROM generate_series(1, $N) i"

# 1. Embedded throughput.
psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
t0=$(now_ms); psql_b -c "$emit_sql" >/dev/null; t1=$(now_ms)
wait_sql "SELECT count(*) >= $N FROM benchsvc.effects"; t2=$(now_ms)
EMB_RATE=$(( N * 1000 / (t2 - t1) ))
echo "embedded: emitted $N in $((t1 - t0)) ms; delivered in $((t2 - t1)) ms after commit: $EMB_RATE events/s"

# 2. Latency at a steady 1,000 events/s (embedded).
psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
echo "SELECT pgcloud.emit('bench.tick', 'thing', 'lat', '{}');" > "$WORK/emit1.sql"
chmod a+r "$WORK"/*.sql
as_runner pgbench -n -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$WORK/emit1.sql" -c 8 -j 2 -R 1000 -T "$DUR" bench > "$WORK/lat.out" 2>&1
sleep 1
LAT=$(psql_b -F ' ' -c "
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 2),
       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 2), count(*)
  FROM (SELECT latency_ms AS ms FROM benchsvc.effects) x")
read -r P50 P99 CNT <<<"$LAT"
echo "latency at 1000 events/s for ${DUR}s ($CNT events): p50 ${P50} ms, p99 ${P99} ms"

# NATS mode.
psql_b -c "ALTER SYSTEM SET pgcloud.nats_url = 'nats://127.0.0.1:$NPORT'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2
# 2, continued. Commit-to-handler latency in NATS mode (relay -> JetStream -> consumer of
# every subscribing service -> handler), at a steady NATS_RATE_LAT events/s.
psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
psql_b -c "SELECT pgcloud.emit('bench.tick', 'thing', 'warm', '{}')" >/dev/null
wait_sql "SELECT count(*) >= 1 FROM benchsvc.effects"
psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
echo "SELECT pgcloud.emit('bench.tick', 'thing', 'lat', '{}');" > "$WORK/emit1.sql"
chmod a+r "$WORK"/*.sql
as_runner pgbench -n -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$WORK/emit1.sql" -c 4 -j 2 -R "$NATS_RATE_LAT" -T "$DUR" bench > "$WORK/natslat.out" 2>&1
NSENT=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$WORK/natslat.out")
for _ in $(seq 600); do [ "$(psql_b -c "SELECT count(*) >= $NSENT FROM benchsvc.effects")" = t ] && break; sleep 0.1; done
NSUBS=$(psql_b -c "SELECT count(*) FROM pgcloud.nats_subscribers()")
read -r NP50 NP99 NCNT <<<"$(psql_b -F ' ' -c "
SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms))::numeric, 2),
       round((percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms))::numeric, 2), count(*)
  FROM benchsvc.effects")"
echo "NATS latency at $NATS_RATE_LAT events/s for ${DUR}s ($NCNT of $NSENT events, $NSUBS durable consumers): p50 ${NP50} ms, p99 ${NP99} ms"
# 3. Relay throughput: RELAY_N events emitted in one transaction, from its
# commit (its commit timestamp) to the last event's mark (published_at, set
# once JetStream acknowledged it); the median of RELAY_DRAINS drains. Read
# from the rows, not by polling: no polling interval or client start-up is
# counted. The latency handler's index on the outbox (a bench-only index,
# not the product's) is dropped and the handler records the event alone.
#   - "every service consuming": the database's 13 durables are read and
#     acked by the consumer worker on the same 2 cores meanwhile;
#   - "relay alone": the consumer worker is held for the drains: a session
#     keeps pgcloud.inbox locked (ACCESS EXCLUSIVE), so the consumer waits
#     for that lock at the first event it applies and reads no further (at
#     most one pull batch per durable is delivered meanwhile): the durables
#     stay and JetStream stores for them, nobody reads, like the raw
#     baseline's stream, which has no consumer. (A SIGSTOP, as this script
#     used to pause it, can stop the worker holding a lightweight lock or a
#     spinlock, and every backend then hangs on it: it happened.)
# The raw baseline: natstool publishes RELAY_N messages of the same size
# asynchronously to a stream of its own on the same server; the median of
# RELAY_DRAINS runs, alternating with the relay's drains.
psql_b -c "DROP INDEX pgcloud.bench_outbox_event_id" -c "
CREATE OR REPLACE FUNCTION benchsvc.on_bench_tick(event pgcloud.event_envelope) RETURNS void LANGUAGE sql SECURITY DEFINER AS
\$\$ INSERT INTO benchsvc.effects (event_id) VALUES ((event).event_id) \$\$" >/dev/null
RELAY_N=${RELAY_N:-50000}
RELAY_DRAINS=${RELAY_DRAINS:-3}
relay_emit_sql="SELECT count(pgcloud.emit('bench.tick', 'thing', 'a' || (i % 100), jsonb_build_object('i', i, 'pad', repeat('x', 100)))) FROM generate_series(1, $RELAY_N) i"
drain_rate() {  # events/s from the emitting commit to the last mark
    local xid
    xid=$(psql_b -c "SELECT txid_current() % 4294967296, ($relay_emit_sql)"); xid=${xid%%|*}
    wait_sql "SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL"
    psql_b -c "SELECT round($RELAY_N / extract(epoch FROM max(published_at) - pg_xact_commit_timestamp('$xid'::xid)))
                 FROM pgcloud.outbox WHERE id > (SELECT max(id) - $RELAY_N FROM pgcloud.outbox)"
}
median() { python3 -c "import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))" "$@"; }
psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
psql_b -c "$relay_emit_sql" >/dev/null   # warm-up
wait_sql "SELECT count(*) >= $RELAY_N FROM benchsvc.effects"
SIZE=$(psql_b -c "SELECT avg(length(jsonb_build_object('event_id', event_id, 'event_type', event_type, 'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'payload', payload, 'headers', headers, 'source', source, 'created_at', created_at)::text))::int FROM pgcloud.outbox ORDER BY 1 LIMIT 1")
"$WORK/natstool" stream "nats://127.0.0.1:$NPORT" RAWBENCH 'raw.>' >/dev/null
[ "$(psql_b -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgcloud consumer'")" = 1 ] \
    || { echo "no consumer worker" >&2; exit 1; }
hold_consumer() {   # a session holds the inbox locked until release_consumer
    psql_b -c "BEGIN" -c "LOCK pgcloud.inbox IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(3600) /* bench: hold the consumer */" \
        >/dev/null 2>&1 &
    HOLD_PID=$!
    wait_sql "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.relation = 'pgcloud.inbox'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted
                 AND a.query LIKE '%bench: hold the consumer%'"
}
release_consumer() {
    psql_b -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%bench: hold the consumer%' AND pid <> pg_backend_pid()" >/dev/null
    wait "$HOLD_PID" || true   # its statement was cancelled
}
ALL_RATES="" ALONE_RATES="" RAW_RATES=""
for _ in $(seq "$RELAY_DRAINS"); do
    psql_b -c "TRUNCATE benchsvc.effects" >/dev/null
    ALL_RATES="$ALL_RATES $(drain_rate)"
    RAW_RATES="$RAW_RATES $("$WORK/natstool" publish "nats://127.0.0.1:$NPORT" raw.bench "$RELAY_N" "$SIZE")"
    hold_consumer
    ALONE_RATES="$ALONE_RATES $(drain_rate)"
    release_consumer
    wait_sql "SELECT count(*) >= 2 * $RELAY_N FROM benchsvc.effects"   # the consumers caught up
done
NATS_RATE=$(median $ALL_RATES) ALONE_RATE=$(median $ALONE_RATES) RAW_RATE=$(median $RAW_RATES)
RATIO=$(python3 -c "print(f'{$ALONE_RATE / $RAW_RATE:.2f}')")
RATIO_ALL=$(python3 -c "print(f'{$NATS_RATE / $RAW_RATE:.2f}')")
echo "NATS, $RELAY_N events per drain, medians of $RELAY_DRAINS: relay alone $ALONE_RATE events/s (runs:$ALONE_RATES), every service consuming $NATS_RATE events/s (runs:$ALL_RATES); raw nats.c publish of $RELAY_N x $SIZE B: $RAW_RATE msgs/s (runs:$RAW_RATES); ratio alone $RATIO, consuming $RATIO_ALL"
psql_b -c "ALTER SYSTEM SET pgcloud.nats_url = ''" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2

# 4. emit() cost: a one-row insert transaction with and without it.
# Both are one statement (one round trip, one transaction): the difference is
# emit() alone. Both are sent as prepared statements (-M prepared), as an
# application or PostgREST's pool sends them: sent as text, the emitting
# statement's parse and plan (a CTE and a function call, about 18 us) were
# counted as emit()'s cost. The outbox is as installed (the latency
# handler's bench-only index was dropped before 3).
echo "INSERT INTO bench_plain (v) VALUES ('x');" > "$WORK/plain.sql"
echo "WITH e AS (SELECT pgcloud.emit('bench.tick', 'thing', 'cost', '{\"v\": \"x\"}') AS id) INSERT INTO bench_plain (v) SELECT 'x' FROM e;" > "$WORK/emit.sql"
# The event about the row the transaction inserts (a new row nobody else can
# see, so its insert orders the aggregate's emitters: aggregate_locked, no
# advisory lock), the commonest shape in the services (audit.recorded,
# allocation.requested).
echo "WITH r AS (INSERT INTO bench_plain (v) VALUES ('x') RETURNING id) SELECT pgcloud.emit('bench.tick', 'bench_plain', r.id::text, '{\"v\": \"x\"}', true) IS NOT NULL FROM r;" > "$WORK/emit_row.sql"
# The floor: the same event row written by a plain INSERT into a copy of the
# outbox (its columns, defaults, indexes and check; the headers emit() writes
# here), in the same statement shape: what writing the row itself costs, so
# what emit() adds is its gap to this.
psql_b -c "CREATE TABLE bench_outbox_copy (LIKE pgcloud.outbox INCLUDING ALL)" >/dev/null
echo "WITH e AS (INSERT INTO bench_outbox_copy (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source) VALUES (gen_random_uuid(), 'bench.tick', 'thing', 'cost', '{\"v\": \"x\"}', jsonb_build_object('source', current_user, 'actor_role', current_user, 'correlation_id', gen_random_uuid()::text), current_user) RETURNING id) INSERT INTO bench_plain (v) SELECT 'x' FROM e;" > "$WORK/floor.sql"
chmod a+r "$WORK"/*.sql
# Each round runs plain, emit, emit for the row and the floor for EMIT_ROUND_SECONDS
# each, one after the other; a cost is the median over EMIT_ROUNDS rounds of
# the round's own ratio (neighbouring runs share the machine's state: a
# shared, noisy machine moves all three of a round alike), the tps the
# rounds' means.
EMIT_ROUNDS=${EMIT_ROUNDS:-5}
EMIT_ROUND_SECONDS=${EMIT_ROUND_SECONDS:-2}
tps1() { as_runner pgbench -n -M prepared -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$1" -c 1 -j 1 -T "$EMIT_ROUND_SECONDS" bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
tps_pair() {  # EMIT_ROUNDS rounds of plain, emit, emit for the row, floor: TPS_PLAIN, TPS_EMIT, TPS_ROW, TPS_FLOOR (means), COST, COST_ROW, COST_FLOOR (median ratios)
    local rounds=""
    for _ in $(seq "$EMIT_ROUNDS"); do
        rounds="$rounds $(tps1 "$WORK/plain.sql"),$(tps1 "$WORK/emit.sql"),$(tps1 "$WORK/emit_row.sql"),$(tps1 "$WORK/floor.sql")"
    done
    read -r TPS_PLAIN TPS_EMIT TPS_ROW TPS_FLOOR COST COST_ROW COST_FLOOR <<<"$(python3 - $rounds <<'PY'
import statistics, sys
r = [[float(x) for x in a.split(",")] for a in sys.argv[1:]]
mean = lambda i: round(statistics.mean(x[i] for x in r))
cost = lambda i: statistics.median((1 - x[i] / x[0]) * 100 for x in r)
print(mean(0), mean(1), mean(2), mean(3), f"{cost(1):.1f}", f"{cost(2):.1f}", f"{cost(3):.1f}")
PY
)"
}
tps_pair
TPS_PLAIN1=$TPS_PLAIN TPS_EMIT1=$TPS_EMIT TPS_ROW1=$TPS_ROW COST1=$COST COST_ROW1=$COST_ROW
echo "emit cost, relay delivering meanwhile: plain insert $TPS_PLAIN1 tps, insert + emit $TPS_EMIT1 tps: ${COST1}% slower; insert + emit for the row (aggregate_locked) $TPS_ROW1 tps: ${COST_ROW1}% slower"
# The same with the relay stopped: the cost of emit() in the transaction alone.
psql_b -c "ALTER SYSTEM SET pgcloud.databases = ''" -c "SELECT pg_reload_conf()" >/dev/null
sleep 2
tps_pair
TPS_PLAIN2=$TPS_PLAIN TPS_EMIT2=$TPS_EMIT TPS_ROW2=$TPS_ROW TPS_FLOOR2=$TPS_FLOOR COST2=$COST COST_ROW2=$COST_ROW COST_FLOOR2=$COST_FLOOR
echo "emit cost, relay stopped: plain insert $TPS_PLAIN2 tps, insert + emit $TPS_EMIT2 tps: ${COST2}% slower; insert + emit for the row (aggregate_locked) $TPS_ROW2 tps: ${COST_ROW2}% slower; floor (the same row by a plain INSERT into a copy of the outbox) $TPS_FLOOR2 tps: ${COST_FLOOR2}% slower"

{
    echo
    echo "## Events: relay, latency, emit cost ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/events.sh\` (N=$N, ${DUR}s runs; emit cost: median of $EMIT_ROUNDS rounds of ${EMIT_ROUND_SECONDS}s runs)"
    echo
    echo "| measure | result | baseline (same run) | ratio / goal |"
    echo "|---|---|---|---|"
    echo "| relay throughput, embedded (commit → handler applied) | $EMB_RATE events/s | — | — |"
    echo "| relay → JetStream (file storage), relay alone: commit → last event marked, $RELAY_N events, median of $RELAY_DRAINS | $ALONE_RATE events/s | raw nats.c async publish: $RAW_RATE msgs/s ($SIZE B) | $RATIO (goal ≥ 0.5) |"
    echo "| the same, every service of the database consuming meanwhile ($NSUBS durables, same 2 cores) | $NATS_RATE events/s | raw: $RAW_RATE msgs/s | $RATIO_ALL |"
    echo "| commit-to-handler latency at 1,000 events/s, embedded | p50 $P50 ms, p99 $P99 ms ($CNT events) | — | goal p50 < 5 ms |"
    echo "| commit-to-handler latency at $NATS_RATE_LAT events/s, NATS mode ($NSUBS durable consumers, one per subscribing service) | p50 $NP50 ms, p99 $NP99 ms ($NCNT of $NSENT events) | embedded above: p50 $P50 ms, p99 $P99 ms | goal p50 < 5 ms, p99 < 20 ms |"
    echo "| one-row insert transaction (prepared), relay stopped | + emit() of another aggregate (advisory lock): $TPS_EMIT2 tps | plain: $TPS_PLAIN2 tps | ${COST2}% slower (goal < 15 %) |"
    echo "| the same, the event about the inserted row (aggregate_locked), relay stopped | + emit(): $TPS_ROW2 tps | plain: $TPS_PLAIN2 tps | ${COST_ROW2}% slower (goal < 15 %) |"
    echo "| the floor, relay stopped: the same event row by a plain INSERT into a copy of the outbox (its indexes and check), same statement shape | + INSERT: $TPS_FLOOR2 tps | plain: $TPS_PLAIN2 tps | ${COST_FLOOR2}% slower (what the row itself costs) |"
    echo "| one-row insert transaction (prepared), relay delivering each event | + emit() of another aggregate: $TPS_EMIT1 tps | plain: $TPS_PLAIN1 tps | ${COST1}% slower (goal < 25 %) |"
    echo "| the same, the event about the inserted row (aggregate_locked), relay delivering | + emit(): $TPS_ROW1 tps | plain: $TPS_PLAIN1 tps | ${COST_ROW1}% slower (goal < 25 %) |"
} >> "${BENCH_RESULTS:-bench/RESULTS.md}"
echo "appended to ${BENCH_RESULTS:-bench/RESULTS.md}"
