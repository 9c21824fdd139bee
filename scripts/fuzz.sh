#!/usr/bin/env bash
# `make fuzz`: builds each libFuzzer target with address sanitizer (in .build-fuzz) and runs it
# from the committed seed corpus (Tests/Fuzz/corpus/<target>); new inputs it finds are kept in
# .run/fuzz/corpus/<target>, crashes in .run/fuzz/crashes. Any crash, leak or timeout fails.
#
#   FUZZ_RUNS      executions per target (default 10,000,000: the figure RELIABILITY.md records)
#   FUZZ_SECONDS   or a time per target instead (CI: a short, fixed time)
#   FUZZ_TARGETS   which targets (default: all: batch json references http-rules)
#   FUZZ_JOBS      targets run at once (default: the number of cores)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FANOUT_ROOT"

targets=${FUZZ_TARGETS:-batch json references http-rules}
work=$FANOUT_ROOT/.run/fuzz
mkdir -p "$work/crashes"

# lld, not the default gold: gold fails with an internal error on libFuzzer's objects.
# Release only: in a debug build SwiftPM links executables so that libFuzzer's own main() is
# pulled in, which expects LLVMFuzzerTestOneInput; the targets run libFuzzer from their main.
configuration=release
flags=(-c "$configuration" --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
    -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld)
for target in $targets; do
    log "building fuzz-$target (fuzzer + address sanitizer)"
    # A failed build must stop the run, not leave an older binary to be fuzzed.
    if ! swift build "${flags[@]}" --product "fuzz-$target" >"$work/build-$target.log" 2>&1; then
        grep -E "error|warning: " "$work/build-$target.log" | head -20 || tail -20 "$work/build-$target.log"
        log "fuzz-$target did not build (.run/fuzz/build-$target.log)"
        exit 1
    fi
done

if [ -n "${FUZZ_SECONDS:-}" ]; then limit=(-max_total_time="$FUZZ_SECONDS"); else limit=(-runs="${FUZZ_RUNS:-10000000}"); fi
# A crash is reported by libFuzzer with its input; Swift's own backtracer would only hold it up.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

# run_target NAME: one libFuzzer run; its log in .run/fuzz/NAME.log, a summary line on stdout.
run_target() {
    local target=$1 started finished status=0
    mkdir -p "$work/corpus/$target"
    started=$(date +%s)
    ".build-fuzz/$configuration/fuzz-$target" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$work/crashes/$target-" \
        "$work/corpus/$target" "Tests/Fuzz/corpus/$target" >"$work/$target.log" 2>&1 || status=$?
    finished=$(date +%s)
    local executions coverage features
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log" | tail -1)
    coverage=$(grep -oE 'cov: [0-9]+' "$work/$target.log" | tail -1 | cut -d' ' -f2)
    features=$(grep -oE 'ft: [0-9]+' "$work/$target.log" | tail -1 | cut -d' ' -f2)
    printf '| fuzz-%s | %s | %s | %s | %s s | %s |\n' "$target" "${executions:-?}" "${coverage:-?}" \
        "${features:-?}" $((finished - started)) "$([ $status -eq 0 ] && echo "0 crashes, leaks or timeouts" || echo "FAILED ($status)")"
    return $status
}

jobs=${FUZZ_JOBS:-$(nproc)}
summary=$work/summary.md
{
    echo "Last full run: $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $configuration build, ${limit[*]} per target, $jobs at once:"
    echo
    echo "| target | executions | coverage (edges) | features | duration | result |"
    echo "|---|---|---|---|---|---|"
} >"$summary"

pids=()
failed=0
for target in $targets; do
    log "fuzzing fuzz-$target (${limit[*]})"
    run_target "$target" >"$work/$target.line" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
        wait "${pids[0]}" || failed=1
        pids=("${pids[@]:1}")
    fi
done
for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" || failed=1; done
for target in $targets; do cat "$work/$target.line" >>"$summary"; done
cat "$summary"
# A full run (not a timed one, as CI makes) is the record in RELIABILITY.md.
if [ $failed -eq 0 ] && [ -z "${FUZZ_SECONDS:-}" ] && [ "${FUZZ_RECORD:-1}" = 1 ]; then
    python3 scripts/reliability.py fuzz "$summary"
    log "RELIABILITY.md updated"
fi
if [ $failed -ne 0 ]; then
    log "a fuzz target failed: see .run/fuzz/<target>.log and the input in .run/fuzz/crashes/"
    for target in $targets; do grep -m3 -E "ERROR|invariant broken|Fatal error|timeout" "$work/$target.log" || true; done
    exit 1
fi
