#!/usr/bin/env bash
# The real path, end to end: curl -> nginx -> Unix socket -> spawn-fcgi'd Fanout.
# Usage: harness.sh PATH/TO/fanout
set -uo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"

BINARY=${1:?usage: harness.sh PATH/TO/fanout}
RUN_DIR=$(mktemp -d /tmp/fanout-harness.XXXXXX)
RESPONSES="$RUN_DIR/responses"
mkdir -p "$RESPONSES"
PASSED=0
FAILED=0
FANOUT_PID=""
NGINX_PID=""

cleanup() {
    stop_nginx
    stop_fanout >/dev/null 2>&1 || true
    [ -z "${PIDS:-}" ] || kill $PIDS 2>/dev/null || true
    if [ $FAILED -eq 0 ]; then rm -rf "$RUN_DIR"; else echo "logs kept in $RUN_DIR" >&2; fi
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf '  FAIL  %s%s\n' "$1" "${2:+ — $2}"; }
check() { # check NAME COMMAND...: passes when the command succeeds
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# request NAME METHOD PATH [BODY] [CURL ARGS...]: saves status, headers and body under
# $RESPONSES/NAME.{status,headers,body}, also recording them for the OpenAPI check.
request() {
    local name=$1 method=$2 path=$3 body=${4-}
    shift 3
    [ $# -gt 0 ] && shift
    local args=(-s -o "$RESPONSES/$name.body" -D "$RESPONSES/$name.headers" -w '%{http_code}' -X "$method")
    if [ -n "$body" ]; then args+=(-H "Content-Type: ${CONTENT_TYPE:-application/json}" --data-binary "$body"); fi
    curl "${args[@]}" "$@" "$BASE$path" >"$RESPONSES/$name.status"
    printf '%s %s\n' "$method" "$path" >"$RESPONSES/$name.request"
}
status_of() { cat "$RESPONSES/$1.status"; }
body_of() { cat "$RESPONSES/$1.body"; }
header_of() { grep -i "^$2:" "$RESPONSES/$1.headers" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
jq_of() { jq -r "$2" "$RESPONSES/$1.body"; }
fd_count() { ls "/proc/$FANOUT_PID/fd" | wc -l; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$FANOUT_PID/status"; }

start_stack() { # start_stack KEEP_CONN [NAME=VALUE for Fanout...]
    local keep=$1
    shift
    FANOUT_ENV=(FANOUT_SHUTDOWN_GRACE_SECONDS=10 FANOUT_DATA_DIR="$RUN_DIR/data" "$@")
    PORT=$(free_port)
    BASE="http://127.0.0.1:$PORT"
    start_fanout "$RUN_DIR" "$BINARY" && start_nginx "$RUN_DIR" "$PORT" "$keep" "${NGINX_MAX_BODY:-8388608}"
}
stop_stack() {
    stop_nginx
    stop_fanout
}

# wait_for_job ID [SECONDS]: polls GET /batch/ID until the job has finished; prints its status.
wait_for_job() {
    local id=$1 tries=$((${2:-10} * 20)) status=""
    while [ $tries -gt 0 ]; do
        status=$(curl -s "$BASE/batch/$id" | jq -r .status)
        case $status in queued | running) ;; *) break ;; esac
        tries=$((tries - 1))
        sleep 0.05
    done
    echo "$status"
}
wait_for_job_as() { # wait_for_job_as ID [CURL ARGS...]: as wait_for_job, with the client's headers
    local id=$1 tries=200 status=""
    shift
    while [ $tries -gt 0 ]; do
        status=$(curl -s "$@" "$BASE/batch/$id" | jq -r .status)
        case $status in queued | running) ;; *) break ;; esac
        tries=$((tries - 1))
        sleep 0.05
    done
    echo "$status"
}
async() { # async BODY [CURL ARGS...]: submits BODY with Prefer: respond-async; prints the job id
    local body=$1
    shift
    curl -s -H 'Content-Type: application/json' -H 'Prefer: respond-async' "$@" -d "$body" "$BASE/batch" | jq -r .id
}

quick_batches() { # 20 one-echo batches in a row; sets QUICK_OK (all 200) and QUICK_MS (their time)
    local start=$(date +%s%N) i
    QUICK_OK=1
    for i in $(seq 1 20); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
            -d '{"tasks":[{"id":"q","op":"echo"}]}' "$BASE/batch")" = 200 ] || QUICK_OK=0
    done
    QUICK_MS=$((($(date +%s%N) - start) / 1000000))
}

sleeps_batch() { # sleeps_batch COUNT MS: a batch of COUNT sleeps
    local tasks=() i
    for ((i = 0; i < $1; i++)); do tasks+=("{\"id\":\"s$i\",\"op\":\"sleep\",\"input\":{\"ms\":$2}}"); done
    local IFS=,
    printf '{"tasks":[%s]}' "${tasks[*]}"
}

# HARNESS_ONLY=NAME runs only Tests/harness/NAME-phase.sh, for working on one phase.
if [ -n "${HARNESS_ONLY:-}" ]; then
    source "$(dirname "$0")/$HARNESS_ONLY-phase.sh"
    echo
    echo "harness: $PASSED passed, $FAILED failed"
    [ $FAILED -eq 0 ]
    exit
fi

# ---------------------------------------------------------------------------------------------
echo "phase 1: contract over kept-alive FastCGI connections (fastcgi_keep_conn on)"
start_stack on || { fail "stack starts"; exit 1; }
FD_BASELINE=$(fd_count)

request health GET /healthz
check "GET /healthz is 200 ok" [ "$(status_of health)" = 200 -a "$(jq_of health .status)" = ok ]

request ops GET /ops
check "GET /ops lists the four built-ins and http" [ "$(jq_of ops '[.operations[].name] | sort | join(",")')" = "echo,fail,hash,http,sleep" ]

EXAMPLE='{"tasks":[{"id":"a","op":"echo","input":{"hello":"world"}},{"id":"b","op":"sleep","input":{"ms":50},"timeout_ms":1000},{"id":"c","op":"hash","input":{"algorithm":"sha256","data":"abc"},"depends_on":["a"]}],"concurrency":8,"timeout_ms":30000,"on_error":"continue"}'
request example POST /batch "$EXAMPLE"
check "the api.md example batch succeeds" [ "$(status_of example)" = 200 -a "$(jq_of example .status)" = succeeded ]
check "results are in request order" [ "$(jq_of example '[.results[].id] | join(",")')" = "a,b,c" ]
check "echo output is the input" [ "$(jq -c '.results[0].output' "$RESPONSES/example.body")" = '{"hello":"world"}' ]
check "hash digest of abc" [ "$(jq_of example '.results[2].output.digest')" = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad ]
check "summary counts" [ "$(jq -c '.summary | [.total,.succeeded,.failed,.skipped,.cancelled]' "$RESPONSES/example.body")" = "[3,3,0,0,0]" ]

request partial POST /batch '{"tasks":[{"id":"slow","op":"sleep","input":{"ms":2000},"timeout_ms":100},{"id":"dep","op":"echo","depends_on":["slow"]},{"id":"ok","op":"echo","input":1},{"id":"f","op":"fail","input":{"code":"teapot","message":"short and stout"}}]}'
check "timeout, skip and fail give a partial batch" [ "$(jq -c '[.status, [.results[].status]]' "$RESPONSES/partial.body")" = '["partial",["failed","skipped","succeeded","failed"]]' ]
check "error codes timeout, dependency_failed, teapot" [ "$(jq -c '[.results[].error.code]' "$RESPONSES/partial.body")" = '["timeout","dependency_failed",null,"teapot"]' ]

request deadline POST /batch '{"tasks":[{"id":"x","op":"sleep","input":{"ms":3000}},{"id":"y","op":"echo","depends_on":["x"]}],"timeout_ms":150}'
check "batch deadline cancels with batch_timeout" [ "$(jq -c '[.status, [.results[].error.code]]' "$RESPONSES/deadline.body")" = '["failed",["batch_timeout","batch_timeout"]]' ]

request invalid POST /batch '{"tasks":[{"id":"a","op":"nope"},{"id":"b","op":"sleep","input":{"ms":-1}},{"id":"c","op":"echo","depends_on":["c"]}]}'
check "invalid batch is 400 problem listing every problem" [ "$(status_of invalid)" = 400 -a "$(jq_of invalid '.errors | length')" = 3 ]
check "problem documents have the problem media type" [ "$(header_of invalid Content-Type)" = application/problem+json ]
check "problem has type, title, status, detail" [ "$(jq -c '[.type, .title, .status, (.detail|type)]' "$RESPONSES/invalid.body")" = '["/problems/invalid-request","Invalid request",400,"string"]' ]

request cycle POST /batch '{"tasks":[{"id":"a","op":"echo","depends_on":["b"]},{"id":"b","op":"echo","depends_on":["a"]}]}'
check "a dependency cycle is 400" [ "$(status_of cycle)" = 400 -a "$(jq_of cycle '.errors[0].message' | grep -c cycle)" = 1 ]

request malformed POST /batch '{"tasks": [ '
check "malformed JSON is 400" [ "$(status_of malformed)" = 400 -a "$(jq_of malformed '.errors[0].field')" = body ]

CONTENT_TYPE=text/plain request media POST /batch '{"tasks":[]}'
check "a non-JSON content type is 415" [ "$(status_of media)" = 415 ]

request method GET /batch
check "GET /batch is 405 with Allow: POST" [ "$(status_of method)" = 405 -a "$(header_of method Allow)" = POST ]
request trace TRACE /batch
check "TRACE, which nginx answers itself, is a 405 problem document with Allow" \
    [ "$(status_of trace)" = 405 -a -n "$(header_of trace Allow)" -a "$(jq_of trace .type)" = /problems/method-not-allowed ]

request missing GET /nothing-here
check "an unknown path is 404 problem" [ "$(status_of missing)" = 404 -a "$(jq_of missing .status)" = 404 ]

request op_echo POST /ops/echo '{"x":[1,2]}'
check "POST /ops/echo answers the input" [ "$(status_of op_echo)" = 200 -a "$(jq -c . "$RESPONSES/op_echo.body")" = '{"x":[1,2]}' ]
request op_hash POST /ops/hash '{"algorithm":"sha512","data":"YWJj","encoding":"base64"}'
check "POST /ops/hash answers the digest" [ "$(jq_of op_hash .digest | cut -c1-16)" = ddaf35a193617aba ]
request op_unknown POST /ops/nope '{}'
check "POST /ops/unknown is 404" [ "$(status_of op_unknown)" = 404 ]
request op_invalid POST /ops/sleep '{"ms":"soon"}'
check "POST /ops/sleep with bad input is 400" [ "$(status_of op_invalid)" = 400 -a "$(jq_of op_invalid '.errors[0].field')" = input.ms ]
request op_fail POST /ops/fail '{"code":"teapot"}'
check "POST /ops/fail is 422 with the code" [ "$(status_of op_fail)" = 422 -a "$(jq_of op_fail .code)" = teapot ]

# A body of several hundred KiB: 4000 echo tasks with ~100-byte inputs, across many records.
python3 -c '
import json
tasks = [{"id": "t%d" % i, "op": "echo", "input": {"n": i, "pad": "x" * 100}} for i in range(4000)]
print(json.dumps({"tasks": tasks}))' >"$RUN_DIR/large.json"
curl -s -o "$RESPONSES/large.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "@$RUN_DIR/large.json" "$BASE/batch" >"$RESPONSES/large.status"
check "a $(($(stat -c %s "$RUN_DIR/large.json") / 1024)) KiB batch of 4000 tasks succeeds in order" \
    [ "$(status_of large)" = 200 -a "$(jq -r '[.summary.succeeded, .results[3999].id, .results[3999].output.n] | join(",")' "$RESPONSES/large.body")" = "4000,t3999,3999" ]

# The heap keeps what large batches free, for the next one, and gives it back within seconds
# of the last (HeapTrimmer): a burst of the largest batches leaves no lasting growth.
python3 -c '
import json
print(json.dumps({"tasks": [{"id": "t%d" % i, "op": "echo", "input": {"n": i}} for i in range(100000)]}))' >"$RUN_DIR/largest.json"
RSS_BEFORE=$(rss_kib)
for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -H 'Content-Type: application/json' --data-binary "@$RUN_DIR/largest.json" "$BASE/batch"
done
RSS_BURST=$(rss_kib)
sleep 7
RSS_LATER=$(rss_kib)
check "five batches of 100,000 tasks: the heap given back within 7 s (KiB: before $RSS_BEFORE, after $RSS_BURST, 7 s later $RSS_LATER)" \
    [ "$RSS_LATER" -lt $((RSS_BEFORE + 20480)) ]

# nginx's own 413 (beyond client_max_body_size) is a problem document too.
head -c 9000000 /dev/zero | tr '\0' ' ' >"$RUN_DIR/huge.json"
curl -s -o "$RESPONSES/huge.body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "@$RUN_DIR/huge.json" "$BASE/batch" >"$RESPONSES/huge.status"
check "a body over the limit is 413 problem" [ "$(status_of huge)" = 413 -a "$(jq_of huge .status)" = 413 ]

# A slow batch must not delay quick requests.
curl -s -o /dev/null -H 'Content-Type: application/json' -d "$(sleeps_batch 3 3000)" "$BASE/batch" &
SLOW=$!
sleep 0.2
quick_batches
check "20 quick batches answer in ${QUICK_MS} ms while a 3 s batch runs" [ $QUICK_OK = 1 -a $QUICK_MS -lt 2000 ]
kill -0 $SLOW 2>/dev/null && check "the slow batch is still running meanwhile" true || fail "the slow batch is still running meanwhile"
wait $SLOW

# A client that disconnects mid-batch: its batch is cancelled (the log shows it ending early).
curl -s -o /dev/null --max-time 0.5 -H 'Content-Type: application/json' -d "$(sleeps_batch 7 4000)" "$BASE/batch"
sleep 0.5
LINE=$(grep 'path=/batch' "$RUN_DIR/fanout.log" | grep -E 'tasks=7( |$)' | tail -1)
MS=$(sed -n 's/.*duration_ms=\([0-9]*\).*/\1/p' <<<"$LINE")
check "a vanished client's batch is cancelled (ended after ${MS:-?} ms, not 4000)" [ -n "$MS" ] && [ "$MS" -lt 2000 ]

# Streamed results: each task's line reaches the client through nginx as the task finishes.
STREAM_BODY='{"tasks":[{"id":"slow","op":"sleep","input":{"ms":2000}},{"id":"fast","op":"sleep","input":{"ms":50}}]}'
START=$(date +%s%N)
curl -sN -H 'Content-Type: application/json' -H 'Accept: application/x-ndjson' -d "$STREAM_BODY" "$BASE/batch" |
    while IFS= read -r line; do printf '%d %s\n' $((($(date +%s%N) - START) / 1000000)) "$line"; done >"$RUN_DIR/stream.txt"
FIRST_MS=$(head -1 "$RUN_DIR/stream.txt" | cut -d' ' -f1)
check "streamed: the 50 ms task's line arrives after ${FIRST_MS:-?} ms, long before the 2 s task ends" \
    [ "$(head -1 "$RUN_DIR/stream.txt" | cut -d' ' -f2- | jq -r .id)" = fast ] && [ "${FIRST_MS:-9999}" -lt 1000 ]
check "streamed: lines come in completion order, then the summary line" \
    [ "$(cut -d' ' -f2- "$RUN_DIR/stream.txt" | jq -rs '[.[] | .id // .status] | join(",")')" = "fast,slow,succeeded" ]
request stream POST /batch '{"tasks":[{"id":"a","op":"echo","input":1},{"id":"b","op":"fail","input":{"code":"x"}}]}' \
    -H 'Accept: application/x-ndjson'
check "streamed: 200 application/x-ndjson, one line per task and a summary" [ "$(status_of stream)" = 200 -a \
    "$(header_of stream Content-Type)" = application/x-ndjson -a "$(jq -s -c '[length, .[2].summary.total]' "$RESPONSES/stream.body")" = "[3,2]" ]
request stream_invalid POST /batch '{"tasks":[{"id":"a","op":"nope"}]}' -H 'Accept: application/x-ndjson'
check "streamed: an invalid batch is still a 400 problem" [ "$(status_of stream_invalid)" = 400 -a \
    "$(header_of stream_invalid Content-Type)" = application/problem+json ]
curl -sN -o /dev/null --max-time 0.5 -H 'Content-Type: application/json' -H 'Accept: application/x-ndjson' \
    -d "$(sleeps_batch 9 4000)" "$BASE/batch"
sleep 0.5
LINE=$(grep 'path=/batch' "$RUN_DIR/fanout.log" | grep -E 'tasks=9( |$)' | tail -1)
MS=$(sed -n 's/.*duration_ms=\([0-9]*\).*/\1/p' <<<"$LINE")
check "streamed: a client leaving mid-stream cancels the batch (ended after ${MS:-?} ms, not 4000)" \
    [ -n "$MS" ] && [ "$MS" -lt 2000 ]

# Asynchronous jobs: submit, poll, results, cancel, idempotent retries.
ASYNC_BODY='{"tasks":[{"id":"a","op":"sleep","input":{"ms":300}},{"id":"b","op":"echo","input":2,"depends_on":["a"]}]}'
request async_submit POST /batch "$ASYNC_BODY" -H 'Prefer: respond-async'
JOB=$(jq_of async_submit .id)
# `running` when the responder had a free slot and started the job at once, `queued` otherwise.
check "async: 202 with Location, Retry-After and Preference-Applied" [ "$(status_of async_submit)" = 202 -a \
    "$(header_of async_submit Location)" = "/batch/$JOB" -a -n "$(header_of async_submit Retry-After)" -a \
    "$(header_of async_submit Preference-Applied)" = respond-async -a \
    "$(jq_of async_submit '.status | IN("queued", "running")')" = true ]
check "async: the job id is 32 hex digits" grep -qE '^[0-9a-f]{32}$' <<<"$JOB"
request async_running GET "/batch/$JOB"
check "async: GET while it runs shows its status and progress" [ "$(status_of async_running)" = 200 -a \
    "$(jq -c '[(.status | IN("queued","running")), .progress.total, .progress.pending, has("results")]' "$RESPONSES/async_running.body")" = "[true,2,2,false]" ]
check "async: the job finishes" [ "$(wait_for_job "$JOB")" = succeeded ]
request async_done GET "/batch/$JOB"
check "async: a finished job has the results in request order and the summary" [ \
    "$(jq -c '[.status, [.results[].id], .summary.succeeded, .progress.pending, (.finished_at | type)]' "$RESPONSES/async_done.body")" = \
    '["succeeded",["a","b"],2,0,"string"]' ]
request async_invalid POST /batch '{"tasks":[{"id":"a","op":"nope"}]}' -H 'Prefer: respond-async'
check "async: a bad batch is still an immediate 400" [ "$(status_of async_invalid)" = 400 ]
request async_unknown GET /batch/0123456789abcdef0123456789abcdef
check "async: an unknown id is a 404 problem" [ "$(status_of async_unknown)" = 404 -a "$(jq_of async_unknown .type)" = /problems/job-not-found ]
request async_method PUT "/batch/$JOB"
check "async: PUT /batch/{id} is 405 with Allow" [ "$(status_of async_method)" = 405 -a "$(header_of async_method Allow)" = "GET, HEAD, DELETE" ]

request idem_first POST /batch "$ASYNC_BODY" -H 'Prefer: respond-async' -H 'Idempotency-Key: harness-key-1'
request idem_again POST /batch "$ASYNC_BODY" -H 'Prefer: respond-async' -H 'Idempotency-Key: harness-key-1'
check "async: the same Idempotency-Key and body return the same job" [ "$(status_of idem_again)" = 202 -a \
    "$(jq_of idem_again .id)" = "$(jq_of idem_first .id)" -a "$(header_of idem_again Idempotent-Replayed)" = true ]
request idem_other POST /batch '{"tasks":[{"id":"x","op":"echo"}]}' -H 'Prefer: respond-async' -H 'Idempotency-Key: harness-key-1'
check "async: the same key with another body is a 422 problem" [ "$(status_of idem_other)" = 422 -a \
    "$(jq_of idem_other .type)" = /problems/idempotency-key-reused ]

LONG=$(async '{"tasks":[{"id":"done","op":"echo","input":1},{"id":"long","op":"sleep","input":{"ms":10000}}]}')
until [ "$(curl -s "$BASE/batch/$LONG" | jq -r .status)" = running ]; do sleep 0.05; done
request cancel DELETE "/batch/$LONG"
check "async: DELETE cancels a running job, keeping finished results" [ "$(status_of cancel)" = 200 -a \
    "$(jq -c '[.status, [.results[].status]]' "$RESPONSES/cancel.body")" = '["cancelled",["succeeded","cancelled"]]' ]
request cancel_again DELETE "/batch/$LONG"
check "async: DELETE again answers the cancelled job again" [ "$(status_of cancel_again)" = 200 ]
request cancel_finished DELETE "/batch/$JOB"
check "async: DELETE of a job that succeeded is a 409 problem" [ "$(status_of cancel_finished)" = 409 ]

# A thousand queued jobs do not slow synchronous requests down.
seq 1 1000 | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
    -H 'Prefer: respond-async' -d '{"tasks":[{"id":"s","op":"sleep","input":{"ms":100}}]}' "$BASE/batch" >"$RUN_DIR/queued.txt"
check "async: 1000 jobs accepted" [ "$(grep -c '^202$' "$RUN_DIR/queued.txt")" = 1000 ]
quick_batches
check "async: with 1000 jobs queued, 20 synchronous batches answer in ${QUICK_MS} ms" [ $QUICK_OK = 1 -a $QUICK_MS -lt 2000 ]

# Many concurrent requests on kept connections: none fails, no descriptor leaks.
seq 1 300 | xargs -P 32 -I{} curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' \
    -d '{"tasks":[{"id":"a","op":"sleep","input":{"ms":5}},{"id":"b","op":"echo"}]}' "$BASE/batch" >"$RUN_DIR/burst.txt"
check "300 concurrent batches all answer 200" [ "$(grep -c '^200$' "$RUN_DIR/burst.txt")" = 300 ]
sleep 0.3
FD_AFTER=$(fd_count)
check "descriptors stay bounded ($FD_BASELINE before, $FD_AFTER after)" [ "$FD_AFTER" -le $((FD_BASELINE + 40)) ]
stop_stack
check "Fanout exits 0 on SIGTERM" [ $? = 0 ]

# ---------------------------------------------------------------------------------------------
echo "phase 2: one connection per request (fastcgi_keep_conn off), small limits"
NGINX_MAX_BODY=8388608 start_stack off FANOUT_MAX_BODY_BYTES=100000 FANOUT_MAX_BATCHES_IN_FLIGHT=2 \
    FANOUT_JOB_RETENTION_SECONDS=1 FANOUT_MAX_PENDING_JOBS=2 FANOUT_DATA_DIR="$RUN_DIR/data2" || { fail "stack starts"; exit 1; }
FD_BASELINE=$(fd_count)
request example_nokeep POST /batch "$EXAMPLE"
check "the example succeeds without keep-alive" [ "$(jq_of example_nokeep .status)" = succeeded ]
python3 -c 'print("{\"tasks\":[{\"id\":\"a\",\"op\":\"echo\",\"input\":\"" + "x" * 200000 + "\"}]}")' >"$RUN_DIR/mid.json"
curl -s -o "$RESPONSES/app413.body" -D "$RESPONSES/app413.headers" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "@$RUN_DIR/mid.json" "$BASE/batch" >"$RESPONSES/app413.status"
check "Fanout's own body limit answers 413 problem" [ "$(status_of app413)" = 413 -a "$(jq_of app413 .type)" = /problems/body-too-large ]
curl -s -o /dev/null -H 'Content-Type: application/json' -d "$(sleeps_batch 1 1500)" "$BASE/batch" &
B1=$!
curl -s -o /dev/null -H 'Content-Type: application/json' -d "$(sleeps_batch 1 1500)" "$BASE/batch" &
B2=$!
sleep 0.4
request overload POST /batch '{"tasks":[{"id":"a","op":"echo"}]}'
check "past the batches-in-flight limit: immediate 503 with Retry-After" [ "$(status_of overload)" = 503 -a -n "$(header_of overload Retry-After)" ]
wait $B1 $B2
EXPIRING=$(async '{"tasks":[{"id":"a","op":"echo"}]}')
check "async: a job finishes before its retention time" [ "$(wait_for_job "$EXPIRING")" = succeeded ]
sleep 1.2
request expired GET "/batch/$EXPIRING"
check "async: past its retention time a job is 404" [ "$(status_of expired)" = 404 ]
async '{"tasks":[{"id":"a","op":"sleep","input":{"ms":3000}}]}' >/dev/null
async '{"tasks":[{"id":"a","op":"sleep","input":{"ms":3000}}]}' >/dev/null
request jobs_full POST /batch '{"tasks":[{"id":"a","op":"echo"}]}' -H 'Prefer: respond-async'
check "async: past the pending-jobs limit: 503 with Retry-After" [ "$(status_of jobs_full)" = 503 -a \
    -n "$(header_of jobs_full Retry-After)" -a "$(jq_of jobs_full .type)" = /problems/too-many-jobs ]
seq 1 200 | xargs -P 16 -I{} curl -s -o /dev/null -w '%{http_code}\n' "$BASE/healthz" >"$RUN_DIR/burst2.txt"
check "200 concurrent requests without keep-alive all answer 200" [ "$(grep -c '^200$' "$RUN_DIR/burst2.txt")" = 200 ]
sleep 0.3
FD_AFTER=$(fd_count)
check "no descriptor leak without keep-alive ($FD_BASELINE before, $FD_AFTER after)" [ "$FD_AFTER" -le $((FD_BASELINE + 5)) ]
stop_stack

# ---------------------------------------------------------------------------------------------
echo "phase 3: graceful shutdown under load"
start_stack on || { fail "stack starts"; exit 1; }
for i in 1 2 3 4 5 6; do
    curl -s -o "$RUN_DIR/inflight$i.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        -d "$(sleeps_batch 5 1500)" "$BASE/batch" >"$RUN_DIR/inflight$i.status" &
    eval "IN$i=\$!"
done
sleep 0.4
kill -TERM "$FANOUT_PID"
sleep 0.3
request draining_health GET /healthz
check "/healthz answers 503 while draining" [ "$(status_of draining_health)" = 503 ]
request draining_batch POST /batch '{"tasks":[{"id":"a","op":"echo"}]}'
check "new batches are refused with 503 while draining" [ "$(status_of draining_batch)" = 503 ]
wait $IN1 $IN2 $IN3 $IN4 $IN5 $IN6
ALL_OK=1
for i in 1 2 3 4 5 6; do
    [ "$(cat "$RUN_DIR/inflight$i.status")" = 200 ] && [ "$(jq -r .status "$RUN_DIR/inflight$i.json")" = succeeded ] || ALL_OK=0
done
check "every in-flight batch finished and succeeded" [ $ALL_OK = 1 ]
EXIT=0
wait "$FANOUT_PID" || EXIT=$?
FANOUT_PID=""
check "Fanout exited 0 after draining" [ $EXIT = 0 ]
stop_nginx

# Restart and make sure the service is healthy at the end.
start_stack on || { fail "stack restarts"; exit 1; }
request final_health GET /healthz
check "healthy after restart" [ "$(status_of final_health)" = 200 ]
stop_stack

# ---------------------------------------------------------------------------------------------
echo "phase 5: jobs survive SIGKILL, and two responder processes share one store"
start_stack on FANOUT_DATA_DIR="$RUN_DIR/data5" FANOUT_MAX_RUNNING_JOBS=2 || { fail "stack starts"; exit 1; }
KILLED=()
for i in 1 2 3 4; do KILLED+=("$(async '{"tasks":[{"id":"a","op":"echo"},{"id":"b","op":"sleep","input":{"ms":2000}}]}')"); done
sleep 0.5
kill -KILL "$FANOUT_PID"
wait "$FANOUT_PID" 2>/dev/null
FANOUT_PID=""
start_fanout "$RUN_DIR" "$BINARY" || fail "Fanout restarts"
STATES=""
for id in "${KILLED[@]}"; do STATES+="$(wait_for_job "$id" 10):$(curl -s "$BASE/batch/$id" | jq -r '.error.code // "-"') "; done
check "after SIGKILL and restart: the 2 running jobs are failed/interrupted, the 2 queued ran ($STATES)" \
    [ "$STATES" = "failed:interrupted failed:interrupted succeeded:- succeeded:- " ]
stop_stack

# spawn-fcgi -F 2: two processes accept on one socket and share the data directory.
rm -f "$RUN_DIR/fanout.sock"
env FANOUT_DATA_DIR="$RUN_DIR/data6" FANOUT_SHUTDOWN_GRACE_SECONDS=10 \
    spawn-fcgi -s "$RUN_DIR/fanout.sock" -M 0660 -F 2 -- "$BINARY" >"$RUN_DIR/spawn.txt" 2>&1
PIDS=$(grep -oE 'PID: [0-9]+' "$RUN_DIR/spawn.txt" | cut -d' ' -f2 | tr '\n' ' ')
check "spawn-fcgi -F 2 started two processes" [ "$(wc -w <<<"$PIDS")" = 2 ]
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
start_nginx "$RUN_DIR" "$PORT" on
SHARED=()
# 20 jobs of 600 ms: 3 s of work for one process's 4 slots, well past the other's polling
# interval even when the first accepted every submission (jobs of 150 ms could all be done first).
for i in $(seq 1 20); do SHARED+=("$(async '{"tasks":[{"id":"a","op":"sleep","input":{"ms":600}}]}')"); done
DONE=0
for id in "${SHARED[@]}"; do [ "$(wait_for_job "$id" 20)" = succeeded ] && DONE=$((DONE + 1)); done
check "two processes (PIDs $PIDS): all 20 jobs succeeded" [ $DONE = 20 ]
RUNS=$(python3 -c 'import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT claims, owner_pid FROM jobs").fetchall()
print(sorted({c for c, _ in rows}), len({p for _, p in rows}))' "$RUN_DIR/data6/jobs.sqlite")
check "two processes: each job ran exactly once, and both processes ran jobs ($RUNS)" [ "$RUNS" = "[1] 2" ]
stop_nginx
for pid in $PIDS; do kill -TERM "$pid"; done
for pid in $PIDS; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
PIDS=""

# ---------------------------------------------------------------------------------------------
source "$(dirname "$0")/http-phase.sh"
source "$(dirname "$0")/clients-phase.sh"
source "$(dirname "$0")/overload-phase.sh"
source "$(dirname "$0")/schemathesis-phase.sh"
source "$(dirname "$0")/hostile-phase.sh"
source "$(dirname "$0")/multihost-phase.sh"
source "$(dirname "$0")/operations-phase.sh"

# ---------------------------------------------------------------------------------------------
echo "phase 4: responses match openapi.yaml"
if python3 "$FANOUT_ROOT/Tests/harness/check_openapi.py" "$FANOUT_ROOT/openapi.yaml" "$RESPONSES"; then
    pass "every recorded response matches openapi.yaml"
else
    fail "every recorded response matches openapi.yaml"
fi

echo
echo "harness: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
