#!/usr/bin/env bash
# Runs every vmrun test: formatting, lints, unit tests and the integration
# tests that boot real microVMs (they use the artifacts setup.sh installs,
# so it runs first; a second run of it is cheap), then a short run of every
# fuzz target. VMRUN_FUZZ_SECONDS (default 20) is each target's time; 0
# skips them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
"$root/scripts/setup.sh"
export CARGO_TERM_PROGRESS_WHEN=never

cargo fmt --all -- --check
cargo clippy --quiet --locked --workspace --all-targets -- -D warnings
# The integration tests run the freshly built `vmrun`.
cargo build --quiet --locked --workspace --bins
# One test at a time: two guests of 2 vCPUs on a 2-core software-KVM host
# starve each other (RCU stalls, boots past any sane deadline).
cargo test --locked --workspace -- --test-threads=1

# Fuzz smoke (issue 12): every cargo-fuzz target of fuzz/ for a short while,
# from fuzz/corpus/ (empty in a fresh clone); a crash, a hang or a failed
# build fails the run.
# cargo-fuzz is a test tool, not something vmrun needs: it is installed
# here, once (it builds with the nightly toolchain the image has beside
# stable). The targets are built without optimization (`--dev`, still with
# the address sanitizer): on the 2-core CI host that build takes ~5.5 min
# cold against ~15.5 for an optimized one, and 20 s still make thousands of
# runs per target. The fuzz build has a target directory of its own
# (sanitizer flags, nightly compiler), kept with the workspace's.
fuzz_seconds=${VMRUN_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
    cargo +nightly --version >/dev/null 2>&1 \
        || rustup toolchain install nightly --profile minimal
    cargo +nightly fuzz --version >/dev/null 2>&1 \
        || cargo install --quiet --locked cargo-fuzz --version 0.13.2
    # xtask was built above; an input running past 60 s counts as a hang.
    cargo run --quiet --locked -p xtask -- fuzz --dev --seconds "$fuzz_seconds" \
        --target-dir "${CARGO_TARGET_DIR:-$root/target}/fuzz" -- -timeout=60
fi
