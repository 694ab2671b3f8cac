#!/usr/bin/env bash
# Runs a quickstart of the README exactly as written: the ```sh blocks that follow a
# `<!-- quickstart:NAME:… -->` marker, in order. A line that starts a long-running
# `berth serve` or `berth worker` goes to the background (a newcomer runs it in its own
# terminal); every other line runs in the foreground under `set -e`, so a command the
# README shows that fails fails the smoke.
#
#   bash smoke/readme-quickstart.sh docker    (serve --local-worker docker, the test image)
#   bash smoke/readme-quickstart.sh mock
#
# Only what a newcomer's machine would differ in is set from outside: HOME and the data
# dir point into a temporary directory (nothing lands in the checkout or the real home),
# and the README's default ports must be free. The docker quickstart skips visibly
# without an engine unless BERTH_REQUIRE_DOCKER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: readme-quickstart.sh docker|mock}

if [[ "$name" == docker ]] && ! docker info >/dev/null 2>&1; then
    if [[ "${BERTH_REQUIRE_DOCKER:-}" == 1 ]]; then
        echo "readme quickstart (docker): FAILED: no docker engine answers" >&2
        exit 1
    fi
    echo "readme quickstart (docker): SKIPPED: no docker engine answers"
    exit 0
fi

for port in 7423 7443 7450 2222; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "readme quickstart ($name): FAILED: port $port (the README's) is in use" >&2
        exit 1
    fi
done

work=$(mktemp -d)
mkdir -p "$work/home"
# the blocks, as the README has them
blocks() {
    awk -v name="$name" '
        /^<!-- quickstart:/ { split($2, tag, ":"); want = (tag[2] == name); next }
        want && /^```sh$/ { inside = 1; next }
        inside && /^```$/ { inside = 0; want = 0; next }
        inside { print }
    ' README.md
}
script="$work/quickstart.sh"
{
    echo 'set -euo pipefail'
    echo 'pids=()'
    blocks | while IFS= read -r line; do
        if [[ "$line" =~ (^|[[:space:]])--[[:space:]]+(serve|worker)[[:space:]] ]]; then
            n=$((${n:-0} + 1))
            echo "echo \"+ $line &\" >&2"
            echo "$line > \"\$QUICKSTART_LOGS/process-$n.log\" 2>&1 &"
            echo 'pids+=($!); echo $! >> "$QUICKSTART_LOGS/pids"'
            # a background start is ready once the API answers
            echo 'for _ in $(seq 1 600); do curl -sf "$BERTH_API_URL/api/v1/ready" >/dev/null && break; sleep 0.5; done'
            echo 'curl -sf "$BERTH_API_URL/api/v1/ready" >/dev/null || { echo "the API never became ready" >&2; exit 1; }'
        else
            printf 'echo %q >&2\n' "+ $line"
            echo "$line"
        fi
    done
} >"$script"
if ! grep -q -- '-- serve' "$script"; then
    echo "readme quickstart ($name): FAILED: no quickstart:$name blocks in README.md" >&2
    exit 1
fi

cleanup() {
    local status=$?
    if [[ -f "$work/pids" ]]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$work/pids"
        while read -r pid; do
            while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
        done <"$work/pids"
    fi
    if [[ "$name" == docker ]]; then
        # whatever a failed run left on the engine (serve's local worker has a fixed id)
        docker ps -aq --filter "label=berth.worker=local" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
        docker network ls -q --filter "label=berth.worker=local" | xargs -r docker network rm >/dev/null 2>&1 || true
    fi
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "readme quickstart ($name): FAILED" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== the README's $name quickstart, as written:"
sed 's/^/    /' "$script" | grep -v '^    echo\|^    pids\|^    for _\|^    curl' || true
# the toolchain stays the real home's (rustup and cargo find it through HOME otherwise)
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
HOME="$work/home" BERTH_DATA_DIR="$work/data" QUICKSTART_LOGS="$work" \
    BERTH_API_URL=http://127.0.0.1:7423 \
    bash "$script" 2>&1 | tee "$work/quickstart.out"
status=${PIPESTATUS[0]}
if ((status != 0)); then
    echo "the quickstart's commands failed (exit $status)" >&2
    exit 1
fi
# every worker the quickstart started joins: each process it put in the background is
# a `berth worker` or a `berth serve` with its local worker
want=$(wc -l <"$work/pids")
key=$(cat "$work/data/admin.key")
for _ in $(seq 1 120); do
    online=$(curl -sf -H "X-API-Key: $key" http://127.0.0.1:7423/api/v1/workers |
        python3 -c 'import json,sys; print(sum(w["status"] == "online" for w in json.load(sys.stdin)))' || echo 0)
    ((online >= want)) && break
    sleep 0.5
done
if ((online < want)); then
    echo "only $online of the quickstart's $want workers came online" >&2
    exit 1
fi
grep -q '^hello$' "$work/quickstart.out" || {
    echo "the quickstart's exec did not print hello" >&2
    exit 1
}
if [[ "$name" == mock ]]; then
    grep -q '^hello over ssh$' "$work/quickstart.out" || {
        echo "the quickstart's ssh login did not print hello over ssh" >&2
        exit 1
    }
fi
echo "readme quickstart ($name): ok ($online workers online)"
