#!/usr/bin/env bash
# `make bench`: builds Fanout (release) and the C floor, then runs bench/bench.py, which writes
# BENCHMARKS.md and bench-results.svg at the top of the repository. BENCH_SMOKE=1 makes a short
# run for CI that writes its report under .run/bench-smoke instead.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$FANOUT_ROOT"

ensure_packages wrk
command -v node >/dev/null 2>&1 || ensure_packages nodejs
command -v cc >/dev/null 2>&1 || ensure_packages gcc
command -v strace >/dev/null 2>&1 || ensure_packages strace
# The smoke run (CI) measures nothing, so it takes the debug build the tests have just made: a
# release build from scratch is about ten minutes of CI's thirty.
configuration=release
[ "${BENCH_SMOKE:-0}" = 1 ] && configuration=debug
log "building ($configuration)"
swift build -c "$configuration" --product fanout
BINARY="$(swift build -c "$configuration" --show-bin-path)/fanout"
mkdir -p .run
cc -O2 -o .run/fcgi-floor bench/floor.c -lfcgi -lpthread
OUTPUT=$FANOUT_ROOT
[ "${BENCH_SMOKE:-0}" = 1 ] && OUTPUT=$FANOUT_ROOT/.run/bench-smoke
python3 bench/bench.py "$BINARY" "$FANOUT_ROOT/.run/fcgi-floor" "$OUTPUT"
# The job path last: its section goes into the BENCHMARKS.md written above.
bash bench/jobs.sh
