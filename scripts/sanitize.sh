#!/usr/bin/env bash
# `make sanitize`: the unit tests under ThreadSanitizer, then under AddressSanitizer, each in a
# build folder of its own (.build-tsan, .build-asan). Any report fails the run.
# SANITIZERS="thread" (or "address") runs only one of them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FANOUT_ROOT"
ensure_packages

# Stop at the first report, with its exit code: a race or a memory error is a failure.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
for sanitizer in ${SANITIZERS:-thread address}; do
    case $sanitizer in
        thread) scratch=.build-tsan ;;
        address) scratch=.build-asan ;;
        *) log "unknown sanitizer '$sanitizer' (thread or address)"; exit 64 ;;
    esac
    log "building the tests with --sanitize=$sanitizer"
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
    log "unit tests under --sanitize=$sanitizer"
    swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch"
done
