# Sourced by harness.sh: Schemathesis (pinned, from PyPI) against openapi.yaml and the live stack.
# Needs the upstream of phase 6 (UPSTREAM_PORT). Any finding fails the phase; the report is kept
# in the harness's run directory.
#   ST_EXAMPLES   cases per operation and phase (default 40)
#   ST_SEED       the generator's seed (default fixed, so a finding reproduces; vary it to explore)

echo "phase 9: Schemathesis against openapi.yaml and the live stack"
ST="${SCHEMATHESIS_VENV:-$FANOUT_ROOT/.run/venv-schemathesis}/bin/st"
# Short tasks: the server's task limit is also the longest sleep it accepts, and the hooks fit
# sleeps to it. 250 ms, not 50: with 50 a GET to the upstream on a busy machine became a 504
# now and then. An upstream of its own serves as "demo" (phase 6 stops its one: calls to a closed
# port were refused and retried past the task limit, a 504 that depended on the retry jitter).
UPSTREAM_PORT=$(free_port)
python3 "$FANOUT_ROOT/Tests/harness/upstream.py" "$UPSTREAM_PORT" 2>>"$RUN_DIR/upstream.log" &
ST_UPSTREAM_PID=$!
PIDS="${PIDS:-} $ST_UPSTREAM_PID"
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/counts" && break; sleep 0.05; done
start_stack on FANOUT_MAX_TASK_TIMEOUT_MS=250 FANOUT_UPSTREAMS="demo=http://127.0.0.1:$UPSTREAM_PORT" \
    FANOUT_DATA_DIR="$RUN_DIR/data-schemathesis" || { fail "stack starts"; exit 1; }
st_run() { # st_run NAME [ARGS...]: one Schemathesis run; its output in $RUN_DIR/schemathesis-NAME.txt
    local name=$1
    shift
    # From the run directory: Schemathesis keeps a cache (.schemathesis) where it starts.
    (cd "$RUN_DIR" && PYTHONPATH="$FANOUT_ROOT/Tests/harness" SCHEMATHESIS_HOOKS=schemathesis_hooks \
        FANOUT_ST_UPSTREAMS=demo "$ST" --config-file "$FANOUT_ROOT/Tests/harness/schemathesis.toml" \
        run "$FANOUT_ROOT/openapi.yaml" --url "$BASE" \
        --max-examples "${ST_EXAMPLES:-40}" --seed "${ST_SEED:-20261130}" --workers 2 --no-color \
        --request-timeout 10 --output-sanitize false "$@") >"$RUN_DIR/schemathesis-$name.txt" 2>&1
    local status=$?
    [ $status -eq 0 ] || sed -n '/FAILURES\|ERRORS/,$p' "$RUN_DIR/schemathesis-$name.txt" | head -60 >&2
    return $status
}
check "Schemathesis: examples, coverage and fuzzing phases find nothing" \
    st_run unit --phases examples,coverage,fuzzing
# The stateful phase follows the links from a queued job (202) to GET and DELETE /batch/{id}.
check "Schemathesis: stateful phase (POST /batch 202 -> GET/DELETE /batch/{id}) finds nothing" \
    st_run stateful --phases stateful --include-path-regex '^/batch' -H 'Prefer: respond-async'
check "Schemathesis's stateful phase reached the job resources through the links" \
    grep -qE "API Links: +[1-9][0-9]* covered" "$RUN_DIR/schemathesis-stateful.txt"
stop_stack
kill "$ST_UPSTREAM_PID" 2>/dev/null
