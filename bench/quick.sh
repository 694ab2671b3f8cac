#!/usr/bin/env bash
# The benchmark harness in quick mode (debug build, tiny counts, about half a minute):
# proves every section still runs end to end against real processes. It asserts no
# timing; it fails only when a section cannot run or a call fails. Sections 5 and 9 need a
# docker engine and the image of smoke/docker-test-image.sh; without an engine it is
# reported as skipped, unless BERTH_REQUIRE_DOCKER=1 (CI), when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin berth --bin berth-bench
# the registry-free image of sections 5 and 9 (idempotent; a no-op once built)
if docker info >/dev/null 2>&1; then
    bash smoke/docker-test-image.sh >/dev/null
fi
report=$(mktemp)
trap 'rm -f "$report"' EXIT
"${CARGO_TARGET_DIR:-target}/debug/berth-bench" all --quick --report "$report"
for section in 1 2 3 4 5 6 7 8 9; do
    grep -q "^## $section\. " "$report" || { echo "bench quick: section $section missing from the report" >&2; exit 1; }
done
echo "bench quick: ok"
