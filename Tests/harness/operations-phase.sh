# Sourced by harness.sh: what an operator and a terminal user see. Request ids and trace context
# end to end, /metrics after real traffic, JSON logs, the `fanout` client against the real stack,
# and the deployment files (systemd units, production nginx configuration).

echo "phase 12: request ids, metrics, logs, the terminal client, deployment files"
OPS_UPSTREAM_PORT=$(free_port)
python3 "$FANOUT_ROOT/Tests/harness/upstream.py" "$OPS_UPSTREAM_PORT" 2>>"$RUN_DIR/upstream.log" &
OPS_UPSTREAM_PID=$!
PIDS="${PIDS:-} $OPS_UPSTREAM_PID"
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$OPS_UPSTREAM_PORT/counts" && break; sleep 0.05; done
: >"$RUN_DIR/fanout.log"
start_stack on FANOUT_LOG_FORMAT=json FANOUT_DATA_DIR="$RUN_DIR/data-ops" \
    FANOUT_UPSTREAMS="echo=http://127.0.0.1:$OPS_UPSTREAM_PORT/echo" || { fail "stack starts"; exit 1; }

# Request ids: the client's sane X-Request-Id is kept (nginx's map), else nginx's $request_id.
request rid_client GET /healthz "" -H 'X-Request-Id: harness-req-42'
check "X-Request-Id: the client's id comes back" [ "$(header_of rid_client X-Request-Id)" = harness-req-42 ]
request rid_nginx GET /healthz "" -H 'X-Request-Id: has spaces'
NGINX_ID=$(header_of rid_nginx X-Request-Id)
check "X-Request-Id: nginx's own id replaces an unusable one ($NGINX_ID)" bash -c "[[ '$NGINX_ID' =~ ^[0-9a-f]{32}$ ]]"

# The same id and the client's trace reach the upstream on every sub-request.
TRACE=4bf92f3577b34da6a3ce929d0e0e4736
request traced POST /batch \
    '{"tasks":[{"id":"a","op":"http","input":{"upstream":"echo","path":"/a"}},{"id":"b","op":"http","input":{"upstream":"echo","path":"/b"}}]}' \
    -H 'X-Request-Id: harness-trace-1' -H "traceparent: 00-$TRACE-00f067aa0ba902b7-01" -H 'tracestate: vendor=7'
SEEN=$(jq -c '[.results[].output.body.headers | [.["x-request-id"], (.traceparent | split("-") | .[1], .[3]), .tracestate]] | unique' \
    "$RESPONSES/traced.body")
check "sub-requests carry the request id, the client's trace id and flags, and its tracestate ($SEEN)" \
    [ "$SEEN" = "[[\"harness-trace-1\",\"$TRACE\",\"01\",\"vendor=7\"]]" ]
PARENT=$(jq -r '.results[0].output.body.headers.traceparent | split("-")[2]' "$RESPONSES/traced.body")
check "sub-requests' parent span is Fanout's, not the client's ($PARENT)" \
    bash -c "[[ '$PARENT' =~ ^[0-9a-f]{16}$ && '$PARENT' != 00f067aa0ba902b7 ]]"
request untraced POST /batch '{"tasks":[{"id":"a","op":"http","input":{"upstream":"echo","path":"/a"}}]}'
check "without a traceparent, a sub-request starts a trace of its own" \
    bash -c "jq -re '.results[0].output.body.headers.traceparent | test(\"^00-[0-9a-f]{32}-[0-9a-f]{16}-00$\")' '$RESPONSES/untraced.body' >/dev/null"

# Asynchronous batches keep the id of the request that submitted them.
request rid_job POST /batch '{"tasks":[{"id":"a","op":"echo"}]}' -H 'Prefer: respond-async' -H 'X-Request-Id: harness-job-9'
RID_JOB=$(jq_of rid_job .id)
wait_for_job "$RID_JOB" >/dev/null
request rid_job_read GET "/batch/$RID_JOB"
check "the job document records the submitting request's id" [ "$(jq_of rid_job_read .request_id)" = harness-job-9 ]

# JSON logs: every line an object; the request's line has its id, status, task count, duration.
sleep 0.2
check "--log-format json: every log line is one JSON object" \
    python3 -c 'import json, sys; [json.loads(l) for l in open(sys.argv[1]) if l.strip()]' "$RUN_DIR/fanout.log"
LINE=$(grep '"request_id":"harness-trace-1"' "$RUN_DIR/fanout.log" | tail -1)
check "the request's log line has its id, path, status, tasks and duration" \
    bash -c "jq -e '.msg == \"request\" and .path == \"/batch\" and .status == \"200\" and .tasks == \"2\" and (.duration_ms | tonumber) >= 0' <<<'$LINE' >/dev/null"
check "no request body or header value in the logs" bash -c "! grep -q 'vendor=7\|00f067aa0ba902b7' '$RUN_DIR/fanout.log'"

# Metrics after that traffic.
request metrics GET /metrics
M="$RESPONSES/metrics.body"
metric() { grep -F "$1 " "$M" | head -1 | awk '{print $NF}'; }
check "/metrics: text format 0.0.4" bash -c "grep -q 'text/plain; version=0.0.4' '$RESPONSES/metrics.headers'"
check "/metrics: POST /batch 200 counted by route template" \
    awk "BEGIN { exit !($(metric 'fanout_http_requests_total{route="/batch",method="POST",status="200"}') >= 2) }"
check "/metrics: job reads are one route, never one series per id" \
    bash -c "grep -q 'route=\"/batch/{id}\"' '$M' && ! grep -q '$RID_JOB' '$M'"
check "/metrics: http tasks by status and calls by upstream" \
    bash -c "[ \"$(metric 'fanout_tasks_total{operation="http",status="succeeded"}')\" -ge 3 ] && [ \"$(metric 'fanout_upstream_requests_total{upstream="echo",status="200"}')\" -ge 3 ]"
check "/metrics: request duration histogram with OpenTelemetry's buckets" \
    grep -q 'fanout_http_server_request_duration_seconds_bucket{route="/batch",method="POST",status="200",le="0.075"}' "$M"
check "/metrics: upstream call durations and job store writes" \
    bash -c "grep -q 'fanout_upstream_request_duration_seconds_count{upstream=\"echo\"}' '$M' && grep -q 'fanout_job_store_write_duration_seconds_count{operation=\"submit\"}' '$M'"
check "/metrics: process memory, descriptors and FastCGI connections" \
    bash -c "awk '/^process_resident_memory_bytes /{m=\$2} /^process_open_fds /{f=\$2} /^fanout_fastcgi_connections /{c=\$2} END{exit !(m>1e6 && f>3 && c>=1)}' '$M'"

# The terminal client against the real stack.
FANOUT_CLI=("$BINARY")
cat >"$RUN_DIR/ok.json" <<'JSON'
{"tasks":[{"id":"a","op":"echo","input":{"x":1}},{"id":"b","op":"sleep","input":{"ms":20},"depends_on":["a"]}]}
JSON
cat >"$RUN_DIR/partial.json" <<'JSON'
{"tasks":[{"id":"a","op":"echo"},{"id":"b","op":"fail","input":{"code":"nope","message":"failed on purpose"}}]}
JSON
cat >"$RUN_DIR/long.json" <<'JSON'
{"tasks":[{"id":"a","op":"sleep","input":{"ms":300}},{"id":"b","op":"sleep","input":{"ms":300}},{"id":"c","op":"sleep","input":{"ms":300},"depends_on":["a"]},{"id":"d","op":"sleep","input":{"ms":300},"depends_on":["c"]}]}
JSON
cat >"$RUN_DIR/endless.json" <<'JSON'
{"tasks":[{"id":"a","op":"sleep","input":{"ms":8000}}]}
JSON
cli() { # cli NAME ARGS...: runs the client; stdout, stderr and exit code in $RUN_DIR/cli-NAME.*
    local name=$1
    shift
    local code=0
    "${FANOUT_CLI[@]}" "$@" >"$RUN_DIR/cli-$name.out" 2>"$RUN_DIR/cli-$name.err" </dev/null || code=$?
    echo $code >"$RUN_DIR/cli-$name.code"
}
code_of() { cat "$RUN_DIR/cli-$1.code"; }
cli submit_ok submit "$RUN_DIR/ok.json" --url "$BASE"
check "fanout submit: every task succeeded: exit 0, a line per task and a summary" \
    bash -c "[ $(code_of submit_ok) = 0 ] && grep -q '✓ a' '$RUN_DIR/cli-submit_ok.out' && grep -q '^succeeded: 2 succeeded' '$RUN_DIR/cli-submit_ok.out'"
cli submit_partial submit "$RUN_DIR/partial.json" --url "$BASE" --json
check "fanout submit --json: some failed: exit 1, the server's JSON on stdout" \
    bash -c "[ $(code_of submit_partial) = 1 ] && jq -e '.status == \"partial\"' '$RUN_DIR/cli-submit_partial.out' >/dev/null"
cli submit_stream submit "$RUN_DIR/ok.json" --url "$BASE" --stream --json
check "fanout submit --stream: a JSON line per task, then the summary line" \
    bash -c "[ $(code_of submit_stream) = 0 ] && [ \$(wc -l <'$RUN_DIR/cli-submit_stream.out') = 3 ] && tail -1 '$RUN_DIR/cli-submit_stream.out' | jq -e '.status == \"succeeded\"' >/dev/null"
cli submit_bad submit - --url "$BASE"
check "fanout submit of an invalid batch: exit 65, the problem on stderr" \
    bash -c "[ $(code_of submit_bad) = 65 ] && grep -q '400' '$RUN_DIR/cli-submit_bad.err'"
cli submit_async submit "$RUN_DIR/long.json" --url "$BASE" --async
ASYNC_ID=$(cat "$RUN_DIR/cli-submit_async.out")
check "fanout submit --async: prints the job id ($ASYNC_ID)" bash -c "[ $(code_of submit_async) = 0 ] && [[ '$ASYNC_ID' =~ ^[0-9a-f]{32}$ ]]"
cli watch watch "$ASYNC_ID" --url "$BASE" --interval 0.1 --every 0.2
check "fanout watch: follows the job to the end, exit 0, plain progress lines on stderr (not a terminal)" \
    bash -c "[ $(code_of watch) = 0 ] && grep -q 'running: [0-9]/4 tasks finished' '$RUN_DIR/cli-watch.err' && grep -q 'succeeded: 4/4 tasks finished' '$RUN_DIR/cli-watch.out' && ! grep -q \$'\\e\\[' '$RUN_DIR/cli-watch.err'"
cli status_done status "$ASYNC_ID" --url "$BASE" --json
check "fanout status --json: the job document, exit 0" \
    bash -c "[ $(code_of status_done) = 0 ] && jq -e '.status == \"succeeded\" and (.results | length) == 4' '$RUN_DIR/cli-status_done.out' >/dev/null"
cli submit_endless submit "$RUN_DIR/endless.json" --url "$BASE" --async
ENDLESS_ID=$(cat "$RUN_DIR/cli-submit_endless.out")
"${FANOUT_CLI[@]}" watch "$ENDLESS_ID" --url "$BASE" --interval 0.1 >"$RUN_DIR/cli-watch_cancel.out" 2>&1 &
WATCHER=$!
sleep 0.5
cli cancel cancel "$ENDLESS_ID" --url "$BASE"
WATCH_CODE=0
wait $WATCHER || WATCH_CODE=$?
check "fanout cancel: exit 0, and the watch of that job ends with exit 2 (cancelled)" \
    bash -c "[ $(code_of cancel) = 0 ] && [ $WATCH_CODE = 2 ]"
cli status_cancelled status "$ENDLESS_ID" --url "$BASE"
check "fanout status of a cancelled job: exit 2" [ "$(code_of status_cancelled)" = 2 ]
cli status_unknown status 0123456789abcdef0123456789abcdef --url "$BASE"
check "fanout status of an unknown job: exit 65" [ "$(code_of status_unknown)" = 65 ]
cli ops ops --url "$BASE"
check "fanout ops: one line per operation" bash -c "grep -q '^echo ' '$RUN_DIR/cli-ops.out' && grep -q '^http ' '$RUN_DIR/cli-ops.out'"
cli unreachable ops --url "http://127.0.0.1:$(free_port)"
check "fanout against nothing: exit 69" [ "$(code_of unreachable)" = 69 ]
cli usage submit --url "$BASE"
check "fanout with a missing argument: exit 64 (usage)" [ "$(code_of usage)" = 64 ]
stop_stack
kill "$OPS_UPSTREAM_PID" 2>/dev/null

# Deployment files: the systemd units as systemd reads them, the production nginx configuration
# as nginx reads it.
command -v systemd-analyze >/dev/null || ensure_packages systemd >/dev/null 2>&1 || true
if command -v systemd-analyze >/dev/null; then
    UNITS="$RUN_DIR/units"
    mkdir -p "$UNITS"
    cp "$FANOUT_ROOT/deploy/fanout.socket" "$FANOUT_ROOT/deploy/fanout.service" "$UNITS/"
    sed -i "s|/usr/local/bin/fanout|$(realpath "$BINARY")|" "$UNITS/fanout.service"
    check "deploy/fanout.socket and fanout.service pass systemd-analyze verify" \
        bash -c "cd '$UNITS' && systemd-analyze verify ./fanout.socket ./fanout.service 2>&1 | tee '$RUN_DIR/systemd-verify.txt' | { ! grep -q .; }"
    check "fanout.service hands the socket over on standard input, with a dynamic user" \
        bash -c "grep -qx 'StandardInput=socket' '$UNITS/fanout.service' && grep -qx 'DynamicUser=yes' '$UNITS/fanout.service'"
else
    fail "systemd-analyze verify of the units" "systemd-analyze could not be installed on this machine"
fi
PROD="$RUN_DIR/nginx-production"
mkdir -p "$PROD"
# The configuration includes fanout_params from beside nginx.conf, as /etc/nginx/fanout_params.
cp "$FANOUT_ROOT/nginx/fanout_params" "$PROD/"
printf 'pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp {\n    include %s;\n}\n' "$PROD" \
    "$FANOUT_ROOT/nginx/fanout-production.conf" >"$PROD/nginx.conf"
check "nginx/fanout-production.conf passes nginx -t" \
    bash -c "'$(nginx_binary)' -t -q -p '$PROD' -c '$PROD/nginx.conf' 2>'$RUN_DIR/nginx-production.txt'"
