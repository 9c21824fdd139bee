#!/usr/bin/env bash
# `make soak`: Fanout (release build) behind nginx under mixed load for SOAK_SECONDS (default
# 600), with an upstream that is slow, fails and drops connections (Tests/harness/upstream.py).
# scripts/soak.py drives the load, samples the responder and judges; the run's figures and
# chart go into RELIABILITY.md and soak.svg (SOAK_RECORD=0 keeps them in .run/soak only).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$FANOUT_ROOT"
ensure_packages

seconds=${SOAK_SECONDS:-600}
log "building (release)"
swift build -c release --product fanout 2>&1 | grep -vE "^\[|unhandled|CMakeLists|^ +/" || true
BINARY="$(swift build -c release --show-bin-path)/fanout"

RUN_DIR=$(make_run_dir "$FANOUT_ROOT/.run/soak")
rm -rf "$RUN_DIR/data" "$RUN_DIR/fanout.log"
UPSTREAM_PORT=$(free_port)
python3 Tests/harness/upstream.py "$UPSTREAM_PORT" 2>"$RUN_DIR/upstream.log" &
UPSTREAM_PID=$!
cleanup() {
    stop_nginx
    stop_fanout >/dev/null 2>&1 || true
    kill "$UPSTREAM_PID" 2>/dev/null || true
}
trap cleanup EXIT
FANOUT_ENV=(FANOUT_DATA_DIR="$RUN_DIR/data" FANOUT_UPSTREAMS="up=http://127.0.0.1:$UPSTREAM_PORT" FANOUT_LOG_LEVEL=warning)
PORT=$(free_port)
start_fanout "$RUN_DIR" "$BINARY"
start_nginx "$RUN_DIR" "$PORT" on
log "soak for $seconds s on http://127.0.0.1:$PORT (responder pid $FANOUT_PID)"
status=0
python3 scripts/soak.py "$PORT" "$FANOUT_PID" "$RUN_DIR/fanout.sock" "$seconds" "$RUN_DIR" || status=$?

if [ "${SOAK_RECORD:-1}" = 1 ]; then
    cp "$RUN_DIR/soak.svg" soak.svg
    python3 - "$RUN_DIR/soak.json" "$RUN_DIR/section.md" <<'PY'
import json, subprocess, sys
r = json.load(open(sys.argv[1]))
cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
date = subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip()
lines = [f"Last run: {date}, {int(r['seconds'])} s, {cpu}, release build; "
         f"**{'passed' if r['ok'] else 'FAILED'}**.", "",
         f"- {r['requests']} requests; 5xx other than shedding, or requests that could not complete: "
         f"{len(r['unexpected_5xx'])}.",
         f"- Asynchronous jobs: {r['jobs_accepted']} accepted, {r['jobs_finished']} finished "
         f"({', '.join(f'{n} {s}' for s, n in sorted(r['job_states'].items()))}), {len(r['jobs_lost'])} lost.",
         "", "| figure | after warm-up (median) | at the end (median) | within 10% |", "|---|---|---|---|"]
for name, v in r["growth"].items():
    lines.append(f"| {name} | {v['after warm-up']:.1f} | {v['at the end']:.1f} | {'yes' if v['ok'] else 'NO'} |")
lines += ["", "| scenario | answers |", "|---|---|"]
for scenario, counts in sorted(r["statuses"].items()):
    lines.append(f"| {scenario} | {', '.join(f'{n}× {s}' for s, n in sorted(counts.items()))} |")
lines += ["", "![Fanout's memory, descriptors, threads and FastCGI connections during the soak](soak.svg)"]
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
PY
    python3 scripts/reliability.py soak "$RUN_DIR/section.md"
    log "RELIABILITY.md and soak.svg updated"
fi
exit $status
