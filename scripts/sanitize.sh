#!/usr/bin/env bash
# `make sanitize`: the unit tests under ThreadSanitizer, then under AddressSanitizer, each in a
# build folder of its own (.build-tsan, .build-asan). Any report fails the run.
#   SANITIZERS="thread" (or "address") runs only one of them.
#   SANITIZE_REPEAT=N runs the tests N times under each (default 3): a race shows only when
#                     threads happen to meet.
# A clean run of both records its figures in RELIABILITY.md (SANITIZE_RECORD=0 does not).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FANOUT_ROOT"
ensure_packages

# Stop at the first report, with its exit code: a race or a memory error is a failure.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
repeat=${SANITIZE_REPEAT:-3}
# The PostgreSQL job store's tests need a server: a throwaway one.
start_postgres off
trap stop_postgres EXIT
sanitizers=${SANITIZERS:-thread address}
record=$FANOUT_ROOT/.run/sanitize.md
mkdir -p .run
{
    echo "Last run: $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), debug build:"
    echo
    echo "| sanitizer | build in this run (incremental when its folder exists) | test runs | result |"
    echo "|---|---|---|---|"
} >"$record"
for sanitizer in $sanitizers; do
    case $sanitizer in
        thread) scratch=.build-tsan ;;
        address) scratch=.build-asan ;;
        *) log "unknown sanitizer '$sanitizer' (thread or address)"; exit 64 ;;
    esac
    log "building the tests with --sanitize=$sanitizer"
    started=$(date +%s)
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
    built=$(date +%s)
    for run in $(seq 1 "$repeat"); do
        log "unit tests under --sanitize=$sanitizer ($run of $repeat)"
        if ! swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" >"$FANOUT_ROOT/.run/sanitize-$sanitizer.log" 2>&1; then
            grep -m1 -A20 "WARNING: \|ERROR: " "$FANOUT_ROOT/.run/sanitize-$sanitizer.log" || tail -20 "$FANOUT_ROOT/.run/sanitize-$sanitizer.log"
            log "a $sanitizer sanitizer report or a failing test: see .run/sanitize-$sanitizer.log"
            exit 1
        fi
        tail -1 "$FANOUT_ROOT/.run/sanitize-$sanitizer.log"
    done
    tests=$(grep -oE 'Test run with [0-9]+ tests' "$FANOUT_ROOT/.run/sanitize-$sanitizer.log" | tail -1 | grep -oE '[0-9]+')
    echo "| $sanitizer | $((built - started)) s | $repeat × $tests tests, $(( ($(date +%s) - built) / repeat )) s each | clean |" >>"$record"
done
if [ "${SANITIZE_RECORD:-1}" = 1 ] && [ "$sanitizers" = "thread address" ]; then
    python3 scripts/reliability.py sanitize "$record"
    log "RELIABILITY.md updated"
fi
