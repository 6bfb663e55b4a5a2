#!/bin/bash
# The private development cluster: PostgreSQL 15 in a project-local directory.
#
#   scripts/cluster.sh start     initdb (first time), start, install pgcloud
#   scripts/cluster.sh stop
#   scripts/cluster.sh status
#   scripts/cluster.sh psql [args]
#   scripts/cluster.sh url       print the connection URL
#
# Settings (environment): PGCLOUD_DATA (default ./.pgdata), PGCLOUD_PORT
# (default 54329), PGCLOUD_DB (default pgcloud).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
pgcloud_stage "$0" "$@"

DATA=${PGCLOUD_DATA:-$REPO/.pgdata}
PORT=${PGCLOUD_PORT:-54329}
# An existing cluster keeps the port it was created with.
if [ -f "$DATA/postgresql.conf" ]; then
    PORT=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$DATA/postgresql.conf" | tail -n 1)
fi
DB=${PGCLOUD_DB:-pgcloud}
SOCK=$DATA/run

psql_db() { as_runner psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" "$@"; }

port_busy() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null && return 1 || return 0; }

start() {
    if [ ! -f "$DATA/PG_VERSION" ]; then
        # A new cluster takes the default port unless something else holds it.
        if [ -z "${PGCLOUD_PORT:-}" ] && port_busy "$PORT"; then
            PORT=$(free_port)
            echo "pgcloud: port 54329 is in use; the new cluster in $DATA takes port $PORT (it keeps it)" >&2
        fi
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$DATA"
        chmod 700 "$DATA"
        as_runner initdb -D "$DATA" -A trust -U "$RUN_USER" --no-instructions -E UTF8 >/dev/null
        mkdir -p "$SOCK"
        [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$SOCK"
        cat >> "$DATA/postgresql.conf" <<CONF

# pgcloud development cluster (scripts/cluster.sh)
port = $PORT
listen_addresses = 'localhost'
unix_socket_directories = '$SOCK'
shared_preload_libraries = 'pg_cron,pgcloud'
cron.database_name = '$DB'
pgcloud.databases = '$DB'
log_min_messages = warning
logging_collector = off
CONF
    fi
    if ! as_runner pg_ctl -D "$DATA" status >/dev/null 2>&1; then
        as_runner pg_ctl -D "$DATA" -l "$DATA/server.log" -w -t 60 start >/dev/null
    fi
    if [ "$(psql_db -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
        psql_db -d postgres -c "CREATE DATABASE $DB"
    fi
    psql_db -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_cron; CREATE EXTENSION IF NOT EXISTS pgcloud CASCADE;"
    echo "cluster running: $(url)"
}

stop() {
    if [ -f "$DATA/PG_VERSION" ] && as_runner pg_ctl -D "$DATA" status >/dev/null 2>&1; then
        as_runner pg_ctl -D "$DATA" -m fast -w stop >/dev/null
    fi
    echo "cluster stopped"
}

url() { echo "postgresql://$RUN_USER@localhost:$PORT/$DB"; }

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) as_runner pg_ctl -D "$DATA" status ;;
    psql) shift; psql_db -d "$DB" "$@" ;;
    url) url ;;
    *) echo "usage: $0 start|stop|status|psql|url" >&2; exit 2 ;;
esac
