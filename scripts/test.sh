#!/usr/bin/env bash
# The whole test suite: installs the chain tooling, then runs every test of the workspace
# (unit, property, vector, CLI and anvil-backed chain tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --workspace --locked "$@"
