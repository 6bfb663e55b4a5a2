#!/bin/bash
# selftest.sh: checks the fakes against real, independent clients: curl (HTTP,
# HTTPS, SMTP, SMTPS), openssl (HMAC of webhook signatures, s_client), and
# Python's smtplib. One line per check ("ok   ..." / "FAIL ..."), then
# "N passed, N failed"; exits non-zero on any failure. Cleans up its processes.
# Environment: PYTHON (default /usr/bin/python3 when present, else python3).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
WORK=$(mktemp -d /tmp/fakes-selftest.XXXXXX)
PIDS=()
PASSED=0
FAILED=0

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT

ok()   { PASSED=$((PASSED + 1)); echo "ok   $1"; }
bad()  { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+ -- $2}"; }
# check DESC ACTUAL EXPECTED
check() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2], want [$3]"; fi; }
# check_cmd DESC CMD...: passes when CMD exits 0
check_cmd() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# j FILE EXPR: evaluate a Python expression over the JSON document d in FILE
j() { "$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>&1; }

# start NAME DIR ARGS...: start a fake, wait for DIR/port (5 s), set LAST_PID
start() {
    local name=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    "$PYTHON" "$HERE/$name.py" --port 0 --state-dir "$dir" "$@" >"$dir.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    for _ in $(seq 100); do
        [ -s "$dir/port" ] && return 0
        sleep 0.05
    done
    cat "$dir.log"
    return 1
}

# http METHOD URL [curl args]: status code in $CODE, body in $WORK/body, headers in $WORK/hdr
http() {
    local m=$1 u=$2
    shift 2
    CODE=$(curl -s -o "$WORK/body" -D "$WORK/hdr" -w '%{http_code}' -X "$m" "$u" "$@")
    CURL_RC=$?
}
hdr() { grep -i "^$1:" "$WORK/hdr" | head -1 | cut -d' ' -f2- | tr -d '\r'; }

"$HERE/make_certs.sh" "$WORK/certs" || { echo "FAIL make_certs.sh"; exit 1; }
CA=$WORK/certs/ca.crt
TLS=(--tls-cert "$WORK/certs/server.crt" --tls-key "$WORK/certs/server.key")
ok "make_certs.sh: CA and server certificate for 127.0.0.1/localhost"

# =============================== Stripe =====================================
SD=$WORK/stripe
start fake_stripe "$SD" || bad "fake_stripe starts"
STRIPE_PID=$LAST_PID
S=http://127.0.0.1:$(cat "$SD/port")
KEY=sk_test_pgcloud
SESSION_FORM=(-d mode=payment --data-urlencode 'success_url=https://pgcloud.test/ok?s={CHECKOUT_SESSION_ID}'
    -d cancel_url=https://pgcloud.test/cancel
    -d 'line_items[0][price_data][currency]=usd' -d 'line_items[0][price_data][unit_amount]=1500'
    --data-urlencode 'line_items[0][price_data][product_data][name]=GPU credit'
    -d 'line_items[0][quantity]=2' -d client_reference_id=pay-1
    -d 'metadata[payment_id]=pay-1' -d 'metadata[user_id]=u-1' -d 'payment_method_types[]=card')

http GET "$S/v1/checkout/sessions/cs_test_x"
check "stripe: no API key -> 401" "$CODE" 401
check "stripe: 401 in Stripe's error shape" "$(j "$WORK/body" "d['error']['type']")" invalid_request_error
http GET "$S/v1/checkout/sessions/cs_test_x" -H "Authorization: Bearer sk_test_wrong"
check "stripe: wrong API key -> 401" "$CODE" 401
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" "${SESSION_FORM[@]}"
check "stripe: POST without Idempotency-Key -> 400" "$CODE" 400
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: j1' \
    -H 'Content-Type: application/json' -d '{"mode":"payment"}'
check "stripe: JSON body -> 400" "$CODE" 400
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: m1' \
    -d mode=payment -d cancel_url=https://pgcloud.test/c
check "stripe: missing success_url -> parameter_missing" \
    "$CODE $(j "$WORK/body" "d['error']['code'], d['error']['param']")" "400 ('parameter_missing', 'success_url')"
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: u1' \
    "${SESSION_FORM[@]}" -d bogus=1
check "stripe: unknown parameter -> 400 parameter_unknown" "$CODE $(j "$WORK/body" "d['error']['code']")" "400 parameter_unknown"

http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: s1' "${SESSION_FORM[@]}"
check "stripe: create checkout session -> 200" "$CODE" 200
cp "$WORK/body" "$WORK/session.json"
SID=$(j "$WORK/session.json" "d['id']")
check "stripe: session shape (id, object, url, amounts, states, metadata)" \
    "$(j "$WORK/session.json" "(d['id'].startswith('cs_test_'), d['object'], d['url'] == 'https://checkout.stripe.com/c/pay/' + d['id'], d['amount_total'], d['currency'], d['payment_status'], d['status'], d['client_reference_id'], d['metadata'], d['payment_intent'], type(d['created']).__name__)")" \
    "(True, 'checkout.session', True, 3000, 'usd', 'unpaid', 'open', 'pay-1', {'payment_id': 'pay-1', 'user_id': 'u-1'}, None, 'int')"
check "stripe: bracket notation parsed (line_items, payment_method_types[])" \
    "$("$PYTHON" -c '
import json,sys
e=[json.loads(l) for l in open(sys.argv[1])][-1]
p=e["params"]
print(p["line_items"][0]["price_data"]["product_data"]["name"], p["payment_method_types"], e["idempotency"], e["auth_ok"])' "$SD/requests.jsonl")" \
    "GPU credit ['card'] new True"
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: s1' "${SESSION_FORM[@]}"
check "stripe: same key + same body -> same session replayed" \
    "$CODE $(j "$WORK/body" "d['id']") $(hdr Idempotent-Replayed)" "200 $SID true"
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: s1' \
    "${SESSION_FORM[@]/pay-1/pay-2}"
check "stripe: same key + different body -> 400 idempotency_error" \
    "$CODE $(j "$WORK/body" "d['error']['type']")" "400 idempotency_error"
http GET "$S/v1/checkout/sessions/$SID" -u "$KEY:"
check "stripe: GET session (Basic auth as Stripe accepts)" "$CODE $(j "$WORK/body" "d['id']")" "200 $SID"

http POST "$S/v1/checkout/sessions/$SID/_complete"
cp "$WORK/body" "$WORK/complete.json"
check "stripe: _complete -> checkout.session.completed event, session paid" \
    "$CODE $(j "$WORK/complete.json" "(d['event']['type'], d['event']['object'], d['event']['id'][:4], d['event']['livemode'], d['event']['data']['object']['payment_status'], d['event']['data']['object']['status'], d['event']['data']['object']['payment_intent'][:3])")" \
    "200 ('checkout.session.completed', 'event', 'evt_', False, 'paid', 'complete', 'pi_')"
"$PYTHON" -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["payload"])' "$WORK/complete.json" >"$WORK/payload"
SIG=$(j "$WORK/complete.json" "d['stripe_signature']")
T=${SIG#t=}; T=${T%%,*}
V1=$(printf '%s.' "$T" | cat - "$WORK/payload" | openssl dgst -sha256 -hmac whsec_pgcloud_test | awk '{print $NF}')
check "stripe: webhook signature = openssl HMAC-SHA256(secret, t.payload)" "$SIG" "t=$T,v1=$V1"
check "stripe: payload is the event, byte for byte" \
    "$("$PYTHON" -c 'import json,sys; a=json.load(open(sys.argv[1])); print(json.loads(a["payload"]) == a["event"])' "$WORK/complete.json")" True
check "stripe_sign.py agrees with openssl" \
    "$("$PYTHON" "$HERE/stripe_sign.py" --secret whsec_pgcloud_test --timestamp "$T" <"$WORK/payload")" "t=$T,v1=$V1"
http POST "$S/v1/checkout/sessions/$SID/_complete?t=1700000000&secrets=whsec_a,whsec_b"
"$PYTHON" -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["payload"])' "$WORK/body" >"$WORK/payload2"
A=$(printf '1700000000.' | cat - "$WORK/payload2" | openssl dgst -sha256 -hmac whsec_a | awk '{print $NF}')
B=$(printf '1700000000.' | cat - "$WORK/payload2" | openssl dgst -sha256 -hmac whsec_b | awk '{print $NF}')
check "stripe: chosen timestamp and two secrets -> two v1 entries" \
    "$(j "$WORK/body" "d['stripe_signature']")" "t=1700000000,v1=$A,v1=$B"
check "stripe: repeated _complete re-delivers the same event id" \
    "$(j "$WORK/body" "d['event']['id']")" "$(j "$WORK/complete.json" "d['event']['id']")"
PI=$(j "$WORK/complete.json" "d['event']['data']['object']['payment_intent']")

http POST "$S/v1/refunds" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: r1' \
    -d payment_intent="$PI" -d amount=1000 -d reason=requested_by_customer -d 'metadata[refund_id]=rf1'
check "stripe: partial refund -> re_ succeeded" \
    "$CODE $(j "$WORK/body" "(d['id'][:3], d['object'], d['amount'], d['status'], d['payment_intent'] == '$PI', d['metadata'])")" \
    "200 ('re_', 'refund', 1000, 'succeeded', True, {'refund_id': 'rf1'})"
http POST "$S/v1/refunds" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: r2' -d payment_intent="$PI" -d amount=2500
check "stripe: refund above the unrefunded amount -> 400 amount_too_large" \
    "$CODE $(j "$WORK/body" "d['error']['code'], d['error']['message']")" \
    "400 ('amount_too_large', 'Refund amount (\$25.00) is greater than unrefunded amount on charge (\$20.00)')"
http POST "$S/v1/refunds" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: r2' -d payment_intent="$PI" -d amount=2500
check "stripe: that error is saved under its key (replayed)" "$CODE $(hdr Idempotent-Replayed)" "400 true"
curl -s -o /dev/null -X POST "$S/_control" -d '{"refund_status": "pending"}'
http POST "$S/v1/refunds" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: r3' -d payment_intent="$PI"
RID=$(j "$WORK/body" "d['id']")
check "stripe: refund of the rest, pending by control" "$CODE $(j "$WORK/body" "d['amount'], d['status']")" "200 (2000, 'pending')"
http POST "$S/v1/refunds" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: r4' -d payment_intent="$PI" -d amount=1
check "stripe: fully refunded charge -> 400 charge_already_refunded" "$CODE $(j "$WORK/body" "d['error']['code']")" "400 charge_already_refunded"
http POST "$S/v1/refunds/$RID/_event?type=refund.updated&status=succeeded"
check "stripe: refund _event -> signed refund.updated with previous_attributes" \
    "$CODE $(j "$WORK/body" "(d['event']['type'], d['event']['data']['object']['status'], d['event']['data']['previous_attributes'], d['stripe_signature'].startswith('t='))")" \
    "200 ('refund.updated', 'succeeded', {'status': 'pending'}, True)"
http POST "$S/v1/refunds/$RID/_event?type=charge.refunded"
check "stripe: charge.refunded event carries the charge" \
    "$(j "$WORK/body" "(d['event']['data']['object']['object'], d['event']['data']['object']['amount_refunded'], d['event']['data']['object']['refunded'])")" \
    "('charge', 3000, True)"
curl -s -o /dev/null -X POST "$S/_control" -d '{}'
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: s2' "${SESSION_FORM[@]}" \
    -d 'payment_intent_data[metadata][payment_id]=pay-1'
SID2=$(j "$WORK/body" "d['id']")
http GET "$S/v1/checkout/sessions/$SID2/line_items" -H "Authorization: Bearer $KEY"
check "stripe: line_items list" "$(j "$WORK/body" "d['object'], d['data'][0]['amount_total'], d['data'][0]['quantity'], d['data'][0]['description']")" "('list', 3000, 2, 'GPU credit')"
http POST "$S/v1/checkout/sessions/$SID2/expire" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: x1'
check "stripe: expire -> expired, url null" "$CODE $(j "$WORK/body" "d['status'], d['url']")" "200 ('expired', None)"
http POST "$S/v1/checkout/sessions/$SID2/_event?type=checkout.session.expired&t=1700000001&v0=1"
check "stripe: session _event with a v0 entry" \
    "$(j "$WORK/body" "d['event']['type'], d['stripe_signature'].split(',')[0], [p[:3] for p in d['stripe_signature'].split(',')[1:]]")" \
    "('checkout.session.expired', 't=1700000001', ['v1=', 'v0='])"
http POST "$S/v1/checkout/sessions/$SID2/_complete"
check "stripe: _complete of an expired session -> 400" "$CODE" 400

# -- failure injection (generic, shared by the HTTP fakes) --
curl -s -o /dev/null -X POST "$S/_control" -d '{"fail_next": 2, "status": 500}'
codes=""
for _ in 1 2 3; do http GET "$S/v1/checkout/sessions/$SID" -H "Authorization: Bearer $KEY"; codes="$codes $CODE"; done
check "control: fail_next 2 status 500 -> 500 500 200" "$codes" " 500 500 200"
echo '{"status": 429, "retry_after": 2, "fail_next": 1}' >"$SD/control.json.tmp" && mv "$SD/control.json.tmp" "$SD/control.json"
http GET "$S/v1/checkout/sessions/$SID" -H "Authorization: Bearer $KEY"
c1="$CODE $(hdr Retry-After) $(j "$WORK/body" "d['error']['code']")"
http GET "$S/v1/checkout/sessions/$SID" -H "Authorization: Bearer $KEY"
check "control.json: 429 + Retry-After once, then 200" "$c1 $CODE" "429 2 rate_limit 200"
echo '{"path": "/v1/refunds", "status": 503}' >"$SD/control.json"
http GET "$S/v1/checkout/sessions/$SID" -H "Authorization: Bearer $KEY"
c1=$CODE
http GET "$S/v1/refunds/$RID" -H "Authorization: Bearer $KEY"
check "control: scoped by path prefix (sessions 200, refunds 503)" "$c1 $CODE" "200 503"
echo '{"delay_seconds": 1}' >"$SD/control.json"
t=$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $KEY" "$S/v1/checkout/sessions/$SID")
check "control: delay_seconds 1 answers after >= 1 s" "$(awk -v t="$t" 'BEGIN{print (t >= 1.0 && t < 3.0)}')" 1
echo '{"hang": true}' >"$SD/control.json"
curl -s -o "$WORK/hung" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$S/v1/checkout/sessions/$SID" >"$WORK/hung.code" &
HUNG=$!
t=$(curl -s -o /dev/null -m 1 -H "Authorization: Bearer $KEY" "$S/v1/checkout/sessions/$SID"; echo $?)
check "control: hang -> client times out (curl exit 28)" "$t" 28
: >"$SD/control.json"
wait "$HUNG"
check "control: a hung request is answered once the control is cleared" "$(cat "$WORK/hung.code")" 200
curl -s -o /dev/null -X POST "$S/_control" -d '{"drop_connection": true, "fail_next": 1}'
t=$(curl -s -o /dev/null -H "Authorization: Bearer $KEY" "$S/v1/checkout/sessions/$SID"; echo $?)
check "control: drop_connection -> empty reply (curl exit 52)" "$t" 52
curl -s -o /dev/null -X POST "$S/_control" -d '{"drop_connection": true, "phase": "after", "fail_next": 1, "path": "/v1/checkout"}'
t=$(curl -s -o /dev/null -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: lost1' "$S/v1/checkout/sessions" "${SESSION_FORM[@]}"; echo $?)
http POST "$S/v1/checkout/sessions" -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: lost1' "${SESSION_FORM[@]}"
check "control: phase after + drop = executed but unanswered; retry replays it" "$t $CODE $(hdr Idempotent-Replayed)" "52 200 true"
curl -s -o /dev/null -X POST "$S/_control" -d '{}'
http GET "$S/_control/requests?since=0"
check "control: GET /_control/requests lists the logged requests" \
    "$(j "$WORK/body" "len(d) == len(open('$SD/requests.jsonl').readlines()) and all(k in d[0] for k in ('method','path','query','headers','body','status'))")" True
check "log: requests.jsonl records injected failures" \
    "$("$PYTHON" -c '
import json,sys
inj=[json.loads(l)["injected"] for l in open(sys.argv[1])]
print(sorted(set(i for i in inj if i)))' "$SD/requests.jsonl")" "['drop_connection', 'hang', 'status']"

# TLS
SDT=$WORK/stripe-tls
start fake_stripe "$SDT" "${TLS[@]}" || bad "fake_stripe starts with TLS"
ST=https://127.0.0.1:$(cat "$SDT/port")
http GET "$ST/v1/checkout/sessions/cs_x" --cacert "$CA" -H "Authorization: Bearer $KEY"
check "tls: curl --cacert verifies the fake's certificate (https://127.0.0.1)" "$CURL_RC $CODE" "0 404"
http GET "https://localhost:$(cat "$SDT/port")/v1/checkout/sessions/cs_x" --cacert "$CA" -H "Authorization: Bearer $KEY"
check "tls: ... and https://localhost" "$CURL_RC $CODE" "0 404"
http GET "$ST/v1/checkout/sessions/cs_x" -H "Authorization: Bearer $KEY"
check "tls: without the CA bundle curl refuses (exit 60)" "$CURL_RC" 60
check "tls: openssl s_client verifies against the CA" \
    "$(echo | openssl s_client -connect "127.0.0.1:$(cat "$SDT/port")" -CAfile "$CA" -verify_return_error -verify_ip 127.0.0.1 2>/dev/null | grep 'Verify return code' | sed 's/^ *//' | sort -u)" "Verify return code: 0 (ok)"

kill -TERM "$STRIPE_PID"
for _ in $(seq 40); do kill -0 "$STRIPE_PID" 2>/dev/null || break; sleep 0.05; done
wait "$STRIPE_PID"; rc=$?
check "lifecycle: SIGTERM -> exit 0, port file removed" "$rc $([ -e "$SD/port" ] && echo present || echo gone)" "0 gone"

# =============================== MAAS =======================================
MD=$WORK/maas
start fake_maas "$MD" --deploy-seconds 0.6 --release-seconds 0.4 --commission-seconds 0.4 || bad "fake_maas starts"
M=http://127.0.0.1:$(cat "$MD/port")/MAAS/api/2.0
# oauth [secret] [timestamp] [nonce]: the header python-libmaas / the maas CLI send
# A fresh nonce each call: oauth runs in a command substitution (a subshell),
# so a counter kept in a variable never advances, and $RANDOM alone (15 bits)
# repeated within a run now and then (the fake then answers 401 "Nonce already
# used"); the subshell's own pid and the time in nanoseconds do not repeat.
oauth() {
    printf 'OAuth realm="", oauth_version="1.0", oauth_signature_method="PLAINTEXT", oauth_consumer_key="ck", oauth_token="tk", oauth_signature="&%s", oauth_nonce="%s", oauth_timestamp="%s"' \
        "${1:-sec}" "${3:-n$$-$BASHPID-$(date +%s%N)}" "${2:-$(date +%s)}"
}
maas() { local m=$1 p=$2; shift 2; http "$m" "$M/$p" -H "Authorization: $(oauth)" "$@"; }
status_of() { maas GET "machines/$1/"; j "$WORK/body" "d['status'], d['status_name']"; }
# wait_status ID CODE SECONDS
wait_status() {
    local end=$((SECONDS + $3))
    while [ $SECONDS -le $end ]; do
        maas GET "machines/$1/"
        [ "$(j "$WORK/body" "d['status']")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

http GET "$M/machines/"
check "maas: no OAuth header -> 401" "$CODE" 401
maas GET machines/
check "maas: list machines with a hand-made OAuth PLAINTEXT header" \
    "$CODE $(j "$WORK/body" "[(m['system_id'], m['hostname'], m['status'], m['status_name']) for m in d][:2], len(d)")" \
    "200 ([('abc123', 'gpu-node-1', 4, 'Ready'), ('abc124', 'gpu-node-2', 4, 'Ready')], 4)"
check "maas: machine JSON has the real field names" \
    "$(j "$WORK/body" "sorted(k for k in ('system_id','hostname','status','status_name','osystem','distro_series','owner','power_state','ip_addresses','cpu_count','memory','resource_uri') if k in d[0]).__len__(), d[0]['resource_uri']")" \
    "(12, '/MAAS/api/2.0/machines/abc123/')"
H=$(oauth sec "$(date +%s)" fixed-nonce-1)
http GET "$M/machines/abc123/" -H "Authorization: $H"
c1=$CODE
http GET "$M/machines/abc123/" -H "Authorization: $H"
check "maas: reused nonce -> 401" "$c1 $CODE" "200 401"
http GET "$M/machines/" -H "Authorization: $(oauth sec $(($(date +%s) - 1000)))"
check "maas: timestamp 1000 s old -> 401" "$CODE" 401
http GET "$M/machines/" -H "Authorization: $(oauth wrong)"
check "maas: wrong token secret -> 401" "$CODE" 401
http GET "$M/machines/" -H "Authorization: OAuth oauth_nonce=\"x$RANDOM$$\",oauth_timestamp=\"$(date +%s)\",oauth_version=\"1.0\",oauth_signature_method=\"PLAINTEXT\",oauth_consumer_key=\"ck\",oauth_token=\"tk\",oauth_signature=\"%26sec\",realm=\"OAuth\""
check "maas: oauthlib style (other order, no spaces, %26-encoded signature) accepted" "$CODE" 200
check "maas: auth verdicts logged" \
    "$("$PYTHON" -c '
import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
print([x["auth_ok"] for x in e][:7], e[3]["auth_reason"])' "$MD/requests.jsonl")" \
    "[False, True, True, False, False, False, True] Nonce already used: fixed-nonce-1"

maas POST "machines/?op=allocate" -d system_id=abc123
check "maas: allocate abc123 -> Allocated, owner set" "$CODE $(j "$WORK/body" "d['status'], d['status_name'], d['owner']")" "200 (10, 'Allocated', 'pgcloud')"
maas POST "machines/?op=allocate" -d system_id=abc123
check "maas: allocate a machine that is not Ready -> 409" "$CODE" 409
printf '#cloud-config\nusers: [pgcloud]\n' >"$WORK/user-data"
UD=$(base64 -w0 "$WORK/user-data")
maas POST "machines/abc123/?op=deploy" -F distro_series=jammy -F "user_data=$UD"
check "maas: deploy (multipart form) -> Deploying" "$CODE $(j "$WORK/body" "d['status'], d['status_name'], d['distro_series'], d['power_state']")" "200 (9, 'Deploying', 'jammy', 'on')"
check "maas: user_data base64-decoded into the log" \
    "$("$PYTHON" -c '
import json,sys
e=[json.loads(l) for l in open(sys.argv[1])][-1]
print(e["user_data"] == open(sys.argv[2]).read(), e["op"], e["form"]["distro_series"])' "$MD/requests.jsonl" "$WORK/user-data")" "True deploy jammy"
check_cmd "maas: Deploying -> Deployed on the clock" wait_status abc123 6 3
check "maas: deployed machine has an address and power on" "$(j "$WORK/body" "bool(d['ip_addresses']), d['power_state'], d['osystem']")" "(True, 'on', 'ubuntu')"

echo '{"fail_deploy": ["abc124"], "stall": ["abc125"]}' >"$MD/control.json"
maas POST "machines/?op=allocate" -d system_id=abc124
maas POST "machines/abc124/?op=deploy" -d distro_series=jammy
maas POST "machines/abc125/?op=deploy" -d distro_series=noble
check "maas: deploy of a Ready machine allocates it (as MAAS does)" "$CODE $(j "$WORK/body" "d['status'], d['owner']")" "200 (9, 'pgcloud')"
check_cmd "maas: fail_deploy -> Failed deployment" wait_status abc124 11 3
sleep 0.4
check "maas: stall -> still Deploying after the deploy time" "$(status_of abc125)" "(9, 'Deploying')"
: >"$MD/control.json"
check_cmd "maas: stall cleared -> Deployed" wait_status abc125 6 3

maas POST "machines/abc123/?op=release" -d erase=true
check "maas: release erase=true -> Disk erasing" "$CODE $(j "$WORK/body" "d['status_name']")" "200 Disk erasing"
check_cmd "maas: Disk erasing -> Ready" wait_status abc123 4 3
check "maas: released machine has no owner" "$(j "$WORK/body" "d['owner'], d['distro_series'], d['power_state']")" "(None, '', 'off')"
maas POST "machines/abc125/?op=release"
check "maas: release -> Releasing" "$(j "$WORK/body" "d['status']")" 12
check_cmd "maas: Releasing -> Ready" wait_status abc125 4 3
maas POST "machines/abc123/?op=release"
check "maas: release of a Ready machine -> 409" "$CODE" 409
maas POST "machines/abc126/?op=commission"
check "maas: commission -> Commissioning" "$(j "$WORK/body" "d['status']")" 1
check_cmd "maas: Commissioning -> Ready" wait_status abc126 4 3
check "maas: transitions happen in order (history)" \
    "$(curl -s "http://127.0.0.1:$(cat "$MD/port")/_control/state" -o "$WORK/state"; j "$WORK/state" "[h['status'] for h in d['machines']['abc123']['history']]")" \
    "[4, 10, 9, 6, 14, 4]"
echo '{"broken": ["abc126"]}' >"$MD/control.json"
check_cmd "maas: broken by control -> Broken" wait_status abc126 8 2
: >"$MD/control.json"
maas POST "machines/abc126/?op=mark_fixed"
check "maas: mark_fixed -> Ready" "$CODE $(j "$WORK/body" "d['status_name']")" "200 Ready"
maas GET "users/?op=whoami"
check "maas: whoami" "$CODE $(j "$WORK/body" "d['username']")" "200 pgcloud"
maas POST "machines/abc123/?op=deploy" -d distro_series=bionic
check "maas: unknown distro_series -> 400 with field errors" "$CODE $(j "$WORK/body" "list(d)")" "400 ['distro_series']"
maas POST "machines/abc123/?op=deploy" -d distro_series=jammy -d 'user_data=***'
check "maas: user_data not base64 -> 400" "$CODE" 400
maas POST "machines/abc123/?op=frobnicate"
check "maas: unknown op -> 400 Unrecognised signature" "$CODE $(head -c 22 "$WORK/body")" "400 Unrecognised signature"
maas GET "machines/nosuch/"
check "maas: unknown machine -> 404" "$CODE" 404
curl -s -o /dev/null -X POST "http://127.0.0.1:$(cat "$MD/port")/_control" -d '{"op": "deploy", "status": 503, "retry_after": 1, "fail_next": 1}'
maas GET "machines/abc123/"
c1=$CODE
maas POST "machines/abc123/?op=deploy" -d distro_series=jammy
c2="$CODE $(hdr Retry-After)"
maas POST "machines/abc123/?op=deploy" -d distro_series=jammy
check "maas: control scoped by op (read 200, deploy 503 once, then 200)" "$c1 $c2 $CODE" "200 503 1 200"
MDT=$WORK/maas-tls
start fake_maas "$MDT" "${TLS[@]}" --machines 1 --api-key c2:t2:s2 || bad "fake_maas starts with TLS"
http GET "https://localhost:$(cat "$MDT/port")/MAAS/api/2.0/machines/" --cacert "$CA" \
    -H "Authorization: OAuth realm=\"\", oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"c2\", oauth_token=\"t2\", oauth_signature=\"&s2\", oauth_nonce=\"tls1\", oauth_timestamp=\"$(date +%s)\""
check "maas: HTTPS, --api-key and --machines honoured" "$CURL_RC $CODE $(j "$WORK/body" "len(d)")" "0 200 1"

# =============================== SMTP =======================================
cat >"$WORK/smtp_client.py" <<'PY'
import smtplib, ssl, sys
mode, port = sys.argv[1], int(sys.argv[2])
msg = ("From: PGcloud <noreply@pgcloud.test>\r\nTo: alice@example.com\r\n"
       "Subject: Low balance\r\n\r\nHello.\r\n.hidden line starts with a dot\r\n..two dots\r\nBye.\r\n")
try:
    if mode == "ssl":
        s = smtplib.SMTP_SSL("localhost", port, context=ssl.create_default_context(cafile=sys.argv[3]), timeout=5)
    else:
        s = smtplib.SMTP("127.0.0.1", port, timeout=5)
    if mode == "starttls":
        s.ehlo(); s.starttls(context=ssl.create_default_context(cafile=sys.argv[3]))
    if mode == "auth":
        s.login("mailer", sys.argv[3])
    if mode == "login":
        s.ehlo(); s.user, s.password = "mailer", sys.argv[3]
        s.auth("LOGIN", s.auth_login, initial_response_ok=False)
    if mode == "noauth":
        s.ehlo()
        print(s.mail("a@pgcloud.test")[0]); sys.exit(0)
    refused = s.sendmail("noreply@pgcloud.test", ["alice@example.com", "bob@example.com"], msg)
    s.quit()
    print("sent", sorted(refused))
except smtplib.SMTPRecipientsRefused as e:
    print("refused", sorted(c for c, _ in e.recipients.values()))
except smtplib.SMTPAuthenticationError as e:
    print("auth", e.smtp_code)
except smtplib.SMTPServerDisconnected:
    print("disconnected")
except smtplib.SMTPResponseException as e:
    print("error", e.smtp_code)
PY
smtp() { "$PYTHON" "$WORK/smtp_client.py" "$@" 2>&1; }
ED=$WORK/smtp
start fake_smtp "$ED" || bad "fake_smtp starts"
EP=$(cat "$ED/port")
check "smtp: smtplib sends to two recipients" "$(smtp plain "$EP")" "sent []"
check "smtp: message stored (from, rcpts, Subject, To, dot-stuffing undone)" \
    "$("$PYTHON" -c '
import json,sys
m=[json.loads(l) for l in open(sys.argv[1])][-1]
print(m["mail_from"], m["rcpt_to"], m["subject"], m["to"], ".hidden line starts with a dot\r\n..two dots\r\n" in m["data"])' "$ED/messages.jsonl")" \
    "noreply@pgcloud.test ['alice@example.com', 'bob@example.com'] Low balance alice@example.com True"
printf 'From: noreply@pgcloud.test\r\nTo: carol@example.com\r\nSubject: via libcurl\r\n\r\nbody\r\n.\r\n' >"$WORK/mail.txt"
curl -s --url "smtp://127.0.0.1:$EP" --mail-from noreply@pgcloud.test --mail-rcpt carol@example.com -T "$WORK/mail.txt"
check "smtp: curl (libcurl, as pgcloud) delivers" "$? $("$PYTHON" -c '
import json,sys
m=[json.loads(l) for l in open(sys.argv[1])][-1]
print(m["subject"], m["rcpt_to"], m["data"].endswith("body\r\n.\r\n"))' "$ED/messages.jsonl")" \
    "0 via libcurl ['carol@example.com'] True"
echo '{"reject_rcpt": "451", "fail_next": 1}' >"$ED/control.json"
check "smtp: reject_rcpt 451 fail_next 1 -> first RCPT 451, second accepted" "$(smtp plain "$EP")" "sent ['alice@example.com']"
echo '{"reject_rcpt": "550"}' >"$ED/control.json"
check "smtp: reject_rcpt 550 -> all recipients refused" "$(smtp plain "$EP")" "refused [550, 550]"
echo '{"drop_connection": true}' >"$ED/control.json"
check "smtp: drop_connection -> client sees a disconnect" "$(smtp plain "$EP")" "disconnected"
n_before=$(wc -l <"$ED/messages.jsonl")
echo '{"command": "END-OF-DATA", "drop_connection": true}' >"$ED/control.json"
check "smtp: drop after the message data -> disconnect, nothing stored" "$(smtp plain "$EP") $(wc -l <"$ED/messages.jsonl")" "disconnected $n_before"
echo '{"delay_seconds": 0.3}' >"$ED/control.json"
s0=$(date +%s%N); r=$(smtp plain "$EP"); s1=$(date +%s%N)
check "smtp: delay_seconds slows every reply" "$r $(( (s1 - s0) / 1000000 >= 1500 ))" "sent [] 1"
echo '{"reject_data": "554", "fail_next": 1}' >"$ED/control.json"
n_before=$(wc -l <"$ED/messages.jsonl")
check "smtp: reject_data 554 -> message refused, not stored" "$(smtp plain "$EP") $(wc -l <"$ED/messages.jsonl")" "error 554 $n_before"
echo '{"reject_mail": "451"}' >"$ED/control.json"
check "smtp: reject_mail 451" "$(smtp plain "$EP")" "error 451"
echo '{"reject_connect": "421"}' >"$ED/control.json"
check "smtp: reject_connect 421 at the greeting" "$(smtp plain "$EP")" "error 421"
echo '{"command": "RCPT", "hang": true}' >"$ED/control.json"
check "smtp: hang on RCPT -> client times out" "$(timeout 5 "$PYTHON" -c '
import smtplib,socket,sys
s=smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=1); s.ehlo(); s.mail("a@pgcloud.test")
try:
    s.rcpt("b@example.com"); print("answered")
except smtplib.SMTPServerDisconnected as e: print("timeout" if "timed out" in str(e) else e)' "$EP" 2>&1)" timeout
: >"$ED/control.json"
check "smtp: commands logged to requests.jsonl" \
    "$("$PYTHON" -c '
import json,sys
e=[json.loads(l) for l in open(sys.argv[1])]
print(sorted(set(x["command"] for x in e) & {"CONNECT","EHLO","MAIL","RCPT","DATA","END-OF-DATA","QUIT"}).__len__(), any(x["status"] == 451 for x in e))' "$ED/requests.jsonl")" "7 True"

EA=$WORK/smtp-auth
start fake_smtp "$EA" --user mailer --password s3cret || bad "fake_smtp starts with --user"
EAP=$(cat "$EA/port")
check "smtp: MAIL before AUTH -> 530" "$(smtp noauth "$EAP")" 530
check "smtp: AUTH PLAIN (smtplib login) and send" "$(smtp auth "$EAP" s3cret)" "sent []"
check "smtp: AUTH LOGIN and send" "$(smtp login "$EAP" s3cret)" "sent []"
check "smtp: wrong password -> 535" "$(smtp auth "$EAP" nope)" "auth 535"
curl -s --url "smtp://127.0.0.1:$EAP" --user mailer:s3cret --mail-from noreply@pgcloud.test --mail-rcpt carol@example.com -T "$WORK/mail.txt"
check "smtp: curl with --user authenticates" "$? $("$PYTHON" -c '
import json,sys
print([json.loads(l) for l in open(sys.argv[1])][-1]["auth_user"])' "$EA/messages.jsonl")" "0 mailer"

ES=$WORK/smtps
start fake_smtp "$ES" "${TLS[@]}" || bad "fake_smtp starts with TLS"
check "smtp: implicit TLS (smtplib SMTP_SSL verifying the CA)" "$(smtp ssl "$(cat "$ES/port")" "$CA")" "sent []"
curl -s --url "smtps://localhost:$(cat "$ES/port")" --cacert "$CA" --mail-from noreply@pgcloud.test --mail-rcpt carol@example.com -T "$WORK/mail.txt"
check "smtp: curl smtps:// with --cacert" "$?" 0
EST=$WORK/smtp-starttls
start fake_smtp "$EST" "${TLS[@]}" --starttls || bad "fake_smtp starts with --starttls"
check "smtp: STARTTLS (smtplib)" "$(smtp starttls "$(cat "$EST/port")" "$CA")" "sent []"
check "smtp: message marked as received over TLS" "$("$PYTHON" -c '
import json,sys
print([json.loads(l) for l in open(sys.argv[1])][-1]["tls"])' "$EST/messages.jsonl")" True

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
