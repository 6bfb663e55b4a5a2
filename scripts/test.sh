#!/bin/bash
# make test: every tier against private clusters this script starts and stops.
#   generated files, build (-Werror), pg_regress, pgTAP (pg_prove), isolation
#   (pg_isolation_regress), TAP (PostgreSQL::Test::Cluster), scrubber vectors
#   and a bounded fuzz run. Ends with one line "N passed, N failed".
# Environment: FUZZ_SECONDS (default 20), TIERS (default "generated build
# regress pgtap isolation tap fuzz"), SERVICE=<name> runs only the tests of
# one service in every tier (by file name, or a "services:" line in the
# file's first lines), ONLY=<text> runs only the test files whose name
# contains it, KEEP=1 keeps the work directory.
# Prints the wall time of each tier and of the whole run.
set -uo pipefail
"$(dirname "$0")/deps.sh" || exit 1
. "$(dirname "$0")/lib.sh"
pgcloud_stage "$0" "$@"
cd "$REPO"
RUN_START=$(date +%s)

TIERS=${TIERS:-"generated build regress pgtap isolation tap fuzz"}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
PASSED=0
FAILED=0
FAILURES=()

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "FAIL $1"; }
TIER_TIMES=()
CURRENT_TIER=
CURRENT_START=0
tier() {
    case " $TIERS " in *" $1 "*) ;; *) return 1 ;; esac
    end_tier
    CURRENT_TIER=$1; CURRENT_START=$(date +%s)
    echo "--- tier $1"
}
end_tier() {
    [ -n "$CURRENT_TIER" ] || return 0
    local t=$(( $(date +%s) - CURRENT_START ))
    TIER_TIMES+=("$(printf '%-10s %4d s' "$CURRENT_TIER" "$t")")
    echo "--- tier $CURRENT_TIER: ${t} s"
    CURRENT_TIER=
}
# The test files of a tier, filtered by SERVICE when it is set. Every test
# file is named <service>_<topic> (fuzz targets fuzz_<service>_<topic>; see
# test/README.md); a cross-service test also lists the others in a
# "services:" line among its first lines.
SERVICE=${SERVICE:-}
select_tests() {   # files...
    local f b
    for f in "$@"; do
        [ -e "$f" ] || continue
        b=$(basename "$f"); b=${b#fuzz_}
        [ -n "${ONLY:-}" ] && [[ "$b" != *"$ONLY"* ]] && continue
        if [ -z "$SERVICE" ] || [[ "$b" == "${SERVICE}_"* ]] \
           || head -n 30 "$f" | grep -qE "^(#|--| \*) services:.*\b$SERVICE\b"; then
            echo "$f"
        fi
    done
}

WORK=$(mktemp -d /tmp/pgcloud-test.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK"
cleanup() {
    for d in "$WORK"/cluster-*; do
        [ -f "$d/PG_VERSION" ] && as_runner pg_ctl -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    [ "${KEEP:-0}" = 1 ] && echo "work directory kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# --- generated files --------------------------------------------------------
if tier generated; then
    if python3 scripts/generate.py --check; then pass "generated files are up to date"
    else fail "generated files are stale: run make generate"; fi
    if python3 scripts/check-meta.py; then pass "META.json follows the PGXN meta spec"
    else fail "META.json"; fi
    # Every test file is named <service>_<topic> (test/README.md).
    names="core|$(sed -n 's/^\[service\.\([a-z_]*\)\]/\1/p' registry/services.conf | paste -sd'|')"
    misnamed=$(for f in test/sql/*.sql test/specs/*.spec test/pgtap/*.sql test/t/*.pl test/fuzz/fuzz_*.c; do
                   [ -e "$f" ] && basename "$f"; done | sed 's/^fuzz_//' | grep -vE "^($names)_[a-z0-9_]+\.(sql|spec|pl|c)$")
    if [ -z "$misnamed" ]; then pass "every test file is named <service>_<topic>"
    else fail "test files not named <service>_<topic> (test/README.md): $(echo $misnamed)"; fi
fi

# --- build and install ------------------------------------------------------
if tier build; then
    if make -s PG_CONFIG="$PG_CONFIG" >"$WORK/build.log" 2>&1; then pass "build (-Wall -Wextra -Werror)"
    else cat "$WORK/build.log"; fail "build"; fi
    if [ -w "$($PG_CONFIG --pkglibdir)" ]; then install_cmd=(make -s install PG_CONFIG="$PG_CONFIG")
    else install_cmd=(sudo make -s install PG_CONFIG="$PG_CONFIG"); fi
    if "${install_cmd[@]}" >"$WORK/install.log" 2>&1; then pass "make install"
    else cat "$WORK/install.log"; fail "make install"; fi
fi

cat > "$WORK/temp.conf" <<CONF
shared_preload_libraries = 'pg_cron,pgcloud'
cron.database_name = 'postgres'
CONF
LOAD_EXT=()
for e in $(pgcloud_extensions); do LOAD_EXT+=("--load-extension=$e"); done

# Runs pg_regress or pg_isolation_regress; counts each test's ok/FAILED line.
run_regress() {
    local name=$1 bin=$2; shift 2
    local out="$WORK/$name"
    mkdir -p "$out"; [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$out"
    # --bindir: the temp instance must run the PostgreSQL we installed into
    # (PGCLOUD_PG_ROOT), not the one pg_regress was compiled for.
    as_runner "$bin" --bindir="$PG_BINDIR" --temp-instance="$out/instance" --temp-config="$WORK/temp.conf" --port="$(free_port)" \
        --inputdir="$REPO/test" --outputdir="$out" --dbname=pgcloud_regress \
        "${LOAD_EXT[@]}" "$@" >"$out/run.log" 2>&1
    local rc=$?
    local line t
    while read -r line; do
        t=$(echo "$line" | sed -E 's/^(test +)?([A-Za-z0-9_]+) +\.\.\. .*/\2/')
        case "$line" in
            *"... ok"*) pass "$name: $t" ;;
            *"... FAILED"*|*"... failed"*) fail "$name: $t" ;;
        esac
    done < <(grep -E '\.\.\. (ok|FAILED|failed)' "$out/run.log")
    if [ $rc -ne 0 ]; then
        [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
        grep -qE '\.\.\. (FAILED|failed)' "$out/run.log" || { cat "$out/run.log"; fail "$name: runner exited $rc"; }
    fi
}

if tier regress; then
    tests=$(select_tests test/sql/*.sql | sed 's|test/sql/||; s|\.sql$||')
    [ -n "$tests" ] && run_regress regress "$PG_REGRESS_BIN" $tests
fi

if tier isolation; then
    specs=$(select_tests test/specs/*.spec | sed 's|test/specs/||; s|\.spec$||')
    [ -n "$specs" ] && run_regress isolation "$PG_ISOLATION_BIN" $specs
fi

# --- pgTAP --------------------------------------------------------------------
if tier pgtap; then
    port=$(free_port)
    export PGCLOUD_DATA="$WORK/cluster-pgtap" PGCLOUD_PORT=$port PGCLOUD_DB=pgcloud_tap
    if scripts/cluster.sh start >"$WORK/pgtap-cluster.log" 2>&1 \
       && scripts/cluster.sh psql -c "CREATE EXTENSION IF NOT EXISTS pgtap" >>"$WORK/pgtap-cluster.log" 2>&1; then
        for f in $(select_tests test/pgtap/*.sql); do
            # test/pgtap/psql loads the shared helpers (test/pgtap/helpers.psql) first.
            if as_runner pg_prove --psql-bin "$REPO/test/pgtap/psql" -h "$PGCLOUD_DATA/run" -p "$port" -d pgcloud_tap "$f" \
                   >"$WORK/pgtap.out" 2>&1; then
                pass "pgtap: $(basename "$f" .sql)"
            else
                cat "$WORK/pgtap.out"; fail "pgtap: $(basename "$f" .sql)"
            fi
        done
    else
        cat "$WORK/pgtap-cluster.log"; fail "pgtap: cluster start"
    fi
    scripts/cluster.sh stop >/dev/null 2>&1
    unset PGCLOUD_DATA PGCLOUD_PORT PGCLOUD_DB
fi

# --- TAP (PostgreSQL::Test::Cluster) -----------------------------------------
# TAP_JOBS lanes run files at once (default 2). They share one TESTDIR, so
# PostgreSQL::Test::Cluster's port locks keep their clusters apart. Files
# whose first lines say "tap-lock: <name>" (whole deployments on the port
# plan of registry/deployments.conf) run one after another in the first
# lane; every other file goes to whichever lane is free. Results are printed
# in file order, each with its wall time.
TAP_JOBS=${TAP_JOBS:-2}
run_tap_file() {   # file: writes $WORK/tap/<name>.out and <name>.rc
    local f=$1 name start rc
    name=$(basename "$f" .pl)
    start=$(date +%s)
    as_runner env TESTDIR="$WORK/tap" PG_REGRESS="$PG_REGRESS_BIN" \
        PGCLOUD_REPO="$REPO" prove -I "$PG_PERL_LIB" -I "$REPO/test/t" "$f" >"$WORK/tap/$name.out" 2>&1
    rc=$?
    echo "$rc $(( $(date +%s) - start ))" >"$WORK/tap/$name.rc"
}
next_tap_file() {  # pops the shared queue ($WORK/tap/queue, one file a line)
    (
        flock 9
        local n; n=$(cat "$WORK/tap/queue.next")
        sed -n "$((n + 1))p" "$WORK/tap/queue"
        echo $((n + 1)) >"$WORK/tap/queue.next"
    ) 9>"$WORK/tap/queue.lock"
}
tap_lane() {       # locked files...: runs them, then drains the queue
    local f
    for f in "$@"; do run_tap_file "$f"; done
    while f=$(next_tap_file) && [ -n "$f" ]; do run_tap_file "$f"; done
}
if tier tap; then
    mkdir -p "$WORK/tap"; [ "$(id -u)" = 0 ] && chown "$RUN_USER" "$WORK/tap"
    tap_files=($(select_tests test/t/*.pl))
    rm -f "$WORK"/tap/*.rc
    locked=(); : >"$WORK/tap/queue"; echo 0 >"$WORK/tap/queue.next"
    for f in "${tap_files[@]}"; do
        if head -n 30 "$f" | grep -q '^# tap-lock:'; then locked+=("$f"); else echo "$f" >>"$WORK/tap/queue"; fi
    done
    tap_lane "${locked[@]}" &
    for _ in $(seq 2 "$TAP_JOBS"); do tap_lane & done
    wait
    for f in "${tap_files[@]}"; do
        name=$(basename "$f" .pl)
        read -r rc secs <"$WORK/tap/$name.rc" 2>/dev/null || { rc=1; secs=0; }
        if [ "$rc" = 0 ]; then
            pass "tap: $name (${secs} s)"
        else
            cat "$WORK/tap/$name.out"
            for log in "$WORK"/tap/tmp_check/log/*"$name"*; do
                [ -f "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }
            done
            fail "tap: $name (${secs} s)"
        fi
    done
fi

# --- scrubber vectors and fuzzing ---------------------------------------------
if tier fuzz; then
    # Built by test/fuzz/Makefile: one pattern rule for every test/fuzz/fuzz_*.c.
    fuzz_make=(make -s -C test/fuzz BUILD="$REPO/build")
    if [ -n "$SERVICE" ] && [ "$SERVICE" != core ]; then :
    elif "${fuzz_make[@]}" vectors >"$WORK/vectors.log" 2>&1; then
        pass "sanitize vectors"
    else cat "$WORK/vectors.log"; fail "sanitize vectors"; fi
    # Each target is built, then fuzzed for FUZZ_SECONDS; FUZZ_JOBS (default 2)
    # targets are fuzzed at once (one core each). Results in file order.
    fuzz_targets=($(select_tests test/fuzz/fuzz_*.c))
    for target in "${fuzz_targets[@]}"; do
        name=$(basename "$target" .c)
        rm -f "$WORK/$name.rc"
        "${fuzz_make[@]}" "$name" >"$WORK/$name.log" 2>&1 || { echo 1 >"$WORK/$name.rc"; continue; }
        while [ "$(jobs -rp | wc -l)" -ge "${FUZZ_JOBS:-2}" ]; do wait -n 2>/dev/null || true; done
        corpus=test/fuzz/corpus/${name#fuzz_}
        cp -r "$corpus" "$WORK/corpus-$name" 2>/dev/null || mkdir -p "$WORK/corpus-$name"
        ( cd "$WORK" && "$REPO/build/$name" -max_total_time="$FUZZ_SECONDS" -max_len=4096 \
              "$WORK/corpus-$name" >>"$WORK/$name.log" 2>&1; echo $? >"$WORK/$name.rc" ) &
    done
    wait
    for target in "${fuzz_targets[@]}"; do
        name=$(basename "$target" .c)
        if [ "$(cat "$WORK/$name.rc" 2>/dev/null)" = 0 ]; then
            pass "fuzz: $name (${FUZZ_SECONDS}s, $(grep -o 'Done [0-9]* runs' "$WORK/$name.log" | tail -1))"
        else tail -n 40 "$WORK/$name.log"; fail "fuzz: $name"; fi
    done
fi

end_tier
echo
echo "wall time per tier:"
[ ${#TIER_TIMES[@]} -gt 0 ] && printf '  %s\n' "${TIER_TIMES[@]}"
echo "  total      $(( $(date +%s) - RUN_START )) s"
[ ${#FAILURES[@]} -gt 0 ] && printf 'failed: %s\n' "${FAILURES[@]}"
[ $((PASSED + FAILED)) -eq 0 ] && { echo "no test matched${SERVICE:+ SERVICE=$SERVICE}"; FAILED=1; }
echo "$PASSED passed, $FAILED failed${SERVICE:+ (SERVICE=$SERVICE)}"
[ "$FAILED" -eq 0 ]
