#!/usr/bin/env bash
# Every test Berth has: the workspace's unit and in-process integration tests, then the
# end-to-end smoke with real processes, then the benchmark harness in quick mode. This
# is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --quiet
bash smoke/smoke.sh
bash bench/quick.sh
