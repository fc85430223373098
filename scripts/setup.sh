#!/usr/bin/env bash
# Installs what the workspace needs beyond the Rust toolchain: the pinned chain tooling from npm
# (the compiled Nitro contracts and anvil). Idempotent: skips `npm ci` when node_modules matches
# package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is required (Node.js 18+) to install the Nitro contracts and anvil" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -x node_modules/.bin/anvil ]; then
  echo "==> npm ci (Nitro contracts + anvil)"
  npm ci --no-audit --no-fund --loglevel=error
fi
test -x node_modules/.bin/anvil || { echo "error: anvil missing after npm ci" >&2; exit 1; }
