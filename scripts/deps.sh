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
    # storage: botocore's presigner, compared byte for byte with the C SigV4 signer (test/t/070_storage_s3.pl)
    python3-botocore
    # bench (make bench): the fast local HTTP target for the executor and its wrk baseline
    nginx-light wrk
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
can=1; sudo=()
if [ "$(id -u)" != 0 ]; then command -v sudo >/dev/null && sudo=(sudo) || can=0; fi
if [ $can = 1 ]; then
    echo "pgcloud: installing ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "pgcloud needs these Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
