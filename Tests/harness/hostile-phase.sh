# Sourced by harness.sh: hostile traffic at the edges, through nginx (Tests/harness/hostile.py).

echo "phase 10: hostile traffic at the edges"
start_stack on FANOUT_MAX_BATCHES_IN_FLIGHT=200 FANOUT_DATA_DIR="$RUN_DIR/data-hostile" || { fail "stack starts"; exit 1; }
HOSTILE=$(python3 "$FANOUT_ROOT/Tests/harness/hostile.py" "$PORT" "$FANOUT_PID" 5000)
hostile() { python3 -c "import json, sys; r = json.loads(sys.argv[1]); sys.exit(not ($1))" "$HOSTILE"; }
check "5,000 idle connections, slow and abandoned bodies: the ordinary client got 200, and within 1 s during the flood too ($HOSTILE)" \
    hostile 'r["ordinary_statuses"] == {"200": 70} and set(r["ordinary_during_flood"]) <= {"200", "503"} and r["ordinary_slowest_s"] < 1.0'
check "the flood was served or shed with 503, never 502" \
    hostile 'set(r["flood_statuses"]) <= {"200", "503"} and r["flood_statuses"].get("503", 0) > 0'
# nginx holds idle clients and buffers bodies: Fanout sees only whole requests. Its descriptors
# grow at most by nginx's kept-alive connections (keepalive 32), its memory by a few MiB.
check "Fanout's descriptors and memory stay bounded" \
    hostile 'r["during"]["fds"] <= r["before"]["fds"] + 8 and r["after"]["fds"] <= r["before"]["fds"] + 40 and r["after"]["rss_kib"] < r["before"]["rss_kib"] + 65536'
stop_stack
