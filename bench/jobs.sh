#!/usr/bin/env bash
# `make bench-jobs` (and the end of `make bench`): the asynchronous job path on a throwaway
# PostgreSQL with fsync on (three hosts) and on SQLite (bench/jobs.py). BENCH_JOBS_SECONDS sets
# each load phase's length (default 60; 5 with BENCH_SMOKE=1). Writes its section of BENCHMARKS.md.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$FANOUT_ROOT"
ensure_packages wrk
# The smoke run takes the debug build the tests have made, as bench/run.sh does.
configuration=release
[ "${BENCH_SMOKE:-0}" = 1 ] && configuration=debug
log "building ($configuration)"
swift build -c "$configuration" --product fanout
BINARY="$(swift build -c "$configuration" --show-bin-path)/fanout"
OUTPUT=$FANOUT_ROOT
seconds=${BENCH_JOBS_SECONDS:-60}
if [ "${BENCH_SMOKE:-0}" = 1 ]; then OUTPUT=$FANOUT_ROOT/.run/bench-smoke; seconds=${BENCH_JOBS_SECONDS:-5}; fi
# autovacuum_naptime 5 s, as docs/multi-host.md recommends for a busy job table (the default,
# one minute, lets a queue's dead rows pile up between passes).
log "starting a throwaway PostgreSQL (fsync on)"
start_postgres on -c autovacuum_naptime=5s
trap stop_postgres EXIT
python3 bench/jobs.py "$BINARY" "$OUTPUT" "$FANOUT_TEST_DATABASE_URL" "$PG_BIN" "$PG_DIR" "$seconds"
