#!/bin/bash
# Runs a command on a copy of this checkout inside a pristine Debian 12 root,
# so that a missing install step fails instead of hiding behind what this
# machine already has. .ci/run uses it; developers can too:
#
#   sudo scripts/fresh-root.sh bash .ci/run        # what CI runs
#   sudo scripts/fresh-root.sh scripts/demo.sh     # the README's first command
#
# The base root (debootstrap --variant=minbase bookworm: no make, no compiler,
# no CA certificates) is built once and kept in $PGCLOUD_FRESH_BASE
# (default /var/cache/pgcloud/bookworm-base); every run works on a copy of
# it, removed afterwards, so nothing one run installs reaches the next.
# Downloaded .deb files are kept between runs in $PGCLOUD_FRESH_BASE.debs
# (a download cache: nothing is installed from it that the run did not ask
# for). The checkout (tracked and untracked files, as .gitignore allows) is
# copied to /root/pgcloud inside the root: root's private home (0700), the
# strictest set-up. Needs root (debootstrap, chroot, mount).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=${PGCLOUD_FRESH_BASE:-/var/cache/pgcloud/bookworm-base}
DEBS=$BASE.debs
[ "$(id -u)" = 0 ] || { echo "fresh-root: run as root (debootstrap, chroot and mount need it)" >&2; exit 2; }
[ $# -gt 0 ] || set -- bash .ci/run

if [ ! -x "$BASE/bin/bash" ]; then
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1 | cut -d' ' -f1)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    echo "fresh-root: building the base root in $BASE from $mirror (once)" >&2
    rm -rf "$BASE.tmp"; mkdir -p "$(dirname "$BASE")"
    debootstrap --variant=minbase bookworm "$BASE.tmp" "$mirror" >"$BASE.log" 2>&1 \
        || { tail -n 20 "$BASE.log" >&2; echo "fresh-root: debootstrap failed (log: $BASE.log)" >&2; exit 1; }
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then    # the same suites as this machine
        cp /etc/apt/sources.list.d/debian.sources "$BASE.tmp/etc/apt/sources.list.d/"
        rm -f "$BASE.tmp/etc/apt/sources.list"
    elif [ -f /etc/apt/sources.list ]; then
        cp /etc/apt/sources.list "$BASE.tmp/etc/apt/sources.list"
    fi
    mv "$BASE.tmp" "$BASE"
fi

root=$(mktemp -d /var/tmp/pgcloud-fresh.XXXXXX)
cleanup() {
    for m in var/cache/apt/archives dev sys proc; do umount -lR "$root/$m" 2>/dev/null || true; done
    if findmnt -rn -o TARGET | grep -q "^$root/"; then
        echo "fresh-root: mounts remain under $root; not removing it" >&2
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT
cp -a "$BASE/." "$root/"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "$root/etc/hosts" 2>/dev/null || true
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mkdir -p "$DEBS/partial"
mount --bind "$DEBS" "$root/var/cache/apt/archives"

# The checkout as it is (what git tracks and what it does not ignore).
mkdir -p "$root/root/pgcloud"
chmod 700 "$root/root"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -)
else
    tar -C "$REPO" --exclude=./.pgdata --exclude=./build --exclude='*.o' --exclude='*.so' -cf - .
fi | tar -C "$root/root/pgcloud" -xf -

quoted=$(printf '%q ' "$@")
echo "fresh-root: running '$*' in a pristine Debian 12 root ($root), checkout in /root/pgcloud" >&2
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 CI="${CI:-}" PGCLOUD_IN_FRESH_ROOT=1 FUZZ_SECONDS="${FUZZ_SECONDS:-}" TIERS="${TIERS:-}" \
    SERVICE="${SERVICE:-}" /bin/bash -c "cd /root/pgcloud && $quoted"
