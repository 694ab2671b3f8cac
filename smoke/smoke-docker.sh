#!/usr/bin/env bash
# The smoke's docker run (smoke.sh with BERTH_SMOKE_PROVIDER=docker): real `berth serve`
# and `berth worker --provider docker` processes on a real engine, with the test image
# built locally (no registry). It checks what is provider-specific: a container-backed
# sandbox created, exec'd (exit code, stderr apart, streamed), a 5 MB file through the
# archive API, listing, the console log, destroy removing container and network, a
# worker killed mid image build (its build container removed at its restart), and the
# worker's containers gone at the end. Without an engine it skips visibly, unless
# BERTH_REQUIRE_DOCKER=1, when it fails.
set -euo pipefail

cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
    if [[ "${BERTH_REQUIRE_DOCKER:-}" == 1 ]]; then
        echo "smoke (docker): FAILED: BERTH_REQUIRE_DOCKER=1 but no docker engine answers" >&2
        exit 1
    fi
    echo "smoke (docker): SKIPPED: no docker engine answers"
    exit 0
fi
image=$(bash smoke/docker-test-image.sh)

BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi

work=$(mktemp -d)
worker_id="smoke-docker-$$"
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # nothing of this run stays on the engine
    for container in $(docker ps -aq --filter "label=berth.worker=$worker_id"); do
        docker rm -f -v "$container" >/dev/null 2>&1 || true
    done
    for network in $(docker network ls -q --filter "label=berth.worker=$worker_id"); do
        docker network rm "$network" >/dev/null 2>&1 || true
    done
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "smoke (docker): FAILED" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
json_field() {
    python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"
}
step() { echo "smoke (docker): $*"; }
fail() { echo "smoke (docker): $*" >&2; exit 1; }
wait_for() {
    local what=$1; shift
    for _ in $(seq 1 150); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "timed out waiting for $what"
}

api_port=$(free_port)
mesh_port=$(free_port)
worker_port=$(free_port)
export BERTH_API_URL="http://127.0.0.1:$api_port"
export BERTH_DATA_DIR="$work/control-plane"

# the example config, with the image left to the worker's docker.default_image
sed 's/^  default_image: .*/  default_image: ""/' config/control-plane.yaml >"$work/control-plane.yaml"
step "starting berth serve and a docker worker ($worker_id, image $image)"
"$BERTH" serve --config "$work/control-plane.yaml" --data-dir "$work/control-plane" --ssh-listen 127.0.0.1:0 \
    --listen "127.0.0.1:$api_port" --mesh-listen "127.0.0.1:$mesh_port" \
    --heartbeat-interval 500ms >>"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "the control plane" curl -fsS "$BERTH_API_URL/api/v1/health"
"$BERTH" token create --worker-id "$worker_id" --ttl 10m >"$work/token" 2>/dev/null
start_worker() {
    "$BERTH" worker --config config/worker.yaml --control-plane "https://127.0.0.1:$mesh_port" \
        --listen "127.0.0.1:$worker_port" --data-dir "$work/worker" --join-token-file "$work/token" \
        --provider docker --docker-default-image "$image" \
        --heartbeat-interval 500ms >>"$work/worker.log" 2>&1 &
    worker_pid=$!
    pids+=("$worker_pid")
}
start_worker
worker_ready() { curl -fsS "$BERTH_API_URL/api/v1/ready" >/dev/null; }
wait_for "the docker worker ready" worker_ready

step "a container-backed sandbox: exec, stream, files, logs"
sandbox=$("$BERTH" sandbox create --provider docker --ttl 10m 2>/dev/null)
container=$(docker ps -q --filter "label=berth.sandbox=$sandbox" --filter "label=berth.worker=$worker_id")
[[ -n "$container" ]] || fail "no labelled container for $sandbox"
[[ $("$BERTH" sandbox exec "$sandbox" -- 'cat /proc/1/cmdline | tr "\0" " "') == *docker-init* ]] \
    || fail "the sandbox does not run under docker-init"
set +e
"$BERTH" sandbox exec "$sandbox" -- 'echo to-stderr >&2; exit 3' 2>"$work/stderr.txt"
code=$?
set -e
[[ $code == 3 ]] || fail "exec exit code $code, expected 3"
grep -q to-stderr "$work/stderr.txt" || fail "stderr was not kept apart"
streamed=$("$BERTH" sandbox exec --stream "$sandbox" -- 'for i in 1 2 3; do echo line $i; sleep 0.1; done')
[[ $(echo "$streamed" | wc -l) == 3 ]] || fail "the stream did not carry 3 lines: $streamed"
head -c 5000000 /dev/urandom >"$work/blob.bin"
"$BERTH" sandbox put "$sandbox" "$work/blob.bin" /workspace/blob.bin --mode 0600 2>/dev/null
"$BERTH" sandbox cat "$sandbox" /workspace/blob.bin >"$work/blob.back"
cmp -s "$work/blob.bin" "$work/blob.back" || fail "the file came back different"
grep -q "0600 *5000000" <<<"$("$BERTH" sandbox ls "$sandbox" /workspace)" || fail "ls does not show the file"
[[ $("$BERTH" sandbox exec "$sandbox" -- 'sha256sum blob.bin | cut -d" " -f1') == $(sha256sum "$work/blob.bin" | cut -d" " -f1) ]] \
    || fail "the sandbox sees different bytes"
grep -q "started" <<<"$("$BERTH" sandbox logs "$sandbox")" || fail "the console log misses the start line"

step "destroy removes the container and its network"
"$BERTH" sandbox destroy "$sandbox" 2>/dev/null
[[ -z $(docker ps -aq --filter "label=berth.sandbox=$sandbox") ]] || fail "the container is still there"
[[ -z $(docker network ls -q --filter "label=berth.sandbox=$sandbox") ]] || fail "the network is still there"

step "a worker killed mid-build: the build's container goes at its restart, the create fails at its phase"
cat >"$work/slow.yaml" <<YAML
on_create: |
  echo $worker_id > /built-by; sleep 120
YAML
"$BERTH" templates apply -f "$work/slow.yaml" --name slow-build >/dev/null
"$BERTH" sandbox create --template slow-build --ttl 10m >"$work/slow.out" 2>&1 &
create_pid=$!
build_container() { [[ -n $(docker ps -q --filter label=berth.built --filter "label=berth.worker=$worker_id") ]]; }
wait_for "the build's container" build_container
building=$("$BERTH" sandbox list -o json | python3 -c 'import json,sys; print(next(s["id"] for s in json.load(sys.stdin) if s.get("template") == "slow-build"))')
[[ $("$BERTH" sandbox get "$building" -o json | json_field phase) == "building image" ]] \
    || fail "the sandbox is not at its building image phase"
kill -KILL "$worker_pid"
wait "$worker_pid" 2>/dev/null || true
alive=()
for pid in "${pids[@]}"; do [[ $pid == "$worker_pid" ]] || alive+=("$pid"); done
pids=("${alive[@]}")
wait "$create_pid" 2>/dev/null && fail "the create of a sandbox whose worker died succeeded"
grep -q "sandbox $building failed" "$work/slow.out" || fail "the failed create does not name its sandbox: $(cat "$work/slow.out")"
start_worker
wait_for "the docker worker ready again" worker_ready
no_build_container() { ! build_container && [[ -z $(docker ps -aq --filter label=berth.built --filter "label=berth.worker=$worker_id") ]]; }
wait_for "the cut-off build's container removed" no_build_container
sandbox_json=$("$BERTH" sandbox get "$building" -o json)
[[ $(json_field state <<<"$sandbox_json") == error ]] || fail "the sandbox is not in error: $sandbox_json"
[[ $(json_field phase <<<"$sandbox_json") == "building image" ]] || fail "the failed phase is not kept: $sandbox_json"
"$BERTH" sandbox destroy "$building" 2>/dev/null
"$BERTH" templates delete slow-build --yes >/dev/null

step "stopping"
for pid in "${pids[@]}"; do kill -TERM "$pid"; wait "$pid" || fail "a process did not exit cleanly"; done
pids=()
[[ -z $(docker ps -aq --filter "label=berth.worker=$worker_id") ]] || fail "containers of the worker are left"
echo "smoke (docker): 1 passed, 0 failed"
