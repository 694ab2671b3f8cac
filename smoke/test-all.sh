#!/usr/bin/env bash
# Every test Berth has: the workspace's unit and in-process integration tests, then the
# end-to-end smoke with real processes (partitions among them), then the benchmark
# harness in quick mode. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
# Docker tests skip visibly without an engine (fail with BERTH_REQUIRE_DOCKER=1)
cargo test --workspace --quiet
BERTH_SMOKE_PROVIDER=mock bash smoke/smoke.sh
BERTH_SMOKE_PROVIDER=docker bash smoke/smoke.sh
# the worker as a container by the README's one-liner (dial-out, the socket mounted)
bash smoke/worker-container.sh
# the README's quickstarts, run as written (default ports; temporary HOME and data dir)
bash smoke/readme-quickstart.sh mock
bash smoke/readme-quickstart.sh docker
bash smoke/replicas.sh
# a worker in a network namespace, its link cut (skips without root unless
# BERTH_REQUIRE_NETNS=1)
bash smoke/partitions.sh
# a dial-out worker in a namespace that drops every inbound SYN, its link cut silently
# (skips without root unless BERTH_REQUIRE_NETNS=1)
bash smoke/dialout.sh
bash bench/quick.sh
