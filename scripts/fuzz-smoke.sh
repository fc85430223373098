#!/usr/bin/env bash
# Fuzz smoke test for CI: builds every target under fuzz/ once, then runs each for
# FUZZ_SECONDS (default 15) on its seed corpus with the JSON dictionary. Fails if any target
# crashes (panic, failed assertion, timeout, out of memory); the reproducer is left in
# fuzz/artifacts/<target>/ and can be replayed with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
#
# New inputs go to a scratch directory: the committed corpus does not grow.
# Environment: FUZZ_SECONDS (per target), FUZZ_SANITIZER (none | address; default none,
# 5x faster — the crates under test forbid unsafe code), FUZZ_TARGETS (default: all).
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-15}
sanitizer=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1 # cargo-fuzz passes -Z flags; this lets the stable toolchain take them

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
cargo fuzz build -s "$sanitizer"
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $targets; do
    mkdir -p "$scratch/$target"
    echo "fuzz-smoke: $target for ${seconds}s"
    if ! cargo fuzz run -s "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=20 -dict=dict/json.dict -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1; then
        failed+=("$target")
        tail -n 60 "$scratch/$target.log"
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec)' "$scratch/$target.log" || true
done

echo "fuzz-smoke: $(( $(date +%s) - start ))s in all"
if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: every target ran clean"
