# Sourced by harness.sh: three hosts sharing one PostgreSQL job store behind one nginx, hosts
# SIGKILLed mid-run (Tests/harness/multihost.py). Needs FANOUT_TEST_DATABASE_URL, which
# `make test` sets after starting a throwaway PostgreSQL: without it this phase fails, loudly.
echo "phase 11: three hosts share jobs in PostgreSQL; hosts killed mid-run"
if [ -z "${FANOUT_TEST_DATABASE_URL:-}" ]; then
    fail "PostgreSQL is available for the multi-host test" "FANOUT_TEST_DATABASE_URL is not set (make test starts a server)"
elif ! psql "$FANOUT_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS fanout_multihost" -c "CREATE DATABASE fanout_multihost" \
    >"$RUN_DIR/multihost-createdb.log" 2>&1; then
    fail "PostgreSQL is available for the multi-host test" "$(cat "$RUN_DIR/multihost-createdb.log")"
else
    MULTIHOST_URL=$(python3 -c 'import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/fanout_multihost")))' "$FANOUT_TEST_DATABASE_URL")
    python3 "$(dirname "${BASH_SOURCE[0]}")/multihost.py" "$BINARY" "$RUN_DIR" "$MULTIHOST_URL" "${MULTIHOST_SECONDS:-20}" \
        >"$RUN_DIR/multihost.txt" 2>&1
    MULTIHOST_STATUS=$?
    while IFS= read -r line; do
        case $line in
            "  ok    "*) pass "${line#  ok    }" ;;
            "  FAIL  "*) fail "${line#  FAIL  }" ;;
            *) echo "$line" ;;
        esac
    done <"$RUN_DIR/multihost.txt"
    [ $MULTIHOST_STATUS -eq 0 ] || grep -q "FAIL" "$RUN_DIR/multihost.txt" || fail "multi-host test ran to its end" "exit $MULTIHOST_STATUS"
fi
