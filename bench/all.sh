#!/bin/bash
# Every benchmark in one command:  make bench  (= bench/all.sh)
# Runs bench/events.sh, bench/http_executor.sh, bench/capacity.sh, bench/accrual.sh,
# bench/money.sh and bench/jwt.sh one after the other (each starts and
# removes its own private cluster; each figure is printed beside a baseline
# measured in the same run, since the machine may be shared and noisy) and
# rewrites bench/RESULTS.md: the command, the date, the machine, then every
# section. Settings: BENCHES (the scripts to run, default all of them, in
# that order), BENCH_OUT (the file written, default bench/RESULTS.md); every
# script's own settings (N, SECONDS_PER_RUN, ...) pass through.
# Needs nats-server, nginx (nginx-light) and wrk (scripts/deps.sh installs them).
set -uo pipefail
. "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO"
BENCHES=${BENCHES:-events http_executor capacity accrual money jwt}
OUT=${BENCH_OUT:-bench/RESULTS.md}
TMP=$(mktemp /tmp/pgcloud-bench-results.XXXXXX)
LOGDIR=$(mktemp -d /tmp/pgcloud-bench-logs.XXXXXX)
trap 'rm -f "$TMP"' EXIT
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)
failed=()
for b in $BENCHES; do
    echo "== bench/$b.sh (log: $LOGDIR/$b.log)"
    if BENCH_RESULTS=$TMP "bench/$b.sh" >"$LOGDIR/$b.log" 2>&1; then
        grep -v '^appended to' "$LOGDIR/$b.log" | tail -n 12
    else
        failed+=("$b")
        tail -n 20 "$LOGDIR/$b.log"
        { echo; echo "## bench/$b.sh FAILED in this run (no figures; see its log)"; } >> "$TMP"
    fi
done
# The sections of the benchmarks this run did not run (a subset, or the ones
# make bench does not run: terminal.sh, multicluster.sh) are kept, marked as such.
PREVIOUS=
if [ -f "$OUT" ]; then
    PREVIOUS=$(mktemp /tmp/pgcloud-bench-previous.XXXXXX)
    python3 - "$OUT" "$BENCHES" > "$PREVIOUS" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
ran = sys.argv[2].split()
sections = re.split(r'(?m)^(?=## )', text)[1:]
for sec in sections:
    if sec.startswith('## Earlier figures'):
        continue
    m = re.search(r'`bench/([a-z_]+)\.sh', sec)
    if m and m.group(1) in ran:
        continue
    print(sec.rstrip('\n'))
    print()
PY
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
pgver=$("$PG_CONFIG" --version)
{
    echo "# Benchmark results"
    echo
    echo "Command: \`make bench\` (bench/all.sh; BENCHES=\"$BENCHES\"), $(date -u '+%Y-%m-%d %H:%M UTC'), $(( $(date +%s) - T0 )) s."
    echo
    echo "Machine: $(nproc) cores ($cpu), $mem, $(uname -sr), $pgver, nats-server $(nats-server --version 2>/dev/null | sed 's/^nats-server: //'), $(nginx -v 2>&1 | sed 's/^nginx version: //'). Load average at the start: $LOAD_START, at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Every figure stands beside a baseline measured in the same run: the machine is shared, absolute figures move"
    echo "by a third between runs, the ratios much less. Each section names the script that produced it."
    cat "$TMP"
    if [ -n "$PREVIOUS" ] && [ -s "$PREVIOUS" ]; then
        echo
        echo "## Earlier figures (benchmarks not rerun by this command; each section keeps its own date)"
        echo
        cat "$PREVIOUS"
    fi
} > "$OUT"
[ -n "$PREVIOUS" ] && rm -f "$PREVIOUS"
echo "wrote $OUT"
[ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
