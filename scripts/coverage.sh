#!/usr/bin/env bash
# Line coverage with cargo-llvm-cov and Debian's llvm-22 (matching rustc's LLVM).
# Installs both if missing (apt-get needs root). Extra arguments go to `cargo llvm-cov`,
# e.g. `scripts/coverage.sh -p nitro-core --html`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/lib/llvm-22/bin/llvm-cov ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq llvm-22
fi
command -v cargo-llvm-cov >/dev/null 2>&1 || cargo install cargo-llvm-cov --locked
scripts/setup.sh
export LLVM_COV=/usr/lib/llvm-22/bin/llvm-cov LLVM_PROFDATA=/usr/lib/llvm-22/bin/llvm-profdata
cargo llvm-cov --workspace --summary-only "$@"
