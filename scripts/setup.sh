#!/usr/bin/env bash
# Installs what the workspace needs beyond the Rust toolchain: the pinned chain tooling from npm
# (the compiled Nitro contracts, anvil and solc), then compiles the test ERC-20 tokens into
# build/contracts. Idempotent: skips `npm ci` when node_modules matches package-lock.json, and
# the compile when every build/contracts/*.json is newer than its inputs.
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

# The test tokens (Token, FalseToken, FeeToken, NoReturnToken), recompiled when an output is missing or older
# than a source, the compile script or the lock file.
stale=0
for name in Token FalseToken FeeToken NoReturnToken; do
  out="build/contracts/$name.json"
  if [ ! -f "$out" ]; then stale=1; break; fi
  for input in scripts/compile-contracts.js package-lock.json contracts/test-tokens/*.sol \
               node_modules/@statechannels/nitro-protocol/contracts/Token.sol; do
    if [ "$input" -nt "$out" ]; then stale=1; break 2; fi
  done
done
if [ "$stale" = 1 ]; then
  echo "==> compiling test tokens (solc)"
  node scripts/compile-contracts.js
fi
