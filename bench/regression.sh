#!/usr/bin/env bash
# `make bench-regression`: builds the current tree and a reference revision (BASE, default HEAD~1)
# in release mode, then runs bench/regression.py on w1 and w2. The reference is built in a
# worktree of its own under .run/ (its first build takes as long as a fresh clone's).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$FANOUT_ROOT"

ensure_packages wrk
BASE=${BASE:-HEAD~1}
REVISION=$(git rev-parse --short "$BASE")
REFERENCE_DIR="$FANOUT_ROOT/.run/reference"
if [ ! -d "$REFERENCE_DIR" ]; then git worktree add --detach "$REFERENCE_DIR" "$REVISION" >/dev/null; fi
git -C "$REFERENCE_DIR" checkout --quiet --detach "$REVISION"
log "building the reference ($REVISION) and the current tree (release)"
swift build -c release --product fanout --package-path "$REFERENCE_DIR"
swift build -c release --product fanout
python3 bench/regression.py "$(swift build -c release --show-bin-path --package-path "$REFERENCE_DIR")/fanout" \
    "$(swift build -c release --show-bin-path)/fanout" "${ROUNDS:-5}"
