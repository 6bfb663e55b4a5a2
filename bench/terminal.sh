#!/bin/bash
# Terminal relay benchmark (issue 11). One command:  bench/terminal.sh
# Starts a private cluster, a throwaway sshd (the node, trusting the platform
# CA) and the relay (termrelay/pgcloud-termrelay, TLS), then with
# bench/terminal_client.mjs (node --experimental-websocket):
#   1. opens IDLE (200) sessions and reads the relay's RSS before and after:
#      memory per held session;
#   2. keystroke round trip (one byte in, its PTY echo back, `cat` running)
#      through browser-side WebSocket -> relay -> sshd, against a direct
#      `ssh -tt` to the same sshd, in the same run (RTT_N = 300 each);
#   3. opens STREAMING (20) more sessions running `yes` flat out for
#      STREAM_SECONDS (10): throughput, RSS, and the round trips again.
# Appends the figures to bench/RESULTS.md. Run as root; the sshd runs as the
# postgres user, which must be in group tty (scripts/deps.sh does that).
set -euo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
IDLE=${IDLE:-200}
STREAMING=${STREAMING:-20}
RTT_N=${RTT_N:-300}
STREAM_SECONDS=${STREAM_SECONDS:-10}
[ "$(id -u)" = 0 ] || { echo "bench/terminal.sh runs as root" >&2; exit 1; }
WORK=$(mktemp -d /tmp/pgcloud-bench-term.XXXXXX)
chmod 755 "$WORK"
chown "$RUN_USER" "$WORK"
PORT=$(free_port)
export PGCLOUD_DATA=$WORK/cluster PGCLOUD_PORT=$PORT PGCLOUD_DB=bench
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/cluster.sh stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

make -s >/dev/null
if [ -w "$($PG_CONFIG --pkglibdir)" ]; then make -s install >/dev/null; else sudo make -s install >/dev/null; fi
scripts/cluster.sh start >/dev/null 2>&1
cat >> "$PGCLOUD_DATA/postgresql.conf" <<CONF
pgcloud.databases = ''
synchronous_commit = off
CONF
scripts/cluster.sh stop >/dev/null; scripts/cluster.sh start >/dev/null 2>&1
psql_b() { scripts/cluster.sh psql -X -q -At "$@"; }

USER_ID=be000000-0000-4000-8000-000000000001
ALLOC=be000000-0000-4000-8000-00000000a001
SID=be000000-0000-4000-8000-0000000005a1
LOGIN=$RUN_USER
psql_b <<SQL >/dev/null
SELECT pgcloud.deliver('releases', gen_random_uuid(), 'user.created', 'user', '$USER_ID', jsonb_build_object('user_id', '$USER_ID', 'posix_username', '$LOGIN'), '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'user.created', 'user', '$USER_ID', jsonb_build_object('user_id', '$USER_ID', 'posix_username', '$LOGIN'), '{}');
SELECT pgcloud.deliver('releases', gen_random_uuid(), 'allocation.activated', 'allocation', '$ALLOC',
    jsonb_build_object('allocation_id', '$ALLOC', 'user_id', '$USER_ID', 'hostname', 'bench-node', 'ssh_principal', 'pgcloud-alloc-$ALLOC'), '{}');
SELECT pgcloud.deliver('terminal', gen_random_uuid(), 'allocation.activated', 'allocation', '$ALLOC',
    jsonb_build_object('allocation_id', '$ALLOC', 'user_id', '$USER_ID', 'node_hostname', 'bench-node', 'ip_addresses', jsonb_build_array('127.0.0.1')), '{}');
UPDATE pgcloud.policy_values SET value = '600' WHERE key = 'terminal.token_ttl_seconds';
SQL
N_TOKENS=$((IDLE + STREAMING + 10))
psql_b > "$WORK/tokens" <<SQL
SET request.jwt.claims = '{"role": "pgcloud_user", "sub": "$USER_ID", "sid": "$SID"}';
SELECT api.mint_terminal_token('$ALLOC') ->> 'token' FROM generate_series(1, $N_TOKENS);
SQL
sed -i '/^SET$/d;/^$/d' "$WORK/tokens"

# ---- the node: sshd as the login user (as in the TAP tests), trusting the platform CA ----
mkdir -p "$WORK/node"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/node/hostkey"
psql_b -c 'SELECT api.ssh_ca_public_key()' > "$WORK/node/ca.pub"
echo "pgcloud-alloc-$ALLOC" > "$WORK/node/principals"
SSH_PORT=$(free_port)
cat > "$WORK/node/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $WORK/node/hostkey
PidFile $WORK/node/sshd.pid
TrustedUserCAKeys $WORK/node/ca.pub
AuthorizedPrincipalsFile $WORK/node/principals
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxSessions 1000
MaxStartups 1000
StrictModes no
LogLevel ERROR
CONF
chown -R "$RUN_USER" "$WORK/node"
runuser -u "$RUN_USER" -- /usr/sbin/sshd -D -e -f "$WORK/node/sshd_config" 2>"$WORK/node/sshd.log" &
PIDS+=($!)
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$WORK/node/hostkey.pub")" > "$WORK/node/known_hosts"

# A key with a certificate for the direct ssh baseline.
ssh-keygen -q -t ed25519 -N '' -f "$WORK/direct"
psql_b > "$WORK/direct-cert.pub" <<SQL
SET request.jwt.claims = '{"role": "pgcloud_service", "sub": "be000000-0000-4000-8000-00000000beef", "scopes": "access:mint"}';
SELECT api.service_mint_access('$ALLOC', '$(cut -d' ' -f1,2 "$WORK/direct.pub")', NULL, 'bench') ->> 'certificate';
SQL
sed -i '/^SET$/d;/^$/d' "$WORK/direct-cert.pub"

# ---- the relay ----
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >/dev/null 2>&1
RELAY_PORT=$(free_port)
cat > "$WORK/relay.conf" <<CONF
listen = 127.0.0.1
port = $RELAY_PORT
tls_certificate = $WORK/tls.crt
tls_private_key = $WORK/tls.key
static_dir = $REPO/termrelay/build/www
conninfo = host=$PGCLOUD_DATA/run port=$PORT dbname=bench user=$RUN_USER
service_account = be000000-0000-4000-8000-00000000beef
relay_name = relay-bench
ssh_port = $SSH_PORT
known_hosts = $WORK/node/known_hosts
idle_timeout_seconds = 3600
heartbeat_ms = 1000
max_sessions = 5000
CONF
( ulimit -n 8192; exec termrelay/pgcloud-termrelay "$WORK/relay.conf" 2>"$WORK/relay.log" ) &
RELAY_PID=$!
PIDS+=($RELAY_PID)
sleep 1

cat > "$WORK/client.json" <<JSON
{"url": "wss://127.0.0.1:$RELAY_PORT/ws", "tokens": "$WORK/tokens", "relay_pid": $RELAY_PID,
 "idle": $IDLE, "streaming": $STREAMING, "rtt_n": $RTT_N, "stream_seconds": $STREAM_SECONDS,
 "ssh_args": ["-tt", "-F", "/dev/null", "-i", "$WORK/direct", "-o", "CertificateFile=$WORK/direct-cert.pub",
              "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
              "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-p", "$SSH_PORT", "$LOGIN@127.0.0.1"]}
JSON
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
RESULT=$(ulimit -n 8192; NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings --experimental-websocket bench/terminal_client.mjs "$WORK/client.json")
echo "$RESULT"
# The relay ends each session (SSH close, end recorded with its bytes); wait until none is live.
T0=$(date +%s.%N)
for _ in $(seq 1 600); do
    LIVE=$(psql_b -c "SELECT count(*) FROM terminal.sessions WHERE state = 'live'")
    [ "$LIVE" = 0 ] && break
    sleep 0.2
done
DRAIN=$(python3 -c "import time; print(round(time.time() - $T0, 1))")
ENDED=$(psql_b -c "SELECT count(*) FROM pgcloud.audit_logs WHERE action = 'terminal.session_ended'")

python3 - "$RESULT" "$LOAD" "$IDLE" "$STREAMING" "$RTT_N" "$STREAM_SECONDS" "$LIVE" "$ENDED" "$DRAIN" >> bench/RESULTS.md <<'PY'
import json, sys, datetime
r = json.loads(sys.argv[1]); load, idle, streaming, rtt_n, secs, live, ended, drain = sys.argv[2:]
def rtt(x): return f"{x['p50_ms']} / {x['p99_ms']}"
print(f"""
## Terminal relay: sessions held, memory, keystroke round trips ({datetime.date.today()}, 2 cores)

Command: `bench/terminal.sh` (IDLE={idle}, STREAMING={streaming}, RTT_N={rtt_n}, STREAM_SECONDS={secs}).
Relay, sshd, PostgreSQL and the client share the machine; TLS between client and relay; each session is its
own SSH connection with its own ephemeral key and certificate. Load average at the start: {load}.

| sessions | figure |
|---|---|
| idle sessions opened | {r['idle_opened']} of {idle} ({r['idle_failed']} failed) in {r['open_seconds']} s |
| relay RSS empty / with {r['idle_opened']} idle sessions | {r['relay_rss_kb_empty']} KiB / {r['relay_rss_kb_idle']} KiB |
| **relay memory per idle session** | **{r['relay_kb_per_idle_session']} KiB** |
| sessions held at the peak (idle + probe + streaming) | {r['sessions_held_at_peak']} |
| relay RSS while {streaming} sessions stream | {r['relay_rss_kb_streaming']} KiB |
| streaming throughput, all / per session | {r['streaming_total_mb_per_s']} MB/s / {r['streaming_per_session_mb_per_s']} MB/s |
| after the client closed all: sessions still live / ends audited (with bytes) | {live} / {ended}, {drain} s after the client finished (its own 2 s wait included before) |

| keystroke round trip (p50 / p99, ms) | through the relay (WebSocket + relay + sshd) | direct `ssh -tt` to the same sshd |
|---|---|---|
| with {r['idle_opened']} idle sessions held | {rtt(r['rtt_relay_idle_load'])} | {rtt(r['rtt_direct_ssh_idle_load'])} |
| while {streaming} sessions stream | {rtt(r['rtt_relay_streaming_load'])} | {rtt(r['rtt_direct_ssh_streaming_load'])} |
""")
PY
echo "appended to bench/RESULTS.md"
