# Shared shell settings for pgcloud scripts (sourced, not run).
PG_CONFIG=${PG_CONFIG:-pg_config}
PG_BINDIR=$($PG_CONFIG --bindir)
PGXS_DIR=$(cd "$(dirname "$($PG_CONFIG --pgxs)")/../.." && pwd)
PG_REGRESS_BIN=$PGXS_DIR/src/test/regress/pg_regress
PG_ISOLATION_BIN=$PGXS_DIR/src/test/isolation/pg_isolation_regress
PG_PERL_LIB=$PGXS_DIR/src/test/perl
REPO=$(cd "$(dirname "$0")/.." && pwd)

# PostgreSQL refuses to run as root: as root, clusters run as the Debian
# "postgres" user (created if missing); otherwise as the invoking user.
if [ "$(id -u)" = 0 ]; then
    RUN_USER=postgres
    id -u "$RUN_USER" >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash "$RUN_USER"
    as_runner() { runuser -u "$RUN_USER" -- env PATH="$PG_BINDIR:$PATH" "$@"; }
else
    RUN_USER=$(id -un)
    as_runner() { env PATH="$PG_BINDIR:$PATH" "$@"; }
fi

# The extensions in install order: core, every service, the meta-extension.
pgcloud_extensions() {
    echo pgcloud_core
    sed -n 's/^\[service\.\([a-z_]*\)\]/pgcloud_\1/p' "$REPO/registry/services.conf"
    echo pgcloud
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
