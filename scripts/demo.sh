#!/bin/bash
# make demo: the platform's main flow on a private cluster, embedded events,
# local fakes for Stripe and MAAS, no internet.
#
#   installs missing Debian packages (as root), builds, installs, starts the
#   private cluster (scripts/cluster.sh), installs pgcloud, runs demo/demo.sql
#   (what exists), then walks a user through: sign-in, top-up through a Stripe
#   checkout completed by a signed webhook, marketplace, SSH key, a GPU
#   allocation deployed by MAAS, an access certificate, metering, release,
#   and what the user and the operator see afterwards. The demo database is
#   reset (pgcloud dropped and installed again) at each run.
#
# Every API call is made the way PostgREST makes it: the access token is
# verified against api.jwks(), then, in one transaction, SET LOCAL ROLE to
# the token's role, request.jwt.claims and request.headers are set, the
# pre-request function runs, and the api function is called.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
. scripts/lib.sh
pgcloud_stage "$0" "$@"
make -s
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install; else sudo make -s install PG_CONFIG="$PG_CONFIG"; fi
scripts/cluster.sh start

DATA=${PGCLOUD_DATA:-$REPO/.pgdata}
FAKES=$DATA/fakes
psql_q() { scripts/cluster.sh psql -X -q -At "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# The demo starts from a clean platform each time it runs.
psql_q -c "DROP EXTENSION IF EXISTS pgcloud_core CASCADE" -c "CREATE EXTENSION pgcloud CASCADE" 2>/dev/null
echo
scripts/cluster.sh psql -f demo/demo.sql

# ---- local fakes of Stripe and MAAS -----------------------------------------
start_fake() {  # name args...
    local name=$1; shift
    mkdir -p "$FAKES/$name"; rm -f "$FAKES/$name/port"
    if [ -f "$FAKES/$name/pid" ] && kill -0 "$(cat "$FAKES/$name/pid")" 2>/dev/null; then
        kill "$(cat "$FAKES/$name/pid")"; sleep 0.5
    fi
    python3 "test/fakes/fake_$name.py" --port 0 --state-dir "$FAKES/$name" "$@" >"$FAKES/$name.log" 2>&1 &
    echo $! > "$FAKES/$name/pid"
    for _ in $(seq 100); do [ -s "$FAKES/$name/port" ] && break; sleep 0.1; done
    cat "$FAKES/$name/port"
}
STRIPE_PORT=$(start_fake stripe --secret-key sk_test_pgcloud_demo --webhook-secret whsec_pgcloud_demo)
MAAS_PORT=$(start_fake maas --api-key demo:token:secret --machines 2 --deploy-seconds 3 --release-seconds 2 --commission-seconds 1)
say "Local fakes: Stripe on 127.0.0.1:$STRIPE_PORT, MAAS on 127.0.0.1:$MAAS_PORT (they check keys, signatures and OAuth headers)"

psql_q <<SQL >/dev/null
ALTER SYSTEM SET pgcloud.stripe_api_url = 'http://127.0.0.1:$STRIPE_PORT';
ALTER SYSTEM SET pgcloud.stripe_secret_key = 'sk_test_pgcloud_demo';
ALTER SYSTEM SET pgcloud.stripe_webhook_secrets = 'whsec_pgcloud_demo';
ALTER SYSTEM SET pgcloud.maas_url = 'http://127.0.0.1:$MAAS_PORT/MAAS';
ALTER SYSTEM SET pgcloud.maas_api_key = 'demo:token:secret';
SELECT pg_reload_conf();
SQL
sleep 1
psql_q <<'SQL' >/dev/null
SELECT pgcloud.set_policy('auth.dev_login_enabled', 'true');
SELECT pgcloud.set_policy('billing.accrual_interval_seconds', '5');
SQL
note "operator: dev login enabled for the demo; usage accrues every 5 s"

# ---- the PostgREST way of calling the API -----------------------------------
claims_of() { psql_q -c "SELECT auth.verify_access_token('$1')"; }
# api TOKEN|anon SQL [HEADERS-JSON] — one request, one transaction.
api() {
    local token=$1 sql=$2 headers=${3:-'{}'} claims role
    if [ "$token" = anon ]; then claims='{"role": "pgcloud_anon"}'; role=pgcloud_anon
    else claims=$(claims_of "$token"); role=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["role"])' "$claims"); fi
    psql_q -v ON_ERROR_STOP=1 <<SQL
BEGIN;
SET LOCAL ROLE $role;
SELECT set_config('request.jwt.claims', \$c\$$claims\$c\$, true) IS NULL;
SELECT set_config('request.headers', \$h\$$headers\$h\$, true) IS NULL;
SELECT pgcloud.pre_request();
$sql;
COMMIT;
SQL
}
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); [v := v[k] for k in sys.argv[2:]]; print(v if not isinstance(v,(dict,list)) else json.dumps(v))' "$@"; }
last_json() { grep -E '^[\[{]' | tail -n 1; }
pretty() { python3 -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=2))' | sed 's/^/   /'; }
wait_for() {  # SQL that returns t, seconds, what
    local i
    for i in $(seq $(( $2 * 10 ))); do
        [ "$(psql_q -c "$1")" = t ] && return 0
        sleep 0.1
    done
    echo "timed out waiting for: $3" >&2; return 1
}

# ---- operator: capacity -----------------------------------------------------
say "Operator defines a GPU SKU and an OS image, and registers two nodes (commissioned through MAAS)"
psql_q <<'SQL' >/dev/null
SELECT api.admin_upsert_sku('gpu.a100.1x', 'NVIDIA A100 80GB', 1, 16, 128, 1000, 'eu-west', 7200, 'usd');
SELECT api.admin_upsert_image('ubuntu-22.04', 'jammy');
SELECT api.admin_register_node('gpu-node-1', 'abc123', 'gpu.a100.1x');
SELECT api.admin_register_node('gpu-node-2', 'abc124', 'gpu.a100.1x');
SQL
wait_for "SELECT count(*) = 2 FROM inventory.nodes WHERE state = 'ready'" 30 "nodes ready"
psql_q -c "SELECT '   ' || hostname || '  ' || state FROM inventory.nodes ORDER BY hostname"

# ---- user: sign in ------------------------------------------------------------
say "Ada signs in (development login; production uses api.token_exchange with an OIDC ID token)"
LOGIN=$(api anon "SELECT api.dev_login('ada@example.com')" | last_json)
TOKEN=$(field "$LOGIN" access_token)
note "access token: ${TOKEN:0:24}…  (ES256, verifiable with api.jwks())"
api "$TOKEN" "SELECT api.me()" | last_json | pretty

# ---- top-up through Stripe ------------------------------------------------------
say "Ada tops up 50.00 USD: a Stripe Checkout Session is created by the HTTP executor"
CO=$(api "$TOKEN" "SELECT api.create_checkout(5000, 'usd')" '{"x-idempotency-key": "demo-topup-1"}' | last_json)
CO_ID=$(field "$CO" id)
wait_for "SELECT status <> 'creating' FROM payments.payment_sessions WHERE id = '$CO_ID'" 30 "checkout session"
CHECKOUT=$(api "$TOKEN" "SELECT api.get_checkout('$CO_ID')" | last_json)
echo "$CHECKOUT" | pretty
CS_ID=$(psql_q -c "SELECT stripe_session_id FROM payments.payment_sessions WHERE id = '$CO_ID'")
say "Ada pays on Stripe; Stripe posts checkout.session.completed (application/json, signed with HMAC-SHA256); PostgREST calls api.stripe_webhook(\$1::json)"
EVENT=$(curl -sf -X POST -H "Authorization: Bearer sk_test_pgcloud_demo" "http://127.0.0.1:$STRIPE_PORT/v1/checkout/sessions/$CS_ID/_complete")
PAYLOAD=$(field "$EVENT" payload)
SIG=$(field "$EVENT" stripe_signature)
note "Stripe-Signature: ${SIG:0:40}…"
HDRS=$(python3 -c 'import json,sys; print(json.dumps({"content-type": "application/json", "stripe-signature": sys.argv[1]}))' "$SIG")
api anon "SELECT api.stripe_webhook(\$w\$$PAYLOAD\$w\$::json)" "$HDRS" | last_json | pretty
note "the same webhook delivered again is acknowledged and credits nothing:"
api anon "SELECT api.stripe_webhook(\$w\$$PAYLOAD\$w\$::json)" "$HDRS" | last_json | pretty
wait_for "SELECT (SELECT count(*) FROM billing.ledger_entries WHERE kind = 'credit') = 1" 30 "credit"
api "$TOKEN" "SELECT api.balance()" | last_json | pretty

# ---- marketplace, SSH key, allocation ---------------------------------------------
say "Ada looks at the marketplace"
api "$TOKEN" "SELECT api.marketplace()" | last_json | pretty
say "Ada adds her SSH key (made with ssh-keygen)"
rm -f "$FAKES/ada_ed25519" "$FAKES/ada_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C ada@laptop -f "$FAKES/ada_ed25519"
PUB=$(cat "$FAKES/ada_ed25519.pub")
KEY=$(api "$TOKEN" "SELECT api.add_ssh_key('$PUB', 'laptop')" | last_json)
echo "$KEY" | pretty
note "ssh-keygen says: $(ssh-keygen -lf "$FAKES/ada_ed25519.pub")"
KEY_ID=$(field "$KEY" id)

say "Ada asks for a GPU node; provisioning places it and MAAS deploys it"
ALLOC=$(api "$TOKEN" "SELECT api.create_allocation('gpu.a100.1x', 'ubuntu-22.04', ARRAY['$KEY_ID']::uuid[])" '{"x-idempotency-key": "demo-alloc-1"}' | last_json)
ALLOC_ID=$(field "$ALLOC" id)
note "allocation $ALLOC_ID: $(field "$ALLOC" state)"
wait_for "SELECT state = 'active' FROM provisioning.allocations WHERE id = '$ALLOC_ID'" 60 "deployment"
api "$TOKEN" "SELECT api.get_allocation('$ALLOC_ID')" | last_json | pretty

say "Ada gets a short-lived SSH certificate for the node (principal: her POSIX user)"
wait_for "SELECT EXISTS (SELECT 1 FROM releases.allocations WHERE allocation_id = '$ALLOC_ID' AND state = 'active')" 30 "releases read model"
CERT=$(api "$TOKEN" "SELECT api.mint_access('$ALLOC_ID', '$PUB')" | last_json)
field "$CERT" certificate > "$FAKES/ada_ed25519-cert.pub"
ssh-keygen -L -f "$FAKES/ada_ed25519-cert.pub" | sed 's/^/   /'
note "nodes trust this CA (TrustedUserCAKeys): $(api anon "SELECT api.ssh_ca_public_key()" | grep '^ssh-' | cut -c1-70)…"

# ---- metering --------------------------------------------------------------------
say "The node runs; the scheduler's accrual job meters it every 5 s (billing.accrual_interval_seconds) by itself"
for i in 1 2 3; do
    sleep 5
    note "after $((i * 5)) s: balance $(api "$TOKEN" "SELECT api.balance() ->> 'balance'" | grep -E '^-?[0-9]+$' | tail -n 1) cents"
done

say "Ada releases the node"
api "$TOKEN" "SELECT api.release_allocation('$ALLOC_ID')" '{"x-idempotency-key": "demo-release-1"}' | last_json | pretty
wait_for "SELECT state = 'released' FROM provisioning.allocations WHERE id = '$ALLOC_ID'" 60 "release"
wait_for "SELECT settled FROM billing.allocations WHERE allocation_id = '$ALLOC_ID'" 30 "settlement by the accrual job"
wait_for "SELECT count(*) = 0 FROM pgcloud.outbox WHERE published_at IS NULL" 30 "events delivered"

say "What Ada sees: usage (price x active time, to the second) and her ledger"
api "$TOKEN" "SELECT api.usage('$ALLOC_ID')" | last_json | pretty
api "$TOKEN" "SELECT api.ledger()" | last_json | pretty
api "$TOKEN" "SELECT api.balance()" | last_json | pretty

say "What the operator sees: the audit trail of this demo, and the event pipeline"
scripts/cluster.sh psql -X -c "SELECT to_char(at, 'HH24:MI:SS') AS at, role, action, target, result FROM pgcloud.audit_logs ORDER BY id DESC LIMIT 15"
scripts/cluster.sh psql -X -c "SELECT * FROM pgcloud.outbox_lag" -c "SELECT database, worker, state, processed, failures FROM pgcloud.workers"
say "What runs by itself (nobody called any of these): pgcloud.jobs"
scripts/cluster.sh psql -X -c "SELECT job, schedule, to_char(last_run, 'HH24:MI:SS') AS last_run, last_status, runs, to_char(next_run, 'HH24:MI:SS') AS next_run FROM pgcloud.jobs ORDER BY job"

echo
echo "Connect with:  scripts/cluster.sh psql      (or: psql $(scripts/cluster.sh url))"
echo "Stop with:     scripts/cluster.sh stop       (the fakes: kill \$(cat $FAKES/*/pid))"
