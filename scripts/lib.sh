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

# pgcloud_stage "$0" "$@": as root, clusters run as $RUN_USER. When that user
# cannot read the checkout (a clone in root's private home, mode 0700), the
# calling script is run again from a copy it can read, kept under
# /var/lib/pgcloud/stage (sources synchronised each time; the copy's build
# and .pgdata stay). Nested calls see PGCLOUD_STAGED and do not stage again.
pgcloud_stage() {
    local script=$1; shift
    [ "$(id -u)" = 0 ] && [ -z "${PGCLOUD_STAGED:-}" ] || return 0
    runuser -u "$RUN_USER" -- test -r "$REPO/Makefile" -a -x "$REPO/scripts" 2>/dev/null && return 0
    local stage=${PGCLOUD_STAGE:-/var/lib/pgcloud/stage/$(basename "$REPO")-$(printf '%s' "$REPO" | sha256sum | cut -c1-8)}
    echo "pgcloud: the cluster user '$RUN_USER' cannot read $REPO; working from a readable copy in $stage" >&2
    mkdir -p "$stage" && chmod 755 /var/lib/pgcloud /var/lib/pgcloud/stage "$stage" 2>/dev/null
    if command -v rsync >/dev/null; then
        rsync -a --delete --chmod=Da+rx,Fa+r --exclude=/.git --exclude=/.pgdata --exclude=/build/ \
              --exclude='*.o' --exclude='*.bc' --exclude='*.so' "$REPO/" "$stage/"
    else
        tar -C "$REPO" --exclude=./.git --exclude=./.pgdata -cf - . | tar -C "$stage" -xf - &&
            find "$stage" -path "$stage/.pgdata" -prune -o -exec chmod a+rX {} +
    fi || { echo "pgcloud: could not copy the checkout to $stage; clone it into a folder '$RUN_USER' can read (e.g. /srv) and run again" >&2; exit 1; }
    export PGCLOUD_STAGED=$REPO
    cd "$stage" && exec "$stage/scripts/$(basename "$script")" "$@"
}

# The extensions in install order: core, every service, the meta-extension.
pgcloud_extensions() {
    echo pgcloud_core
    sed -n 's/^\[service\.\([a-z_]*\)\]/pgcloud_\1/p' "$REPO/registry/services.conf"
    echo pgcloud
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
