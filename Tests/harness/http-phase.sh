# Sourced by harness.sh: the `http` operation and references, against a real upstream
# (Tests/harness/upstream.py) on a free loopback port.

echo "phase 6: http sub-requests and references against a real upstream"
UPSTREAM_PORT=$(free_port)
CLOSED_PORT=$(free_port)  # nothing listens there: connections are refused
python3 "$FANOUT_ROOT/Tests/harness/upstream.py" "$UPSTREAM_PORT" 2>"$RUN_DIR/upstream.log" &
UPSTREAM_PID=$!
PIDS="${PIDS:-} $UPSTREAM_PID"
UP="http://127.0.0.1:$UPSTREAM_PORT"
for _ in $(seq 1 100); do curl -fs -o /dev/null "$UP/counts" && break; sleep 0.05; done
cat >"$RUN_DIR/upstreams.json" <<JSON
{
  "api": {"url": "$UP", "forward_headers": ["authorization"], "timeout_ms": 10000},
  "plain": {"url": "$UP/echo"},
  "limited": {"url": "$UP", "methods": ["GET"], "path_prefixes": ["/echo/public", "/big"],
              "max_response_bytes": 1000, "headers": {"x-api-key": {"env": "HARNESS_API_KEY"}}},
  "down": {"url": "http://127.0.0.1:$CLOSED_PORT"},
  "impatient": {"url": "$UP", "timeout_ms": 300, "retry": {"max_attempts": 1}}
}
JSON
start_stack on FANOUT_UPSTREAMS_FILE="$RUN_DIR/upstreams.json" HARNESS_API_KEY=harness-key-123 \
    FANOUT_DATA_DIR="$RUN_DIR/data-http" || { fail "stack starts with upstreams"; exit 1; }

batch() { # batch NAME BODY [CURL ARGS...]
    local name=$1 body=$2
    shift 2
    request "$name" POST /batch "$body" "$@"
}
result() { jq -c "$2" "$RESPONSES/$1.body"; }

request ops_http GET /ops
check "GET /ops describes http and lists upstream names, never their URLs" \
    [ "$(jq -c '[.operations[] | select(.name == "http") | .input_schema.properties.upstream.enum[]]' "$RESPONSES/ops_http.body")" = '["api","down","impatient","limited","plain"]' ]
check "GET /ops shows no upstream URL" bash -c "! grep -q '127.0.0.1' '$RESPONSES/ops_http.body'"

# Concurrency: 20 calls of 300 ms each take about 300 ms together, not 6 s.
TASKS=$(for i in $(seq 1 20); do printf '{"id":"s%d","op":"http","input":{"upstream":"api","path":"/slow/c%d","query":{"ms":300}}},' "$i" "$i"; done)
batch http_concurrent "{\"tasks\":[${TASKS%,}]}"
check "20 slow calls run concurrently (batch took $(result http_concurrent .summary.duration_ms) ms)" \
    [ "$(result http_concurrent .status)" = '"succeeded"' -a "$(jq '.summary.duration_ms < 3000' "$RESPONSES/http_concurrent.body")" = true ]

# Data flow: one call's output feeds the next call's path, query, headers and body.
batch http_flow '{"tasks":[
  {"id":"user","op":"http","input":{"upstream":"api","path":"/echo/users/42","query":{"team":"blue sky","n":7}}},
  {"id":"next","op":"http","input":{"upstream":"api","method":"POST","path":"/echo/teams/{team}/members/{n}",
    "params":{"team":{"$ref":"user#/body/query/team/0"},"n":{"$ref":"user#/body/query/n/0"}},
    "query":{"from":{"$ref":"user#/body/path"},"tags":["a","b"],"skip":null},
    "headers":{"x-trace-note":{"$ref":"user#/body/method"}},
    "body":{"who":{"$ref":"user#/body/query"},"literal":{"$literal":{"$ref":"not a reference"}}}}}]}'
check "references fill path placeholders, percent-encoded as one segment" \
    [ "$(result http_flow '.results[1].output.body.path')" = '"/echo/teams/blue%20sky/members/7"' ]
check "references fill query values (arrays repeat, null is left out)" \
    [ "$(result http_flow '.results[1].output.body.query')" = '{"from":["/echo/users/42"],"tags":["a","b"]}' ]
check "references fill header values and the body; \$literal passes \$ref through" \
    [ "$(result http_flow '[.results[1].output.body.headers["x-trace-note"], .results[1].output.body.body]')" = '["GET",{"who":{"team":["blue sky"],"n":["7"]},"literal":{"$ref":"not a reference"}}]' ]
check "a body is sent as application/json" [ "$(result http_flow '.results[1].output.body.headers["content-type"]')" = '"application/json"' ]

batch http_unresolved '{"tasks":[{"id":"a","op":"http","input":{"upstream":"api","path":"/echo/a"}},
  {"id":"b","op":"echo","input":{"x":{"$ref":"a#/body/nothing/here"}}},
  {"id":"c","op":"http","input":{"upstream":"api","path":"/echo/{p}","params":{"p":{"$ref":"a#/body/headers"}}}},
  {"id":"d","op":"http","input":{"upstream":"api","path":"/status/500"}},
  {"id":"e","op":"echo","input":{"$ref":"d#/body"}}]}'
check "a pointer that finds nothing: reference_unresolved; a non-scalar param too; a failed reference: skipped" \
    [ "$(result http_unresolved '[.results[1:][] | .error.code]')" = '["reference_unresolved","reference_unresolved","upstream_status","dependency_failed"]' ]

upstream_calls() { curl -s "$UP/counts" | jq -c 'del(.["/counts"])'; }
CALLS_BEFORE=$(upstream_calls)
batch http_invalid '{"tasks":[
  {"id":"a","op":"http","input":{"upstream":"http://evil.example","path":"/x"}},
  {"id":"b","op":"http","input":{"upstream":"api","path":"http://evil.example/x"}},
  {"id":"c","op":"http","input":{"upstream":"api","path":"/echo/%2e%2e/admin"}},
  {"id":"d","op":"http","input":{"upstream":"api","path":"/echo\\..\\admin"}},
  {"id":"e","op":"http","input":{"upstream":"api","path":"/echo/x","headers":{"Cookie":"a=b"}}},
  {"id":"f","op":"http","input":{"upstream":"limited","method":"POST","path":"/echo/public/x"}},
  {"id":"g","op":"http","input":{"upstream":"limited","path":"/echo/private"}},
  {"id":"h","op":"http","input":{"upstream":"api","path":{"$ref":"a#/x"}}},
  {"id":"i","op":"echo","input":{"$ref":"nobody#/x"}},
  {"id":"j","op":"http","input":{"upstream":"api","path":"/x","headers":{"x-evil":"a\r\nHost: evil"}}}]}'
check "validation: 400 listing every problem, one per hostile task" \
    [ "$(status_of http_invalid)" = 400 -a "$(jq -c '[.errors[].task] | sort' "$RESPONSES/http_invalid.body")" = '["a","b","c","d","e","f","g","h","i","j"]' ]
check "validation: nothing ran (the upstream saw no call)" \
    [ "${CALLS_BEFORE:0:1}" = "{" -a "$(upstream_calls)" = "$CALLS_BEFORE" ]

batch http_statuses '{"tasks":[
  {"id":"nf","op":"http","input":{"upstream":"api","path":"/status/404"}},
  {"id":"err","op":"http","input":{"upstream":"api","path":"/status/500"}},
  {"id":"redirect","op":"http","input":{"upstream":"api","path":"/redirect"}},
  {"id":"redirect_ok","op":"http","input":{"upstream":"api","path":"/redirect","success_status":[302]}},
  {"id":"cookie","op":"http","input":{"upstream":"api","path":"/status/200","query":{"set_cookie":1}}},
  {"id":"text","op":"http","input":{"upstream":"api","path":"/text"}},
  {"id":"binary","op":"http","input":{"upstream":"api","path":"/binary"}}]}'
check "4xx/5xx: upstream_status with the response's status and body" \
    [ "$(result http_statuses '[.results[0].error.code, .results[0].error.response.status, .results[0].error.response.body.status, .results[1].error.response.status, .results[1].error.attempts]')" = '["upstream_status",404,404,500,1]' ]
check "redirects are not followed: a 302 is the answer, with its location" \
    [ "$(result http_statuses '[.results[2].error.response.status, .results[3].status, .results[3].output.headers.location]')" = '[302,"succeeded","/echo/redirected"]' ]
check "set-cookie is never returned" [ "$(result http_statuses '.results[4].output.headers | has("set-cookie")')" = false ]
check "non-JSON bodies: text and base64" \
    [ "$(result http_statuses '[.results[5].output.body_encoding, .results[6].output.body_encoding, .results[6].output.body]')" = '["text","base64","//4AAQ=="]' ]

START_MS=$(date +%s%3N)
batch http_retry '{"tasks":[
  {"id":"get","op":"http","input":{"upstream":"api","path":"/flaky/k1","query":{"fail":2,"retry_after":1}}},
  {"id":"post","op":"http","input":{"upstream":"api","method":"POST","path":"/flaky/k2","query":{"fail":1}}},
  {"id":"keyed","op":"http","input":{"upstream":"api","method":"POST","path":"/flaky/k3","query":{"fail":1},"idempotency_key":"note-81"}},
  {"id":"lowered","op":"http","input":{"upstream":"api","path":"/flaky/k4","query":{"fail":5},"retry":{"max_attempts":2}}}]}'
ELAPSED=$(($(date +%s%3N) - START_MS))
check "GET retried after Retry-After: 1 (twice): succeeded on attempt 3 after ≥ 2 s ($ELAPSED ms)" \
    [ "$(result http_retry '[.results[0].status, .results[0].output.attempts, .results[0].output.body.calls]')" = '["succeeded",3,3]' -a $ELAPSED -ge 2000 ]
check "POST without idempotency_key is not retried" [ "$(result http_retry '[.results[1].error.code, .results[1].error.attempts]')" = '["upstream_status",1]' ]
check "POST with idempotency_key is retried, and sends Idempotency-Key" \
    [ "$(result http_retry '[.results[2].output.attempts, .results[2].output.body.idempotency_key]')" = '[2,"note-81"]' ]
check "a task lowers max_attempts" [ "$(result http_retry '.results[3].error.attempts')" = 2 ]

START_MS=$(date +%s%3N)
batch http_retry_far '{"tasks":[{"id":"far","op":"http","input":{"upstream":"api","path":"/flaky/k5","query":{"fail":3,"retry_after":30}},"timeout_ms":5000}]}'
ELAPSED=$(($(date +%s%3N) - START_MS))
check "Retry-After past the deadline: fails at once with the upstream's status ($ELAPSED ms)" \
    [ "$(result http_retry_far '[.results[0].error.code, .results[0].error.attempts]')" = '["upstream_status",1]' -a $ELAPSED -lt 2000 ]

batch http_down '{"tasks":[{"id":"refused","op":"http","input":{"upstream":"down","path":"/x"}}]}'
check "connection refused: upstream_unreachable after 3 attempts" \
    [ "$(result http_down '[.results[0].error.code, .results[0].error.attempts]')" = '["upstream_unreachable",3]' ]

batch http_timeouts '{"tasks":[
  {"id":"task_timeout","op":"http","input":{"upstream":"api","path":"/slow/t1","query":{"ms":5000}},"timeout_ms":300},
  {"id":"upstream_timeout","op":"http","input":{"upstream":"impatient","path":"/slow/t2","query":{"ms":5000}}}]}'
check "the task's timeout: timeout; the upstream's: upstream_timeout" \
    [ "$(result http_timeouts '[.results[].error.code]')" = '["timeout","upstream_timeout"]' ]
upstream_event() { # upstream_event KEY: waits up to 3 s for the upstream to record what happened
    local event=null
    for _ in $(seq 1 60); do
        event=$(curl -s "$UP/events/$1" | jq -r .event)
        [ "$event" != null ] && break
        sleep 0.05
    done
    echo "$event"
}
check "a call cut off by the task timeout: the upstream sees the connection close" [ "$(upstream_event t1)" = caller_closed ]
check "a call cut off by the upstream timeout: the upstream sees the connection close" [ "$(upstream_event t2)" = caller_closed ]
curl -s -m 0.5 -o /dev/null -H 'Content-Type: application/json' \
    -d '{"tasks":[{"id":"gone","op":"http","input":{"upstream":"api","path":"/slow/t3","query":{"ms":5000}}}]}' "$BASE/batch"
check "a client that goes away: the upstream sees its call close" [ "$(upstream_event t3)" = caller_closed ]
batch http_stop '{"on_error":"stop","tasks":[{"id":"slow","op":"http","input":{"upstream":"api","path":"/slow/t4","query":{"ms":5000}}},
  {"id":"wait","op":"sleep","input":{"ms":300}},
  {"id":"boom","op":"fail","input":{"code":"boom","message":"stop the batch"},"depends_on":["wait"]}]}'
check "on_error stop: the call in flight is cancelled and its connection closed" \
    [ "$(result http_stop '.results[0].error.code')" = '"stopped"' -a "$(upstream_event t4)" = caller_closed ]

request ops_http_ok POST /ops/http '{"upstream":"api","path":"/echo/direct","query":{"q":1}}'
request ops_http_fail POST /ops/http '{"upstream":"api","path":"/status/404"}'
check "POST /ops/http makes one call: 200 with its output, 422 upstream_status when it fails" \
    [ "$(status_of ops_http_ok):$(jq_of ops_http_ok .body.path):$(status_of ops_http_fail):$(jq_of ops_http_fail .code)" = "200:/echo/direct:422:upstream_status" ]

batch http_cap '{"tasks":[
  {"id":"small","op":"http","input":{"upstream":"limited","path":"/big","query":{"bytes":900}}},
  {"id":"big","op":"http","input":{"upstream":"limited","path":"/big","query":{"bytes":200000}}},
  {"id":"chunked","op":"http","input":{"upstream":"limited","path":"/big","query":{"bytes":200000,"chunked":1}}}]}'
check "the response cap: within it succeeds, past it response_too_large (with and without Content-Length)" \
    [ "$(result http_cap '[.results[].status, .results[1].error.code, .results[2].error.code]')" = '["succeeded","failed","failed","response_too_large","response_too_large"]' ]

batch http_creds '{"tasks":[
  {"id":"api","op":"http","input":{"upstream":"api","path":"/echo/h"}},
  {"id":"plain","op":"http","input":{"upstream":"plain","path":"/h"}},
  {"id":"limited","op":"http","input":{"upstream":"limited","path":"/echo/public/h"}}]}' \
    -H 'Authorization: Bearer s3cret-token' -H 'X-Request-Id: req-abc-123'
check "authorization is forwarded only to the upstream that lists it" \
    [ "$(result http_creds '[.results[].output.body.headers.authorization]')" = '["Bearer s3cret-token",null,null]' ]
check "fixed headers reach their upstream (value from the environment)" \
    [ "$(result http_creds '[.results[].output.body.headers["x-api-key"]]')" = '[null,null,"harness-key-123"]' ]
check "every call carries the batch request's X-Request-Id" \
    [ "$(result http_creds '[.results[].output.body.headers["x-request-id"]] | unique')" = '["req-abc-123"]' ]

curl -s -o "$RUN_DIR/http_stream.ndjson" -H 'Content-Type: application/json' -H 'Accept: application/x-ndjson' \
    -d '{"tasks":[{"id":"slow","op":"http","input":{"upstream":"api","path":"/slow/st","query":{"ms":400}}},{"id":"fast","op":"http","input":{"upstream":"api","path":"/echo/fast"}},{"id":"team","op":"echo","input":{"$ref":"fast#/status"}}]}' \
    "$BASE/batch"
check "streaming http tasks: the fast call's line comes first, then its dependent, then the slow one" \
    [ "$(jq -r '.id // "end"' "$RUN_DIR/http_stream.ndjson" | tr '\n' ,)" = "fast,team,slow,end," ]

# The upstream answers with a digest of the authorization it received, never the value itself.
JOB=$(async '{"tasks":[{"id":"who","op":"http","input":{"upstream":"api","path":"/auth"}},{"id":"digest","op":"echo","input":{"$ref":"who#/body/authorization_sha256"}}]}' \
    -H 'Authorization: Bearer job-s3cret')
check "async job with http tasks and a forwarded credential succeeds" [ "$(wait_for_job "$JOB")" = succeeded ]
check "the job's call carried the credential" [ "$(curl -s "$BASE/batch/$JOB" | jq -r '.results[1].output')" = \
    "$(printf 'Bearer job-s3cret' | sha256sum | cut -d' ' -f1)" ]
check "the credential is never written to the job store" \
    bash -c "! grep -rqa 'job-s3cret' '$RUN_DIR/data-http'"
check "credentials are never logged" bash -c "! grep -qa 's3cret' '$RUN_DIR/fanout.log'"
stop_stack

# A job that needs forwarded credentials, whose responder dies before running it.
start_stack on FANOUT_UPSTREAMS_FILE="$RUN_DIR/upstreams.json" HARNESS_API_KEY=harness-key-123 \
    FANOUT_DATA_DIR="$RUN_DIR/data-http2" FANOUT_MAX_RUNNING_JOBS=1 || { fail "stack starts"; exit 1; }
BLOCKER=$(async '{"tasks":[{"id":"a","op":"sleep","input":{"ms":3000}}]}')
PINNED=$(async '{"tasks":[{"id":"who","op":"http","input":{"upstream":"api","path":"/echo/pinned"}}]}' -H 'Authorization: Bearer pinned-s3cret')
sleep 0.3
{
    kill -KILL "$FANOUT_PID"
    wait "$FANOUT_PID"
} 2>/dev/null
FANOUT_PID=""
start_fanout "$RUN_DIR" "$BINARY" || fail "Fanout restarts"
wait_for_job "$PINNED" 10 >/dev/null
check "a queued job whose credentials died with its responder fails with credentials_unavailable" \
    [ "$(curl -s "$BASE/batch/$PINNED" | jq -r '[.status, .error.code] | join(":")')" = "failed:credentials_unavailable" ]
stop_stack
kill "$UPSTREAM_PID" 2>/dev/null
