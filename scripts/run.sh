#!/usr/bin/env bash
# `make run`: installs what is missing, builds Fanout in release mode, and serves it on
# http://127.0.0.1:${PORT:-8080} (nginx -> Unix socket -> spawn-fcgi -> Fanout) until Ctrl-C.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT=${PORT:-8080}
ensure_packages
log "building (release)"
swift build -c release --product fanout --package-path "$FANOUT_ROOT"
BINARY="$(swift build -c release --show-bin-path --package-path "$FANOUT_ROOT")/fanout"
RUN_DIR=$(make_run_dir "${RUN_DIR:-}")
: >"$RUN_DIR/fanout.log"
: >"$RUN_DIR/nginx.log"

cleanup() {
    trap - INT TERM EXIT
    log "stopping"
    stop_nginx
    stop_fanout || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# Jobs live in the run directory unless FANOUT_DATA_DIR says otherwise. The demonstration API that
# nginx serves under /demo is upstream "demo", unless FANOUT_UPSTREAMS names others.
FANOUT_ENV=(FANOUT_DATA_DIR="${FANOUT_DATA_DIR:-$RUN_DIR/data}"
    FANOUT_UPSTREAMS="${FANOUT_UPSTREAMS:-demo=http://127.0.0.1:$PORT/demo}")
FANOUT_LOG_TO_TERMINAL=1 start_fanout "$RUN_DIR" "$BINARY" "$@"
start_nginx "$RUN_DIR" "$PORT" on "${FANOUT_MAX_BODY_BYTES:-8388608}"

cat <<MSG

Fanout is running on http://127.0.0.1:$PORT  (logs: $RUN_DIR/fanout.log, $RUN_DIR/nginx.log)
Try:
  curl -s http://127.0.0.1:$PORT/batch -H 'Content-Type: application/json' \\
    -d '{"tasks":[{"id":"a","op":"echo","input":{"hello":"world"}},{"id":"b","op":"sleep","input":{"ms":50}},{"id":"c","op":"hash","input":{"algorithm":"sha256","data":"abc"},"depends_on":["a"]}]}'
  curl -s http://127.0.0.1:$PORT/batch -H 'Content-Type: application/json' \\
    -d '{"tasks":[{"id":"user","op":"http","input":{"upstream":"demo","path":"/users/42"}},{"id":"team","op":"http","input":{"upstream":"demo","path":"/teams/{id}","params":{"id":{"\$ref":"user#/body/team_id"}}}}]}'
  curl -si http://127.0.0.1:$PORT/batch -H 'Content-Type: application/json' -H 'Prefer: respond-async' \\
    -d '{"tasks":[{"id":"a","op":"sleep","input":{"ms":2000}}]}'        # then GET the Location
Press Ctrl-C to stop.

MSG
# Stay in the foreground until a signal arrives or a child exits.
wait -n "$FANOUT_PID" "$NGINX_PID" || true
