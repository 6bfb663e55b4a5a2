#!/bin/bash
# Placement benchmark (issue 6). One command:  bench/capacity.sh (all: make bench)
# Starts a private cluster (workers off: the request path alone; its events
# are written to the outbox, not delivered), feeds provisioning's read model
# directly with NODES_LIST ready nodes x 8 GPU slots (default 1,000, then
# 10,000: the nodes are added between the rounds) and USERS users in good
# standing, then runs pgbench with a PostgREST-style request (role, JWT
# claims and headers set per transaction, pgcloud.pre_request(), then
# api.create_allocation of a 1-GPU SKU) with 1, 8 and 32 clients and
# measures, in the same run:
#   - placements/s and the p99 latency of the request,
#   - the same request envelope around a one-row INSERT (baseline),
#   - the floor: the same envelope around the rows one placement writes and
#     nothing else, without and with its events and audit entry (FLOOR=0
#     skips it): how far any placement logic could go (issue 16),
#   - zero double bookings after each run (claims = distinct slots =
#     placements, provisioning.capacity_problems empty),
#   - with shared tenancy too (every request wants the fullest node).
# Each run places PLACEMENTS allocations (default 4000, half the slots),
# then the claims and live allocations are cleared. Results are appended
# to bench/RESULTS.md.
# The deployment has a past, as a running one does: HISTORY (default 20,000)
# released allocations are in provisioning.allocations before the first run
# (PostgreSQL plans each session's statements against the tables as they
# are: against an empty table, the checks that read a user's allocations
# and the foreign keys' lookups are planned as sequential scans, which then
# grow with every placement of the run), and every second node has the
# image in its cache (so placement's second preference, an idle node with
# the image cached, is taken as often as the third).
# Profiling (not used by the figures above): KEEP_CLUSTER=1 leaves the
# cluster running when the script ends and prints its directory and port
# (the pgbench scripts place.sql and plain.sql are in that directory; stop it
# with pg_ctl -D <dir>/cluster stop); PG_STAT_STATEMENTS=1 preloads
# pg_stat_statements with track = all (nested statements too), which adds
# its own cost to every statement.
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
PLACEMENTS=${PLACEMENTS:-4000}
USERS=${USERS:-500}
HISTORY=${HISTORY:-20000}
NODES_LIST=${NODES_LIST:-1000 10000}
CLIENTS=${CLIENTS:-1 8 32}
WORK=$(mktemp -d /tmp/pgcloud-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
PORT=$(free_port)
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$PORT PGCLOUD_DB=bench
cleanup() {
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then echo "cluster kept: $WORK, port $PORT"; return; fi
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
scripts/cluster.sh start >/dev/null 2>&1
cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
pgcloud.databases = ''
max_connections = 100
CONF
if [ "${PG_STAT_STATEMENTS:-0}" = 1 ]; then
    cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
shared_preload_libraries = 'pg_cron,pgcloud,pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_utility = off
CONF
fi
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }
[ "${PG_STAT_STATEMENTS:-0}" = 1 ] && psql_b -c 'CREATE EXTENSION pg_stat_statements' >/dev/null

psql_b <<SQL >/dev/null
SELECT pgcloud.set_policy('provisioning.max_live_allocations_per_user', '100000');
SELECT pgcloud.set_policy('core.rate_limit_per_second', '100000');
SELECT pgcloud.set_policy('core.rate_limit_burst', '100000');
SELECT pgcloud.deliver('provisioning', gen_random_uuid(), 'sku.upserted', 'sku', 'bench-x1',
    '{"code": "bench-x1", "gpu_model": "H100-SXM", "gpu_count": 1, "region": "bench", "price_per_hour": 300, "currency": "usd"}', '{}');
SELECT pgcloud.deliver('provisioning', gen_random_uuid(), 'image.upserted', 'image', 'bench-img',
    '{"code": "bench-img", "distro_series": "jammy"}', '{}');
SELECT count(pgcloud.deliver('provisioning', gen_random_uuid(), 'account.standing_changed', 'account', u::text,
    jsonb_build_object('user_id', u, 'standing', 'good', 'balance', 100000000, 'currency', 'usd'), '{}'))
  FROM (SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid AS u FROM generate_series(1, $USERS) i) x;
CREATE TABLE bench_plain (id bigserial PRIMARY KEY, v text);
-- The floor: the rows one placement writes, written with cached plans and
-- nothing else (no search, no checks, no authorization, no idempotency):
-- the next node of the fleet in turn, its counts, the allocation, its slot
-- claim and, when events, the three events with placement-sized payloads,
-- the audit entry and its audit.recorded event. Bench-only (public schema).
CREATE SEQUENCE bench_floor_node;
CREATE FUNCTION public.bench_floor(p_user uuid, p_nodes integer, p_events boolean) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS \$\$
DECLARE
    nid uuid := ('b0000000-0000-4000-8000-' || lpad(((nextval('public.bench_floor_node') % p_nodes) + 1)::text, 12, '0'))::uuid;
    aid uuid := gen_random_uuid();
    cid text := gen_random_uuid()::text;
    host text; sys text; fs integer; hdr jsonb; pl jsonb; audit_id bigint;
BEGIN
    UPDATE provisioning.nodes x SET free_slots = x.free_slots - 1, live_allocations = x.live_allocations + 1,
           current_image = 'bench-img', current_user_id = coalesce(x.current_user_id, p_user)
     WHERE x.node_id = nid AND x.free_slots > 0
    RETURNING x.hostname, x.maas_system_id, x.free_slots INTO host, sys, fs;
    IF host IS NULL THEN RAISE EXCEPTION 'bench_floor: node % is full', nid; END IF;
    INSERT INTO provisioning.allocations (id, user_id, sku, image, distro_series, gpu_count, region, price_per_hour,
           currency, node_id, node_hostname, maas_system_id, ssh_key_ids, ssh_public_keys, slot_indexes, state, provisioning_at)
    VALUES (aid, p_user, 'bench-x1', 'bench-img', 'jammy', 1, 'bench', 300, 'usd', nid, host, sys, '{}', '{}', ARRAY[fs],
            'provisioning', now());
    INSERT INTO provisioning.slot_claims (node_id, slot_index, allocation_id) VALUES (nid, fs, aid);
    pl := jsonb_build_object('sku', 'bench-x1', 'image', 'bench-img', 'slots', jsonb_build_array(fs), 'region', 'bench',
          'node_id', nid, 'user_id', p_user, 'currency', 'usd', 'gpu_count', 1, 'requested_at', now(),
          'allocation_id', aid, 'node_hostname', host, 'price_per_hour', 300);
    IF p_events THEN
        hdr := jsonb_build_object('actor', p_user, 'source', 'provisioning', 'actor_role', 'pgcloud_user', 'correlation_id', cid);
        INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
        VALUES (gen_random_uuid(), 'allocation.requested', 'allocation', aid::text, pl, hdr, 'provisioning'),
               (gen_random_uuid(), 'deploy.requested', 'allocation', aid::text, pl - 'requested_at', hdr, 'provisioning'),
               (gen_random_uuid(), 'allocation.provisioning', 'allocation', aid::text, pl - 'sku' - 'image', hdr, 'provisioning');
        INSERT INTO pgcloud.audit_logs (actor, role, action, target_type, target_id, result, details, correlation_id)
        VALUES (p_user, 'pgcloud_user', 'allocation.created', 'allocation', aid::text, 'ok', pl - 'requested_at', cid)
        RETURNING id INTO audit_id;
        INSERT INTO pgcloud.outbox (event_id, event_type, aggregate_type, aggregate_id, payload, headers, source)
        VALUES (gen_random_uuid(), 'audit.recorded', 'audit', 'bench:' || audit_id,
                pl || jsonb_build_object('audit_id', audit_id, 'action', 'allocation.created'), hdr, 'pgcloud');
    END IF;
    RETURN pl;
END \$\$;
GRANT EXECUTE ON FUNCTION public.bench_floor(uuid, integer, boolean) TO pgcloud_user;
GRANT INSERT ON bench_plain TO pgcloud_user;
GRANT USAGE ON SEQUENCE bench_plain_id_seq TO pgcloud_user;
VACUUM ANALYZE;
SQL

# The PostgREST request: what PostgREST sends per POST /rpc/create_allocation.
envelope="\\set u random(1, $USERS)
BEGIN;
SELECT set_config('role', 'pgcloud_user', true), set_config('request.jwt.claims', '{\"role\": \"pgcloud_user\", \"sub\": \"00000000-0000-4000-8000-' || lpad(:u::text, 12, '0') || '\"}', true), set_config('request.headers', '{\"content-type\": \"application/json\"}', true), set_config('request.method', 'POST', true), set_config('request.path', '/rpc/create_allocation', true);
SELECT pgcloud.pre_request();"
printf '%s\n%s\nCOMMIT;\n' "$envelope" "SELECT api.create_allocation('bench-x1', 'bench-img');" > "$WORK/place.sql"
printf '%s\n%s\nCOMMIT;\n' "$envelope" "INSERT INTO bench_plain (v) VALUES ('x');" > "$WORK/plain.sql"
chmod a+r "$WORK"/*.sql

reset_claims() {
    psql_b <<SQL >/dev/null
DELETE FROM provisioning.slot_claims;
DELETE FROM provisioning.allocations WHERE state <> 'released';
UPDATE provisioning.nodes SET free_slots = slot_count, live_allocations = 0, current_image = NULL, current_user_id = NULL;
DELETE FROM pgcloud.outbox;
VACUUM ANALYZE provisioning.nodes, provisioning.slot_claims, provisioning.allocations, pgcloud.outbox;
SQL
}
# run FILE CLIENTS -> "tps p99_ms"
run() {
    local file=$1 clients=$2 per
    per=$(( PLACEMENTS / clients ))
    rm -f "$WORK"/log.*
    (cd "$WORK" && as_runner pgbench -n -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$file" -c "$clients" -j "$(( clients < 2 ? 1 : 2 ))" \
        -t "$per" -l --log-prefix=log bench > "$WORK/pgbench.out" 2>&1) || { cat "$WORK/pgbench.out"; exit 1; }
    grep -q "number of failed transactions: 0" "$WORK/pgbench.out" || { cat "$WORK/pgbench.out"; exit 1; }
    local tps p99
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.out" | head -1 | xargs printf '%.0f')
    p99=$(cat "$WORK"/log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.2f", a[i]/1000}')
    echo "$tps $p99"
}
check() {   # -> "placements claims distinct problems"
    psql_b -F ' ' -c "SELECT (SELECT count(*) FROM provisioning.allocations WHERE state <> 'released'), (SELECT count(*) FROM provisioning.slot_claims),
                             (SELECT count(DISTINCT (node_id, slot_index)) FROM provisioning.slot_claims),
                             (SELECT count(*) FROM provisioning.capacity_problems)"
}

# add_nodes FROM TO: registers ready nodes FROM..TO (8 slots each) through provisioning's handler.
add_nodes() {
    psql_b <<SQL >/dev/null
SELECT count(pgcloud.deliver('provisioning', gen_random_uuid(), 'node.registered', 'node', n::text,
    jsonb_build_object('node_id', n, 'hostname', 'bench-' || i, 'maas_system_id', 'b' || lpad(i::text, 6, '0'),
                       'region', 'bench', 'gpu_model', 'H100-SXM', 'slot_count', 8, 'state', 'ready',
                       'cached_images', CASE WHEN i % 2 = 0 THEN '["bench-img"]'::jsonb ELSE '[]' END), '{}'))
  FROM (SELECT i, ('b0000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid AS n FROM generate_series($1, $2) i) x;
VACUUM ANALYZE provisioning.nodes;
SQL
}

# The past: HISTORY released allocations of the users on the first nodes
# (written directly, as the read model's owner; they hold no slots).
seed_history() {
    psql_b <<SQL >/dev/null
SET session_replication_role = replica;
INSERT INTO provisioning.allocations (id, user_id, sku, image, distro_series, gpu_count, region, price_per_hour, currency,
                                      node_id, node_hostname, maas_system_id, slot_indexes, state, released_by,
                                      requested_at, provisioning_at, started_at, releasing_at, ended_at)
SELECT gen_random_uuid(), ('00000000-0000-4000-8000-' || lpad((1 + i % $USERS)::text, 12, '0'))::uuid,
       'bench-x1', 'bench-img', 'jammy', 1, 'bench', 300, 'usd', n.node_id, n.hostname, n.maas_system_id,
       ARRAY[i % 8], 'released', 'user', t, t, t + interval '1 minute', t + interval '1 hour', t + interval '61 minutes'
  FROM generate_series(1, $HISTORY) i
  JOIN provisioning.nodes n ON n.hostname = 'bench-' || (1 + i % 1000),
       LATERAL (SELECT now() - interval '30 days' + i * interval '1 minute') x (t);
RESET session_replication_role;
VACUUM ANALYZE provisioning.allocations;
SQL
}

declare -A TPS P99 BTPS BP99 CHK FTPS
# Shared tenancy is refused by provisioning since the security review (every
# placement would fail): measured only when asked for, MODES="single shared".
MODES=${MODES:-single}
have=0
for nodes in $NODES_LIST; do
    [ "$nodes" -gt "$have" ] && add_nodes $(( have + 1 )) "$nodes" && { [ "$have" != 0 ] || seed_history; } && have=$nodes
    for mode in $MODES; do
        psql_b -c "SELECT pgcloud.set_policy('provisioning.node_tenancy', '\"$mode\"')" >/dev/null
        for c in $CLIENTS; do
            [ "$mode" = shared ] && [ "$c" = 1 ] && continue
            k=$nodes.$mode.$c
            reset_claims
            read -r TPS[$k] P99[$k] <<<"$(run "$WORK/place.sql" "$c")"
            CHK[$k]=$(check)
            read -r n claims distinct problems <<<"${CHK[$k]}"
            echo "$nodes nodes, $mode tenancy, $c clients: ${TPS[$k]} placements/s, p99 ${P99[$k]} ms; placements $n, claims $claims, distinct slots $distinct, problems $problems"
            if [ "$n" != "$claims" ] || [ "$claims" != "$distinct" ] || [ "$problems" != 0 ] || [ "$n" != $(( PLACEMENTS / c * c )) ]; then
                echo "double booking or inconsistency detected" >&2; exit 1
            fi
        done
    done
    # The baseline right after each fleet size's placements (the machine's load drifts).
    # A baseline run is short (PLACEMENTS one-row inserts, about half a
    # second at 8 clients): the median of BASELINE_RUNS (default 3) runs.
    for c in $CLIENTS; do
        runs=()
        for _ in $(seq "${BASELINE_RUNS:-3}"); do runs+=("$(run "$WORK/plain.sql" "$c")"); done
        read -r BTPS[$nodes.$c] BP99[$nodes.$c] <<<"$(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p")"
        echo "baseline (same request, one-row INSERT), $c clients: ${BTPS[$nodes.$c]} tps, p99 ${BP99[$nodes.$c]} ms (median of ${#runs[@]} runs: $(printf '%s ' "${runs[@]%% *}"))"
    done
    # The floor (FLOOR=0 skips it): the same request writing a placement's
    # rows and nothing else; without and with its events and audit entry.
    if [ "${FLOOR:-1}" = 1 ]; then
        for ev in false true; do
            printf '%s\n%s\nCOMMIT;\n' "$envelope" \
                "SELECT public.bench_floor(('00000000-0000-4000-8000-' || lpad(:u::text, 12, '0'))::uuid, $nodes, $ev);" \
                > "$WORK/floor_$ev.sql"
            chmod a+r "$WORK/floor_$ev.sql"
            for c in $CLIENTS; do
                reset_claims
                read -r FTPS[$nodes.$ev.$c] _ <<<"$(run "$WORK/floor_$ev.sql" "$c")"
                echo "floor (a placement's rows only, events $ev), $c clients: ${FTPS[$nodes.$ev.$c]} tps"
            done
        done
    fi
done

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
{
    echo
    echo "## Capacity: placements ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/capacity.sh\` (NODES_LIST=\"$NODES_LIST\" ready nodes × 8 GPU slots, every second one with the image cached, 1-GPU SKU, $USERS users, $HISTORY released allocations of history, $PLACEMENTS placements per run, PostgREST-style request per transaction, workers off)"
    echo
    echo "Request = PostgREST's transaction (SET LOCAL role and request.* settings, pgcloud.pre_request(), the call, COMMIT); p99 over every request of the run. The baseline runs right after each fleet size's placements (the median of ${BASELINE_RUNS:-3} runs). Compare within a run: on a shared machine the absolute figures move by a third between runs."
    echo
    echo "| nodes | clients | tenancy | placements/s | p99 latency | baseline: same request, one-row INSERT | ratio | double bookings |"
    echo "|---|---|---|---|---|---|---|---|"
    for nodes in $NODES_LIST; do
        for mode in $MODES; do
            for c in $CLIENTS; do
                k=$nodes.$mode.$c
                [ -n "${TPS[$k]:-}" ] || continue
                read -r n claims distinct problems <<<"${CHK[$k]}"
                echo "| $nodes | $c | $mode | ${TPS[$k]} | ${P99[$k]} ms | ${BTPS[$nodes.$c]} tps, p99 ${BP99[$nodes.$c]} ms | $(ratio "${TPS[$k]}" "${BTPS[$nodes.$c]}") | 0 ($n placements, $distinct distinct slots claimed, $problems capacity problems) |"
            done
        done
    done
    if [ "${FLOOR:-1}" = 1 ]; then
        echo
        echo "The floor: the same request writing the rows of one placement and nothing else (\`public.bench_floor\`, bench-only: PL/pgSQL with cached plans; the next node in turn, its counts, the allocation and its slot claim; with events, also the three events with placement-sized payloads, the audit entry and its audit.recorded event; no search, checks, authorization or idempotency). What the placement's own logic costs is the gap between the placement and the floor with events; what the placement's writes cost is the gap between the floors and the baseline."
        echo
        echo "| nodes | clients | placement | floor: rows only (ratio) | floor: rows, events, audit (ratio) | baseline | placement / floor with events |"
        echo "|---|---|---|---|---|---|---|"
        for nodes in $NODES_LIST; do
            for c in $CLIENTS; do
                k=$nodes.single.$c
                [ -n "${TPS[$k]:-}" ] && [ -n "${FTPS[$nodes.true.$c]:-}" ] || continue
                echo "| $nodes | $c | ${TPS[$k]} | ${FTPS[$nodes.false.$c]} ($(ratio "${FTPS[$nodes.false.$c]}" "${BTPS[$nodes.$c]}")) | ${FTPS[$nodes.true.$c]} ($(ratio "${FTPS[$nodes.true.$c]}" "${BTPS[$nodes.$c]}")) | ${BTPS[$nodes.$c]} | $(ratio "${TPS[$k]}" "${FTPS[$nodes.true.$c]}") |"
            done
        done
    fi
} >> "${BENCH_RESULTS:-bench/RESULTS.md}"
echo "appended to ${BENCH_RESULTS:-bench/RESULTS.md}"
