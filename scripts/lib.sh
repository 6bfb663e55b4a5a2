# Shared shell settings for pgcloud scripts (sourced, not run).
REPO=$(cd "$(dirname "$0")/.." && pwd)

# PGCLOUD_PG_ROOT=<dir>: build, install and test against a private copy of
# the PostgreSQL installation in <dir> (PostgreSQL is relocatable). No root
# needed for make install, and several checkouts can be tested side by side.
if [ -n "${PGCLOUD_PG_ROOT:-}" ]; then
    sys_bindir=$(pg_config --bindir)
    sys_sharedir=$(pg_config --sharedir)
    sys_incdir=$(dirname "$(pg_config --includedir-server)")    # .../include/postgresql/15
    if [ ! -d "$PGCLOUD_PG_ROOT$sys_incdir" ]; then
        mkdir -p "$PGCLOUD_PG_ROOT$(dirname "$(dirname "$sys_bindir")")" "$PGCLOUD_PG_ROOT$(dirname "$sys_sharedir")" \
                 "$PGCLOUD_PG_ROOT$(dirname "$sys_incdir")"
        cp -a "$(dirname "$sys_bindir")" "$PGCLOUD_PG_ROOT$(dirname "$(dirname "$sys_bindir")")/"
        cp -a "$sys_sharedir" "$PGCLOUD_PG_ROOT$(dirname "$sys_sharedir")/"
        cp -a "$(dirname "$sys_incdir")/." "$PGCLOUD_PG_ROOT$(dirname "$sys_incdir")/"
        chmod -R a+rX "$PGCLOUD_PG_ROOT"
    fi
    PG_CONFIG=$PGCLOUD_PG_ROOT$sys_bindir/pg_config
fi
PG_CONFIG=${PG_CONFIG:-pg_config}
export PG_CONFIG
PG_BINDIR=$($PG_CONFIG --bindir)
PGXS_DIR=$(cd "$(dirname "$($PG_CONFIG --pgxs)")/../.." && pwd)
PG_REGRESS_BIN=$PGXS_DIR/src/test/regress/pg_regress
PG_ISOLATION_BIN=$PGXS_DIR/src/test/isolation/pg_isolation_regress
PG_PERL_LIB=$PGXS_DIR/src/test/perl

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
