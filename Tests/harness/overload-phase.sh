# Sourced by harness.sh: overload is shed with 503 at once, never queued into nginx 502s.

echo "phase 8: overload is shed, not queued"
start_stack on FANOUT_MAX_BATCHES_IN_FLIGHT=200 FANOUT_DATA_DIR="$RUN_DIR/data-overload" || { fail "stack starts"; exit 1; }
OVERLOAD=$(python3 "$FANOUT_ROOT/Tests/harness/overload.py" "$PORT" 600 1000)
check "600 clients at once against 200 batches in flight: 200 served, 400 shed with 503 at once, no 502 ($OVERLOAD)" \
    python3 -c 'import json, sys; r = json.loads(sys.argv[1]); sys.exit(not (r["statuses"] == {"200": 200, "503": 400} and r["shed_max_s"] < 1.0))' "$OVERLOAD"
stop_stack
