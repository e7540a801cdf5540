#!/usr/bin/env bash
# Start the Join Server on the embedded default: SQLite + a SoftHSM2 token under ./.state
# (created on first start). Extra arguments go to `jsd serve`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec jsd serve "$@"
