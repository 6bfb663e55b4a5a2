#!/bin/bash
# Installs the Debian 12 packages pgcloud needs to build, run and test
# (recommended packages are not pulled in, so everything needed is listed).
# As root it runs apt-get; otherwise through sudo when there is sudo, or
# prints the one command to run.
set -euo pipefail
PACKAGES=(
    make gcc clang libclang-rt-dev pkg-config python3 perl sudo
    postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-pgtap
    libcurl4-openssl-dev libssl-dev libnats-dev nats-server
    libipc-run-perl libtest-simple-perl python3-jwt openssh-client openssh-server openssl curl
    libtap-parser-sourcehandler-pgtap-perl   # pg_prove (postgresql-15-pgtap only recommends it)
    python3-cryptography                     # PyJWT's RSA and EC algorithms
    ca-certificates                          # TLS to Stripe and every verified peer
    rsync debootstrap                        # staging a private checkout; CI's pristine root
    # storage: botocore's presigner, compared byte for byte with the C SigV4 signer (test/t/storage_s3.pl)
    python3-botocore
    # databases: libpq for the deployer job's connections to target servers; psycopg2 for its TAP test
    libpq-dev python3-psycopg2
    # terminal relay and app runtime agent (termrelay/); the browser test (test/t/terminal_browser.pl)
    # drives Debian's chromium through chromium-driver with python3-selenium (no npm, no download)
    libwebsockets-dev libssh-dev chromium chromium-driver python3-selenium
    # bench (make bench): the fast local HTTP target for the executor and its wrk baseline
    nginx-light wrk
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
can=1; sudo=()
if [ "$(id -u)" != 0 ]; then command -v sudo >/dev/null && sudo=(sudo) || can=0; fi
# The terminal tests' throwaway sshd runs as the cluster's user (postgres
# under root, else the caller) and hands itself a PTY: OpenSSH then makes the
# PTY's group tty, which only a member may do where /dev/pts is mounted
# without gid=5 (containers, sandboxes). Make that user a member.
tty_user=$(id -un); [ "$(id -u)" = 0 ] && tty_user=postgres
tty_member() {
    if [ $can = 1 ] && getent group tty >/dev/null && id -u "$tty_user" >/dev/null 2>&1 \
       && ! id -nG "$tty_user" | grep -qw tty; then
        "${sudo[@]}" usermod -aG tty "$tty_user"
    fi
}
[ ${#missing[@]} -eq 0 ] && { tty_member; exit 0; }
if [ $can = 1 ]; then
    echo "pgcloud: installing ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "pgcloud needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
tty_member
