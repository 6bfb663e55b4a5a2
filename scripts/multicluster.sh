#!/bin/bash
# A deployment shape of registry/deployments.conf on one machine, from the
# files `make generate` wrote into deploy/<shape>/ (default shape: multi,
# three PostgreSQL clusters joined only by a 3-node NATS JetStream cluster).
#
#   scripts/multicluster.sh up     [SHAPE]  NATS nodes (TLS, per-service users),
#                                           the stream (3 replicas), each cluster
#                                           (initdb, its settings, its databases)
#   scripts/multicluster.sh down   [SHAPE]  stops everything (data stays)
#   scripts/multicluster.sh destroy [SHAPE] stops and deletes the data
#   scripts/multicluster.sh status [SHAPE]  what runs, and the event health
#   scripts/multicluster.sh lag    [SHAPE]  the operator query of every database
#                                           and each durable's pending messages
#   scripts/multicluster.sh keys   [SHAPE]  each service's PostgREST config and
#                                           jwt-secret from its own database (after
#                                           a signing-key rotation, before it signs)
#   scripts/multicluster.sh psql SERVICE [psql args]  psql in a service's database
#   scripts/multicluster.sh cluster-stop|cluster-start CLUSTER   one cluster (drills)
#
# Each service's PostgREST logs in as pgcloud_authenticator_<service> (its
# password in $PGCLOUD_MULTI_DIR/pg-passwords.env and pgpass); the clusters'
# pg_hba.conf is the generated one (deploy/<shape>/<cluster>/pg_hba.conf).
# Environment: PGCLOUD_MULTI_DIR (default /var/tmp/multi-pgcloud-<shape>),
# PGCLOUD_MULTI_PORT_SHIFT (added to every generated port; default 0),
# PGCLOUD_MULTI_SETTINGS (extra postgresql.conf lines for every cluster, e.g.
# pgcloud.maas_url). pgcloud must be installed in the PostgreSQL that
# PG_CONFIG (or PGCLOUD_PG_ROOT) names: make install.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
pgcloud_stage "$0" "$@"

CMD=${1:-}
SHAPE=${2:-multi}
case "$CMD" in psql|cluster-*) SHAPE=${PGCLOUD_MULTI_SHAPE:-multi} ;; esac
GEN=$REPO/deploy/$SHAPE
[ -f "$GEN/layout.tsv" ] || { echo "no shape $SHAPE (deploy/$SHAPE/layout.tsv): see registry/deployments.conf" >&2; exit 2; }
DIR=${PGCLOUD_MULTI_DIR:-/var/tmp/multi-pgcloud-$SHAPE}
SHIFT=${PGCLOUD_MULTI_PORT_SHIFT:-0}
NATSTOOL=$DIR/bin/natstool

# The generated files with every port shifted and the operator's paths made local.
localize() {
    perl -pe "s/(127\\.0\\.0\\.1:)(\\d+)/\$1.(\$2+$SHIFT)/ge; s/^port = (\\d+)/'port = '.(\$1+$SHIFT)/e;
              s{/etc/pgcloud/nats/}{$DIR/certs/}g; s{/var/lib/nats/}{$DIR/nats/store/}g" "$1"
}
clusters() { grep -v '^#' "$GEN/layout.tsv" | awk '{print $1, $2 + '"$SHIFT"'}' | sort -u -k1,1; }
databases_of() { grep -v '^#' "$GEN/layout.tsv" | awk -v c="$1" '$1 == c {print $3, $4}'; }
nats_nodes() { [ -d "$GEN/nats" ] && (cd "$GEN/nats" && ls n*.conf 2>/dev/null | sed 's/\.conf$//'); }
node_port() { localize "$GEN/nats/$1.conf" | sed -n 's/^listen: 127\.0\.0\.1:\([0-9]*\)$/\1/p'; }
monitor_port() { localize "$GEN/nats/$1.conf" | sed -n 's/^http: 127\.0\.0\.1:\([0-9]*\)$/\1/p'; }
pgdata() { echo "$DIR/pg-$1"; }
psql_at() { local port=$1; shift; as_runner psql -X -q -v ON_ERROR_STOP=1 -h "$DIR/run" -p "$port" "$@"; }
wait_port() { for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
operator_url() { echo "tls://pgcloud_operator:$(password OPERATOR)@127.0.0.1:$(node_port "$(nats_nodes | head -n 1)")"; }
password() { sed -n "s/^PGCLOUD_NATS_PASSWORD_$1=//p" "$DIR/nats/passwords.env"; }
pg_password() { sed -n "s/^PGCLOUD_PG_PASSWORD_$1=//p" "$DIR/pg-passwords.env"; }
# A live process (a killed node may linger as a zombie where nobody reaps it).
alive() { [ -f "$1" ] && [ -n "$(ps -o stat= -p "$(cat "$1")" 2>/dev/null | grep -v Z)" ]; }
natstool() { NATSTOOL_CA=$DIR/certs/ca.pem NATSTOOL_INBOX=_INBOX_pgcloud_operator "$NATSTOOL" "$@"; }

secrets() {
    mkdir -p "$DIR/certs" "$DIR/nats/store" "$DIR/run" "$DIR/bin"
    if [ ! -f "$DIR/certs/ca.pem" ]; then
        bash "$REPO/test/fakes/make_certs.sh" "$DIR/certs.tmp" >/dev/null
        cp "$DIR/certs.tmp/ca.crt" "$DIR/certs/ca.pem"
        cp "$DIR/certs.tmp/server.crt" "$DIR/certs/server-cert.pem"
        cp "$DIR/certs.tmp/server.key" "$DIR/certs/server-key.pem"
        rm -rf "$DIR/certs.tmp"
    fi
    if [ ! -f "$DIR/nats/passwords.env" ]; then
        (umask 077
         for v in $(grep -o 'PGCLOUD_NATS_PASSWORD_[A-Z_]*' "$REPO/deploy/nats/authorization.conf" | sort -u); do
             echo "$v=pw$(openssl rand -hex 16)"   # a letter first: nats-server parses the value
         done > "$DIR/nats/passwords.env")
    fi
    if [ ! -f "$DIR/pg-passwords.env" ]; then
        # Each service's PostgREST login role (pgcloud_authenticator_<service>).
        (umask 077
         grep -v '^#' "$GEN/layout.tsv" | awk '{print $4}' | { grep -v , || true; } | sort -u | while read -r svc; do
             echo "PGCLOUD_PG_PASSWORD_$(echo "$svc" | tr a-z A-Z)=pg$(openssl rand -hex 16)"
         done > "$DIR/pg-passwords.env")
    fi
    [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$DIR/run"
    [ -x "$NATSTOOL" ] || gcc -O2 -o "$NATSTOOL" "$REPO/test/tools/natstool.c" -lnats
}

keys() {
    # Each service's PostgREST configuration and jwt-secret, from its own
    # database: the key set auth announced (signing_key.published, learnt by
    # every database) or, in auth's database, api.jwks(). A database that has
    # learnt nothing yet (no rotation since the deployment came up) gets
    # auth's current set. Run after api.admin_rotate_signing_key() (and
    # reload PostgREST: SIGUSR2) within its activate_after_seconds.
    mkdir -p "$DIR/postgrest"
    local auth_line; auth_line=$(grep -v '^#' "$GEN/layout.tsv" | awk '$4 ~ /(^|,)auth(,|$)/' | head -n 1)
    grep -v '^#' "$GEN/layout.tsv" | while read -r c port db svcs; do
        port=$(( port + SHIFT ))
        for svc in ${svcs//,/ }; do
            local out=$DIR/postgrest/$svc.jwks.json set from
            if [ "$db" = "$(echo "$auth_line" | awk '{print $3}')" ]; then
                set=$(psql_at "$port" -d "$db" -tAc 'SELECT api.jwks()'); from=auth
            else
                set=$(psql_at "$port" -d "$db" -tAc 'SELECT pgcloud.published_jwks()'); from=learnt
                if [ -z "$set" ]; then
                    set=$(psql_at $(( $(echo "$auth_line" | awk '{print $2}') + SHIFT )) -d "$(echo "$auth_line" | awk '{print $3}')" -tAc 'SELECT api.jwks()')
                    from=initial
                fi
            fi
            (umask 022; printf '%s\n' "$set" > "$out.tmp" && mv "$out.tmp" "$out")
            perl -pe "s{(\@[\w.-]+:)(\d+)/}{\$1.(\$2+$SHIFT).'/'}e; s{^jwt-secret = .*}{jwt-secret = \"\@$out\"}" \
                "$GEN/postgrest/$svc.conf" > "$DIR/postgrest/$svc.conf"
            echo "keys $svc $from $(printf '%s' "$set" | python3 -c 'import json,sys; print(",".join(k["kid"] for k in json.load(sys.stdin)["keys"]))')"
        done
    done
}

nats_up() {
    [ -d "$GEN/nats" ] || return 0
    localize "$GEN/nats/authorization.conf" > "$DIR/nats/authorization.conf"
    for n in $(nats_nodes); do
        localize "$GEN/nats/$n.conf" > "$DIR/nats/$n.conf"
        local pidf=$DIR/nats/$n.pid
        if alive "$pidf"; then continue; fi
        (set -a; . "$DIR/nats/passwords.env"; set +a
         exec nats-server -c "$DIR/nats/$n.conf" >> "$DIR/nats/$n.log" 2>&1) &
        echo $! > "$pidf"
    done
    for n in $(nats_nodes); do wait_port "$(node_port "$n")" || { echo "NATS node $n did not start: $DIR/nats/$n.log" >&2; tail -n 20 "$DIR/nats/$n.log" >&2; exit 1; }; done
    # The stream, as the operator, with the replicas of streams.json, once
    # the JetStream cluster has a meta leader.
    local replicas; replicas=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["streams"][0]["num_replicas"])' "$GEN/nats/streams.json")
    for _ in $(seq 1 60); do
        NATSTOOL_REPLICAS=$replicas natstool stream "$(operator_url)" PGCLOUD_EVENTS 'pgcloud.>' >/dev/null 2>&1 || true
        if natstool info "$(operator_url)" PGCLOUD_EVENTS 2>/dev/null | grep -q "replicas=$replicas leader=n"; then
            # A node that rejoins catches its replica up from the leader:
            # wait (bounded) until every replica is current again.
            for _ in $(seq 1 60); do
                natstool info "$(operator_url)" PGCLOUD_EVENTS 2>/dev/null | grep -q "current=$replicas " && break
                sleep 1
            done
            echo "NATS: $(nats_nodes | wc -l) nodes, stream PGCLOUD_EVENTS: $(natstool info "$(operator_url)" PGCLOUD_EVENTS)"
            return 0
        fi
        sleep 1
    done
    echo "the JetStream cluster did not accept the stream (see $DIR/nats/*.log)" >&2
    exit 1
}

pg_up() {
    local c=$1 port=$2 data; data=$(pgdata "$c")
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data"
        [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$data"
        chmod 700 "$data"
        as_runner initdb -D "$data" -A trust -U "$RUN_USER" --no-instructions -E UTF8 >/dev/null
        { echo; echo "# scripts/multicluster.sh: cluster $c of shape $SHAPE"
          echo "listen_addresses = '127.0.0.1'"
          echo "unix_socket_directories = '$DIR/run'"
          echo "log_min_messages = warning"
          localize "$GEN/$c/postgresql.conf"
          [ -n "${PGCLOUD_MULTI_SETTINGS:-}" ] && printf '%s\n' "$PGCLOUD_MULTI_SETTINGS"
          true; } >> "$data/postgresql.conf"
        # Each database's NATS user, and the CA of the NATS servers.
        mkdir -p "$data/pgcloud-secrets"
        cp "$DIR/certs/ca.pem" "$data/pgcloud-secrets/ca.crt"
        databases_of "$c" | while read -r db svcs; do
            if [ "${svcs#*,}" != "$svcs" ]; then user=platform; else user=$svcs; fi
            up=$(echo "$user" | tr a-z A-Z)
            (umask 077; echo "pgcloud_$user:$(password "$up")" > "$data/pgcloud-secrets/$db.creds")
        done
        # Who may log in where (per-service layouts): each service's PostgREST
        # role to its own database only, never the workers' or services' roles.
        [ -f "$GEN/$c/pg_hba.conf" ] && cp "$GEN/$c/pg_hba.conf" "$data/pg_hba.conf"
        [ "$(id -u)" = 0 ] && chown -R "$RUN_USER" "$data/pgcloud-secrets" "$data/pg_hba.conf"
        chmod 700 "$data/pgcloud-secrets"
    fi
    if ! as_runner pg_ctl -D "$data" status >/dev/null 2>&1; then
        as_runner pg_ctl -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
    fi
    if [ "$(psql_at "$port" -d postgres -tAc "SELECT count(*) FROM pg_database WHERE datname LIKE 'pgcloud%'")" = 0 ]; then
        psql_at "$port" -d postgres -f "$GEN/$c/init.sql" >/dev/null
    fi
    # The PostgREST roles' passwords, and a pgpass file for them.
    databases_of "$c" | while read -r db svcs; do
        [ "${svcs#*,}" = "$svcs" ] || continue
        local pw; pw=$(pg_password "$(echo "$svcs" | tr a-z A-Z)")
        echo "ALTER ROLE pgcloud_authenticator_$svcs PASSWORD :'pw';" | psql_at "$port" -d postgres -v pw="$pw" >/dev/null
        (umask 077; touch "$DIR/pgpass")
        grep -q "^127.0.0.1:$port:$db:" "$DIR/pgpass" || echo "127.0.0.1:$port:$db:pgcloud_authenticator_$svcs:$pw" >> "$DIR/pgpass"
    done
    echo "cluster $c: port $port, databases $(databases_of "$c" | awk '{print $1}' | paste -sd' ')"
}

jwks() {
    # PostgREST's jwt-secret: the auth service's published keys.
    local line; line=$(grep -v '^#' "$GEN/layout.tsv" | awk '$4 ~ /(^|,)auth(,|$)/' | head -n 1)
    set -- $line
    psql_at $(( $2 + SHIFT )) -d "$3" -tAc 'SELECT api.jwks()' > "$DIR/jwks.json"
    echo "PostgREST keys: $DIR/jwks.json (postgrest configs: deploy/$SHAPE/postgrest/)"
}

up() {
    command -v nats-server >/dev/null || { echo "nats-server is missing (apt-get install nats-server)" >&2; exit 1; }
    [ -f "$($PG_CONFIG --sharedir)/extension/pgcloud.control" ] || {
        echo "pgcloud is not installed in $($PG_CONFIG --sharedir): make install PG_CONFIG=$PG_CONFIG" >&2; exit 1; }
    secrets
    nats_up
    clusters | while read -r c port; do pg_up "$c" "$port"; done
    jwks
    keys >/dev/null
}

down() {
    clusters | while read -r c port; do
        local data; data=$(pgdata "$c")
        if [ -f "$data/PG_VERSION" ] && as_runner pg_ctl -D "$data" status >/dev/null 2>&1; then
            as_runner pg_ctl -D "$data" -m fast -w stop >/dev/null && echo "cluster $c stopped"
        fi
    done
    for n in $(nats_nodes); do
        local pidf=$DIR/nats/$n.pid
        if alive "$pidf"; then
            kill "$(cat "$pidf")" && echo "NATS node $n stopped"
        fi
        rm -f "$pidf"
    done
}

lag() {
    # One query per database (scripts/ops/event-lag.sql), then each durable's
    # backlog as JetStream counts it (asked of every node; each durable is
    # reported by the node that leads it, nodes named n1..n3 as server_name).
    clusters | while read -r c port; do
        databases_of "$c" | while read -r db svcs; do
            if as_runner pg_ctl -D "$(pgdata "$c")" status >/dev/null 2>&1; then
                psql_at "$port" -d "$db" -tA -F ' ' -v cluster="$c" -f "$REPO/scripts/ops/event-lag.sql"
            else
                echo "$c $db DOWN"
            fi
        done
    done
    for n in $(nats_nodes); do
        local mp; mp=$(monitor_port "$n")
        curl -fsS "http://127.0.0.1:$mp/jsz?consumers=true&leader_only=true" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []):
        for c in s.get("consumer_detail") or []:
            # Each durable as its leader counts it (a follower'"'"'s figures lag).
            if (c.get("cluster") or {}).get("leader", sys.argv[1]) != sys.argv[1]:
                continue
            print("nats %s durable %s pending %d ack_pending %d redelivered %d" % (sys.argv[1], c["name"],
                  c.get("num_pending", 0), c.get("num_ack_pending", 0), c.get("num_redelivered", 0)))
' "$n" || true
    done
}

status() {
    clusters | while read -r c port; do
        if as_runner pg_ctl -D "$(pgdata "$c")" status >/dev/null 2>&1; then echo "cluster $c: running on $port"
        else echo "cluster $c: stopped"; fi
    done
    for n in $(nats_nodes); do
        if alive "$DIR/nats/$n.pid"; then
            echo "NATS node $n: running on $(node_port "$n")"
        else echo "NATS node $n: stopped"; fi
    done
    lag
}

case "$CMD" in
    up) up ;;
    down) down ;;
    destroy) down; rm -rf "$DIR" ;;
    status) status ;;
    lag) lag ;;
    keys) keys ;;
    cluster-stop|cluster-start)
        # One cluster of the shape (fault drills): scripts/multicluster.sh cluster-stop money
        c=${2:?usage: $0 $CMD CLUSTER}; data=$(pgdata "$c")
        [ -f "$data/PG_VERSION" ] || { echo "no cluster $c in $DIR" >&2; exit 2; }
        if [ "$CMD" = cluster-stop ]; then as_runner pg_ctl -D "$data" -m fast -w stop >/dev/null
        else as_runner pg_ctl -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null; fi
        echo "cluster $c: ${CMD#cluster-}ed" ;;
    psql)
        svc=${2:?usage: $0 psql SERVICE [args]}; shift 2
        line=$(grep -v '^#' "$GEN/layout.tsv" | awk -v s="$svc" '$4 == s || $4 ~ "(^|,)" s "(,|$)"' | head -n 1)
        [ -n "$line" ] || { echo "no service $svc" >&2; exit 2; }
        set -- $line "$@"
        db=$3; port=$(( $2 + SHIFT )); shift 4
        psql_at "$port" -d "$db" "$@" ;;
    *) echo "usage: $0 up|down|destroy|status|lag|keys [SHAPE] | psql SERVICE [args] | cluster-stop|cluster-start CLUSTER" >&2; exit 2 ;;
esac
