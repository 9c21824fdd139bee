#!/usr/bin/env bash
# `make test`: installs what is missing, builds, runs the Swift unit tests, then the shell harness
# against nginx + spawn-fcgi + Fanout.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$FANOUT_ROOT"

ensure_packages jq
# The OpenAPI check needs PyYAML and jsonschema: from pip where python3 has it, else from Debian.
if ! python3 -c "import yaml, jsonschema" 2>/dev/null; then
    python3 -m pip install --quiet pyyaml jsonschema 2>/dev/null || ensure_packages python3-yaml python3-jsonschema
fi
# Schemathesis, pinned, in a virtual environment of its own (Debian's python3 refuses pip installs).
export SCHEMATHESIS_VENV="$FANOUT_ROOT/.run/venv-schemathesis"
if ! "$SCHEMATHESIS_VENV/bin/st" --version 2>/dev/null | grep -q 4.32.5; then
    python3 -m venv "$SCHEMATHESIS_VENV" 2>/dev/null || { ensure_packages python3-venv && python3 -m venv "$SCHEMATHESIS_VENV"; }
    "$SCHEMATHESIS_VENV/bin/pip" install --quiet schemathesis==4.32.5
fi
log "building"
swift build --build-tests
# A throwaway PostgreSQL for the PostgreSQL job store's tests and the multi-host test; the tests
# fail, loudly, when it cannot be started.
log "starting a throwaway PostgreSQL"
start_postgres off
trap stop_postgres EXIT
log "unit tests"
swift test --skip-build
log "harness"
bash Tests/harness/harness.sh "$(swift build --show-bin-path)/fanout"
