#!/usr/bin/env bash
# Regenerates docs/benchmarks.md: builds `berth` and `berth-bench` in release mode and
# runs every section on this machine (a few minutes). Extra arguments go to berth-bench,
# e.g. `bash bench/run.sh --database-url postgres://user:pass@127.0.0.1/berth_bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin berth --bin berth-bench
"${CARGO_TARGET_DIR:-target}/release/berth-bench" all --report docs/benchmarks.md "$@"
