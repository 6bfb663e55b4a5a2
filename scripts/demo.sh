#!/bin/bash
# make demo: install missing packages (as root), build, install, start the
# private cluster, install pgcloud, run demo/demo.sql.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
make -s
if [ -w "$(pg_config --pkglibdir)" ]; then make -s install; else sudo make -s install; fi
scripts/cluster.sh start
scripts/cluster.sh psql -f demo/demo.sql
echo
echo "Connect with:  scripts/cluster.sh psql      (or: psql $(scripts/cluster.sh url))"
echo "Stop with:     scripts/cluster.sh stop"
