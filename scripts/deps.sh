#!/bin/bash
# Installs the Debian 12 packages pgcloud needs to build, run and test.
# As root it runs apt-get; otherwise it prints the one command to run.
set -euo pipefail
PACKAGES=(
    make gcc clang libclang-rt-dev pkg-config python3 perl sudo
    postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap
    libcurl4-openssl-dev libssl-dev libnats-dev nats-server
    libipc-run-perl libtest-simple-perl python3-jwt openssh-client openssh-server openssl curl
    # terminal relay and app runtime agent (termrelay/), browser test (test/t/110_terminal_browser.pl)
    # (npm comes with nodejs from NodeSource here; on stock Debian add the npm package)
    libwebsockets-dev libssh-dev chromium nodejs
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The throwaway sshd of the terminal tests runs as the test user (postgres
# under root); to hand a PTY to itself it must change the pty's group to tty,
# which needs membership where devpts is not mounted with gid=5.
tty_group() {
    if [ "$(id -u)" = 0 ] && id -u postgres >/dev/null 2>&1 && ! id -nG postgres | grep -qw tty; then
        usermod -aG tty postgres
    fi
}
[ ${#missing[@]} -eq 0 ] && { tty_group; exit 0; }
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "pgcloud needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
tty_group
