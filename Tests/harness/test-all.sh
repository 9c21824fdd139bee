#!/usr/bin/env bash
# `make test`: installs what is missing, builds, runs the Swift unit tests, then the shell harness
# against nginx + spawn-fcgi + Fanout.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
cd "$FANOUT_ROOT"

ensure_packages jq
python3 -c "import yaml, jsonschema" 2>/dev/null || python3 -m pip install --quiet pyyaml jsonschema
log "building"
swift build --build-tests
log "unit tests"
swift test --skip-build
log "harness"
bash Tests/harness/harness.sh "$(swift build --show-bin-path)/fanout"
