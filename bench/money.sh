#!/bin/bash
# Money benchmark (issue 5). One command:  bench/money.sh
# Starts a private cluster (no background workers, synchronous_commit = off so
# that CPU, not the disk flush, is compared) and measures, in the same run:
#   1. ledger postings/s, one posting per transaction, to 1 and to 1,000
#      accounts with 1, 2, 8 and 32 clients:
#        - billing.ledger_entries (the C trigger computes the running balance
#          under the account's row lock),
#        - a plain INSERT into a table of the same shape (same columns,
#          constraints and indexes) without triggers: the baseline (goal >= 0.7),
#        - a PL/pgSQL running-balance posting in the style of pgledger (lock the
#          account row, UPDATE its balance and version, INSERT the entry with the
#          balance), into tables of the same shape;
#      and billing.post_entry() (the trigger plus the ledger.entry_posted event)
#      for reference;
#   2. api.balance() latency for an account with 10,000,000 entries against one
#      with 1,000 (the 10M rows are made by one INSERT ... generate_series with
#      the balances computed in SQL and the trigger off, then checked);
#   3. Stripe webhook signature verifications/s: payments.verify_signature()
#      (C, OpenSSL) against the same check in PL/pgSQL with pgcrypto's hmac().
# Each posting figure is the best of REPS (2) interleaved runs of SECONDS_PER_RUN (3)
# seconds: on a shared machine other load only ever slows a run down.
# Appends the figures to bench/RESULTS.md. Settings: SECONDS_PER_RUN, REPS,
# BIG (10000000), VERIFY_N (20000).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
DUR=${SECONDS_PER_RUN:-3}
REPS=${REPS:-2}
BIG=${BIG:-10000000}
VERIFY_N=${VERIFY_N:-20000}
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
T_START=$(date +%s)

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
scripts/cluster.sh start >/dev/null 2>&1
cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
pgcloud.databases = ''
synchronous_commit = off
max_connections = 100
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
maintenance_work_mem = 1GB
pgcloud.stripe_webhook_secrets = 'whsec_bench_rotated_out,whsec_bench'
CONF
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }

# ---- set-up: the baseline table, the pgledger-style posting, the accounts ----
psql_b <<'SQL' >/dev/null
CREATE EXTENSION pgcrypto;
CREATE SCHEMA bench;
-- Same shape as billing.ledger_entries, no trigger.
CREATE SEQUENCE bench.plain_id_seq;
CREATE TABLE bench.plain_entries (LIKE billing.ledger_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.plain_entries ALTER COLUMN id SET DEFAULT nextval('bench.plain_id_seq'),
    ADD PRIMARY KEY (id), ADD UNIQUE (kind, cause_id);
CREATE INDEX ON bench.plain_entries (account_id, id);
-- pgledger style: a PL/pgSQL function locks the account row, updates its
-- balance and version, and inserts the entry carrying the new balance.
CREATE TABLE bench.pgl_accounts (account_id uuid PRIMARY KEY, currency text NOT NULL, balance bigint NOT NULL DEFAULT 0,
                                 version bigint NOT NULL DEFAULT 0);
CREATE SEQUENCE bench.pgl_id_seq;
CREATE TABLE bench.pgl_entries (LIKE billing.ledger_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.pgl_entries ADD PRIMARY KEY (id), ADD UNIQUE (kind, cause_id);
CREATE INDEX ON bench.pgl_entries (account_id, id);
CREATE FUNCTION bench.pgl_post(account uuid, amount bigint, cause text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    acct bench.pgl_accounts;
    entry bigint;
BEGIN
    SELECT * INTO acct FROM bench.pgl_accounts a WHERE a.account_id = account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no account %', account;
    END IF;
    UPDATE bench.pgl_accounts a SET balance = a.balance + amount, version = a.version + 1
     WHERE a.account_id = account;
    INSERT INTO bench.pgl_entries (id, account_id, kind, amount, currency, balance_after, cause_type, cause_id)
    VALUES (nextval('bench.pgl_id_seq'), account, 'adjustment', amount, acct.currency, acct.balance + amount,
            'adjustment', cause)
    RETURNING id INTO entry;
    RETURN entry;
END $$;
-- Accounts 1..1000 in both.
INSERT INTO billing.accounts (account_id, currency)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'usd' FROM generate_series(1, 1000) i;
INSERT INTO bench.pgl_accounts (account_id, currency)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'usd' FROM generate_series(1, 1000) i;
ANALYZE;
SQL

# The account expression and the cause id are the same in every variant.
ACCT="('00000000-0000-4000-8000-' || lpad(:n::text, 12, '0'))::uuid"
cat > "$WORK/ledger.sql" <<SQL
\set n random(1, :accounts)
INSERT INTO billing.ledger_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
VALUES ($ACCT, 'adjustment', 1, 'usd', 0, 'adjustment', gen_random_uuid()::text);
SQL
cat > "$WORK/plain.sql" <<SQL
\set n random(1, :accounts)
INSERT INTO bench.plain_entries (account_id, kind, amount, currency, balance_after, cause_type, cause_id)
VALUES ($ACCT, 'adjustment', 1, 'usd', 0, 'adjustment', gen_random_uuid()::text);
SQL
cat > "$WORK/pgledger.sql" <<SQL
\set n random(1, :accounts)
SELECT bench.pgl_post($ACCT, 1, gen_random_uuid()::text);
SQL
cat > "$WORK/post_entry.sql" <<SQL
\set n random(1, :accounts)
SELECT (billing.post_entry($ACCT, 'adjustment', 1, 'usd', 'adjustment', gen_random_uuid()::text)).id;
SQL
chmod a+r "$WORK"/*.sql
tps() {  # script accounts clients
    as_runner pgbench -n -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$WORK/$1.sql" -D accounts="$2" \
        -c "$3" -j "$(( $3 < 2 ? 1 : 2 ))" -T "$DUR" bench 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}

declare -A R
# Warm-up (caches, plans, the first pages of the indexes), not reported.
for v in plain ledger pgledger post_entry; do tps $v 1000 8 >/dev/null; done
for accounts in 1 1000; do
    for clients in 1 2 8 32; do
        variants="plain ledger pgledger"
        [ "$accounts" = 1000 ] && variants="$variants post_entry"
        R[post_entry,$accounts,$clients]=-
        for rep in $(seq "$REPS"); do
            for v in $variants; do
                t=$(tps $v $accounts $clients)
                R[$v,$accounts,$clients]=$(python3 -c "print(max($t, float('${R[$v,$accounts,$clients]:-0}'.replace('-', '0'))))")
            done
        done
        echo "accounts=$accounts clients=$clients: plain ${R[plain,$accounts,$clients]}, ledger ${R[ledger,$accounts,$clients]}, pgledger ${R[pgledger,$accounts,$clients]}, post_entry ${R[post_entry,$accounts,$clients]} tps"
    done
done
CONSISTENT=$(psql_b -c "SELECT count(*) = 0 FROM billing.verify_ledger()")
echo "ledger consistent after the posting runs: $CONSISTENT"

# ---- 2. balance read at 10M entries vs 1,000 ------------------------------
BIG_ID="'0b190000-0000-4000-8000-000000000001'"
SMALL_ID="'0b190000-0000-4000-8000-000000000002'"
t0=$(date +%s%3N)
psql_b <<SQL >/dev/null
INSERT INTO billing.accounts (account_id, currency) VALUES ($BIG_ID, 'usd'), ($SMALL_ID, 'usd');
-- One INSERT per account, balances computed in SQL (amount 1: balance_after = i),
-- ids from the ledger's sequence in order, causes in index order (appends, not
-- random inserts); the trigger is off for the load only.
SET session_replication_role = replica;
INSERT INTO billing.ledger_entries (id, account_id, kind, amount, currency, balance_after, cause_type, cause_id)
SELECT nextval('billing.ledger_entries_id_seq'), $BIG_ID, 'adjustment', 1, 'usd', i, 'adjustment', 'big-' || lpad(i::text, 10, '0')
  FROM generate_series(1, $BIG) i;
INSERT INTO billing.ledger_entries (id, account_id, kind, amount, currency, balance_after, cause_type, cause_id)
SELECT nextval('billing.ledger_entries_id_seq'), $SMALL_ID, 'adjustment', 1, 'usd', i, 'adjustment', 'small-' || i
  FROM generate_series(1, 1000) i;
RESET session_replication_role;
ANALYZE billing.ledger_entries;
SQL
t1=$(date +%s%3N)
GEN_S=$(python3 -c "print(f'{($t1 - $t0) / 1000:.0f}')")
# A posting through the trigger on top of the generated chain, then the check.
psql_b -c "SELECT billing.post_entry($BIG_ID, 'adjustment', 5, 'usd', 'adjustment', 'big-next')" >/dev/null
t2=$(date +%s%3N)
BIG_OK=$(psql_b -c "SELECT count(*) = 0 FROM billing.verify_ledger($BIG_ID)")
t3=$(date +%s%3N)
VERIFY_S=$(python3 -c "print(f'{($t3 - $t2) / 1000:.1f}')")
BIG_BAL=$(psql_b -c "SELECT balance FROM billing.balances WHERE account_id = $BIG_ID")
echo "generated $BIG + 1000 entries in ${GEN_S}s; balance $BIG_BAL; verify_ledger on the big account: $BIG_OK in ${VERIFY_S}s"
echo "SELECT api.balance();" > "$WORK/balance.sql"
chmod a+r "$WORK/balance.sql"
lat() {  # account uuid -> average latency in ms of api.balance() as that user
    as_runner env PGOPTIONS="-c request.jwt.claims={\"role\":\"pgcloud_user\",\"sub\":\"$1\"}" \
        pgbench -n -h "$PGCLOUD_DATA/run" -p "$PORT" -f "$WORK/balance.sql" -c 1 -T "$DUR" bench 2>/dev/null \
        | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'
}
BIG_UUID=${BIG_ID//\'/}
SMALL_UUID=${SMALL_ID//\'/}
LAT_SMALL_1=$(lat "$SMALL_UUID"); LAT_BIG_1=$(lat "$BIG_UUID")
LAT_SMALL_2=$(lat "$SMALL_UUID"); LAT_BIG_2=$(lat "$BIG_UUID")
echo "api.balance(): 1,000 entries ${LAT_SMALL_1} / ${LAT_SMALL_2} ms, $BIG entries ${LAT_BIG_1} / ${LAT_BIG_2} ms"

# ---- 3. webhook signature verification: C vs PL/pgSQL + pgcrypto ------------
psql_b <<'SQL' >/dev/null
-- The same check as payments.verify_signature(), in PL/pgSQL with pgcrypto.
CREATE FUNCTION bench.verify_plpgsql(body text, header text, tolerance integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    item text;
    t text;
    sigs bytea[] := '{}';
    secret text;
    mac bytea;
    s bytea;
    ok boolean := false;
BEGIN
    IF header IS NULL OR header = '' THEN
        RETURN 'missing_header';
    END IF;
    FOREACH item IN ARRAY string_to_array(header, ',') LOOP
        item := btrim(item);
        IF item LIKE 't=%' THEN
            IF t IS NOT NULL OR substr(item, 3) !~ '^[0-9]{1,12}$' THEN
                RETURN 'malformed_header';
            END IF;
            t := substr(item, 3);
        ELSIF item ~ '^v1=[0-9a-fA-F]{64}$' THEN
            sigs := sigs || decode(substr(item, 4), 'hex');
        END IF;
    END LOOP;
    IF t IS NULL THEN
        RETURN 'malformed_header';
    END IF;
    IF cardinality(sigs) = 0 THEN
        RETURN 'no_v1_signature';
    END IF;
    FOREACH secret IN ARRAY string_to_array(current_setting('pgcloud.stripe_webhook_secrets'), ',') LOOP
        mac := hmac(convert_to(t || '.' || body, 'UTF8'), convert_to(btrim(secret), 'UTF8'), 'sha256');
        FOREACH s IN ARRAY sigs LOOP
            ok := ok OR s = mac;    -- bytea equality: not constant-time
        END LOOP;
    END LOOP;
    IF NOT ok THEN
        RETURN 'signature_mismatch';
    END IF;
    IF t::bigint < extract(epoch FROM clock_timestamp()) - tolerance THEN
        RETURN 'timestamp_too_old';
    ELSIF t::bigint > extract(epoch FROM clock_timestamp()) + tolerance THEN
        RETURN 'timestamp_in_future';
    END IF;
    RETURN 'ok';
END $$;
-- A Stripe-sized event (about 3 kB, as the fake sends checkout.session.completed) signed now.
CREATE TABLE bench.webhook AS
SELECT body, 't=' || t || ',v1=' || encode(hmac(convert_to(t || '.' || body, 'UTF8'), 'whsec_bench', 'sha256'), 'hex') AS header
  FROM (SELECT floor(extract(epoch FROM now()))::bigint AS t,
               jsonb_pretty(jsonb_build_object('id', 'evt_bench', 'object', 'event', 'type', 'checkout.session.completed',
                   'data', jsonb_build_object('object', jsonb_build_object('id', 'cs_test_bench', 'object', 'checkout.session',
                       'amount_total', 2500, 'currency', 'usd', 'payment_status', 'paid',
                       'padding', repeat('x', 2600))))) AS body) x;
SQL
vrate() {  # expression -> verifications per second
    local ms
    # "+ 0 * g" ties the call to each row: otherwise it is evaluated once and materialised.
    ms=$(psql_b -c "\\timing on" -c "SELECT count(*) FROM generate_series(1, $VERIFY_N) g, bench.webhook w WHERE $1 = 'ok'" \
        | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1)
    python3 -c "print(int($VERIFY_N / ($ms / 1000)))"
}
BODY_BYTES=$(psql_b -c "SELECT octet_length(body) FROM bench.webhook")
CHECK_C=$(psql_b -c "SELECT (payments.verify_signature(body, header, 300)).verdict FROM bench.webhook")
CHECK_P=$(psql_b -c "SELECT bench.verify_plpgsql(body, header, 300) FROM bench.webhook")
V_C=$(vrate "(payments.verify_signature(w.body, w.header, 300 + 0 * g)).verdict")
V_P=$(vrate "bench.verify_plpgsql(w.body, w.header, 300 + 0 * g)")
echo "webhook verification ($BODY_BYTES B body, 2 secrets, the 2nd matching; both say $CHECK_C/$CHECK_P): C $V_C/s, PL/pgSQL+pgcrypto $V_P/s"
T_END=$(date +%s)

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
{
    echo
    echo "## Money: ledger postings, balance reads, webhook verification ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Command: \`bench/money.sh\` (best of $REPS interleaved ${DUR}s pgbench runs, one posting per transaction, synchronous_commit = off, no background workers; whole run $(( T_END - T_START ))s)"
    echo
    echo "Ledger postings/s. ledger = INSERT into billing.ledger_entries (C trigger: account row lock, newest entry by index, running balance); plain = the same INSERT into a table of the same shape without triggers (baseline); pgledger-style = PL/pgSQL lock + UPDATE balance + INSERT; post_entry = billing.post_entry() (trigger + ledger.entry_posted event)."
    echo
    echo "| accounts | clients | plain (baseline) | ledger | ledger / plain (goal ≥ 0.7) | pgledger-style PL/pgSQL | ledger / pgledger | post_entry |"
    echo "|---|---|---|---|---|---|---|---|"
    for accounts in 1 1000; do
        for clients in 1 2 8 32; do
            p=${R[plain,$accounts,$clients]}; l=${R[ledger,$accounts,$clients]}; g=${R[pgledger,$accounts,$clients]}
            echo "| $accounts | $clients | ${p%.*} | ${l%.*} | $(ratio "$l" "$p") | ${g%.*} | $(ratio "$l" "$g") | ${R[post_entry,$accounts,$clients]%.*} |"
        done
    done
    echo
    echo "Ledger consistent (billing.verify_ledger() empty) after the runs: $CONSISTENT."
    echo
    echo "| measure | result | baseline (same run) | ratio / goal |"
    echo "|---|---|---|---|"
    echo "| api.balance() latency (pgbench, 1 client, two runs each) | $BIG entries: $LAT_BIG_1 / $LAT_BIG_2 ms | 1,000 entries: $LAT_SMALL_1 / $LAT_SMALL_2 ms | $(ratio "($LAT_BIG_1 + $LAT_BIG_2)" "($LAT_SMALL_1 + $LAT_SMALL_2)") (goal: same within noise) |"
    echo "| generating the $BIG entries (one INSERT … generate_series per account, trigger off, + ANALYZE) | ${GEN_S}s | — | verify_ledger() of that account afterwards: $BIG_OK in ${VERIFY_S}s |"
    echo "| webhook verifications/s ($BODY_BYTES B body, 2 secrets) | C payments.verify_signature(): $V_C/s | PL/pgSQL + pgcrypto hmac(): $V_P/s | $(ratio "$V_C" "$V_P")× |"
} >> "${BENCH_RESULTS:-bench/RESULTS.md}"
echo "appended to ${BENCH_RESULTS:-bench/RESULTS.md}"
