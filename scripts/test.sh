#!/usr/bin/env bash
# Runs every vmrun test: formatting, lints, unit tests and the integration
# tests that boot real microVMs (they use the artifacts setup.sh installs,
# so it runs first; a second run of it is cheap).
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
