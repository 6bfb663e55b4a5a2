#!/bin/bash
# Accrual benchmark (issue 16). One command:  bench/accrual.sh (all: make bench)
# Starts a private cluster (no background workers, synchronous_commit = off)
# with ACCOUNTS accounts (each topped up, standing evaluated) and measures,
# in the same run, charging ALLOCS active allocations one due interval each:
#   - batch: billing.accrue(), which charges every allocation that has not
#     ended in one statement and posts the ledger entries in one
#     (billing.accrue_batch, billing.post_usage);
#   - single postings (the baseline): the same allocations charged the way
#     billing.accrue() did before the batch, one billing.accrue_allocation()
#     each in its own subtransaction (one usage record, one post_entry()).
# Each round gets ALLOCS fresh allocations (same prices), the two paths
# interleaved REPS (2) times; the best run of each path is reported. After
# the runs: both paths charged the same amounts, every allocation once, and
# billing.verify_ledger() is empty (every running balance exact).
# Appends the figures to $BENCH_RESULTS (default bench/RESULTS.md).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
ALLOCS=${ALLOCS:-10000}
ACCOUNTS=${ACCOUNTS:-1000}
REPS=${REPS:-2}
WORK=$(mktemp -d /tmp/pgcloud-bench.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
PORT=$(free_port)
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$PORT PGCLOUD_DB=bench
cleanup() {
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
scripts/cluster.sh start >/dev/null 2>&1
cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
pgcloud.databases = ''
synchronous_commit = off
shared_buffers = 512MB
max_wal_size = 4GB
CONF
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }

psql_b <<SQL >/dev/null
CREATE SCHEMA bench;
-- billing.accrue()'s loop before the batch: one allocation at a time, each in
-- its own subtransaction (the allocations of one round only).
CREATE FUNCTION bench.accrue_single(round text, t timestamptz) RETURNS integer LANGUAGE plpgsql AS \$\$
DECLARE
    x record;
    records integer := 0;
BEGIN
    FOR x IN
        SELECT a.allocation_id FROM billing.allocations a
         WHERE a.sku = round AND a.started_at IS NOT NULL AND NOT a.settled
           AND ((a.ended_at IS NOT NULL AND a.ended_at <= t)
                OR a.started_at + make_interval(secs => (a.next_interval + 1)::bigint * a.interval_seconds) <= t)
         ORDER BY a.account_id, a.allocation_id
         FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        BEGIN
            records := records + billing.accrue_allocation(x.allocation_id, t);
        EXCEPTION WHEN OTHERS THEN
            RAISE;
        END;
    END LOOP;
    RETURN records;
END
\$\$;
-- A round's allocations: active for one interval and 100 seconds.
CREATE FUNCTION bench.add_round(round text) RETURNS void LANGUAGE sql AS \$\$
    INSERT INTO billing.allocations (allocation_id, account_id, sku, node_hostname, price_per_hour, currency,
                                     interval_seconds, started_at)
    SELECT gen_random_uuid(),
           ('00000000-0000-4000-8000-' || lpad((i % $ACCOUNTS)::text, 12, '0'))::uuid,
           round, 'bench-' || i, 100 + (i * 37) % 5000, 'usd', 3600, now() - interval '3700 seconds'
      FROM generate_series(1, $ALLOCS) i;
    ANALYZE billing.allocations;
\$\$;
SELECT count(billing.post_entry(('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'credit',
                                1000000000000, 'usd', 'payment', 'bench-topup-' || i))
  FROM generate_series(0, $ACCOUNTS - 1) i;
SELECT count(billing.evaluate_standing(account_id)) FROM billing.accounts;
DELETE FROM pgcloud.outbox;
VACUUM ANALYZE;
SQL

# run_round PATH ROUND -> "seconds records"
run_round() {
    local path=$1 round=$2
    psql_b -c "SELECT bench.add_round('$round')" >/dev/null
    psql_b -c "CHECKPOINT" >/dev/null
    local t0 t1 recs
    t0=$(date +%s.%N)
    if [ "$path" = batch ]; then
        recs=$(psql_b -c "SELECT billing.accrue() ->> 'usage_records'")
    else
        recs=$(psql_b -c "SELECT bench.accrue_single('$round', now())")
    fi
    t1=$(date +%s.%N)
    echo "$(python3 -c "print(f'{$t1 - $t0:.3f}')") $recs"
}

declare -A SECS RECS
best_single=; best_batch=
for rep in $(seq 1 "$REPS"); do
    for path in single batch; do
        read -r secs recs <<<"$(run_round "$path" "$path-$rep")"
        SECS[$path$rep]=$secs; RECS[$path$rep]=$recs
        echo "$path, round $rep: $recs usage records in $secs s"
        [ "$recs" = "$ALLOCS" ] || { echo "expected $ALLOCS usage records, got $recs" >&2; exit 1; }
    done
done
for rep in $(seq 1 "$REPS"); do
    if [ -z "$best_single" ] || python3 -c "import sys; sys.exit(0 if ${SECS[single$rep]} < $best_single else 1)"; then best_single=${SECS[single$rep]}; fi
    if [ -z "$best_batch" ] || python3 -c "import sys; sys.exit(0 if ${SECS[batch$rep]} < $best_batch else 1)"; then best_batch=${SECS[batch$rep]}; fi
done

# The same amounts by both paths, each allocation charged once, the ledger exact.
read -r same once problems entries <<<"$(psql_b -F ' ' -c "
SELECT (SELECT count(DISTINCT amounts) = 1 FROM (
            SELECT split_part(a.sku, '-', 2) AS rep, split_part(a.sku, '-', 1) AS path,
                   string_agg(r.amount::text, ',' ORDER BY a.node_hostname) AS amounts
              FROM billing.allocations a JOIN billing.usage_records r USING (allocation_id)
             GROUP BY 1, 2) x),
       (SELECT count(*) = 0 FROM billing.allocations a
         WHERE (SELECT count(*) FROM billing.usage_records r WHERE r.allocation_id = a.allocation_id) <> 1),
       (SELECT count(*) FROM billing.verify_ledger()),
       (SELECT count(*) FROM billing.ledger_entries WHERE kind = 'usage_debit')")"
echo "same amounts: $same, each allocation charged once: $once, verify_ledger problems: $problems, usage entries: $entries"
[ "$same" = t ] && [ "$once" = t ] && [ "$problems" = 0 ] || { echo "accrual results differ or the ledger is inconsistent" >&2; exit 1; }

rate() { python3 -c "print(f'{$1 / $2:.0f}')"; }
{
    echo
    echo "## Accrual: batch posting against single postings ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/accrual.sh\` (ALLOCS=$ALLOCS active allocations over $ACCOUNTS accounts, one due interval each, REPS=$REPS interleaved rounds, best of each; synchronous_commit = off, no background workers)"
    echo
    echo "| path | best run | allocations charged/s | baseline (same run) | ratio |"
    echo "|---|---|---|---|---|"
    echo "| batch: \`billing.accrue()\` (one statement for the usage records, one for the ledger entries) | $best_batch s | $(rate "$ALLOCS" "$best_batch") | single postings: $best_single s, $(rate "$ALLOCS" "$best_single")/s (one \`billing.accrue_allocation()\` per allocation in its own subtransaction, as before) | $(python3 -c "print(f'{$best_single / $best_batch:.1f}x faster')") |"
    echo
    echo "Every run: $ALLOCS usage records; afterwards both paths had charged the same amounts ($same), each allocation once ($once), and billing.verify_ledger() reported $problems problems ($entries usage entries in the ledger)."
} >> "${BENCH_RESULTS:-bench/RESULTS.md}"
echo "appended to ${BENCH_RESULTS:-bench/RESULTS.md}"
