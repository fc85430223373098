#!/usr/bin/env bash
# The demo: installs the chain tooling, builds `nitro` and runs `nitro demo` (a local anvil
# chain it starts itself, an embedded SQLite store). Extra arguments go to `nitro demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo run --release --locked -q -p nitro-cli -- demo "$@"
