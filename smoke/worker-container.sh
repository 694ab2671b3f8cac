#!/usr/bin/env bash
# The worker as a container, the way docs/worker-container.md runs it: `berth serve` as
# a process on this host, `berth worker --provider docker` in the image
# deploy/worker-image.sh builds (no registry), started by the documented one-liner:
# host network, NET_ADMIN, the engine's socket mounted, the identity on a volume, the
# join token in a variable. It checks that the worker enrolls; that its iptables
# (inside the container) puts the host firewall in place and that it refuses a
# sandbox's connection to the host; that a sandbox is a sibling container on the
# host's engine and can be exec'd, given a file, read back, its log read and
# destroyed; that `docker stop` drains (a live sandbox destroyed at the deadline, exit
# 0) and `docker start` comes back with the identity from the volume.
# Extra worker arguments: $BERTH_WORKER_CONTAINER_ARGS (split on spaces).
# Without an engine it skips visibly, unless BERTH_REQUIRE_DOCKER=1, when it fails.
set -euo pipefail

cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
    if [[ "${BERTH_REQUIRE_DOCKER:-}" == 1 ]]; then
        echo "smoke (worker container): FAILED: BERTH_REQUIRE_DOCKER=1 but no docker engine answers" >&2
        exit 1
    fi
    echo "smoke (worker container): SKIPPED: no docker engine answers"
    exit 0
fi

BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi
image=$(bash deploy/worker-image.sh "$BERTH")
test_image=$(bash smoke/docker-test-image.sh)
read -ra extra_args <<<"${BERTH_WORKER_CONTAINER_ARGS:-}"
# the engine's socket on this host (DOCKER_HOST=unix://... when it is not the usual one)
socket=/var/run/docker.sock
if [[ "${DOCKER_HOST:-}" == unix://* ]]; then
    socket=${DOCKER_HOST#unix://}
fi

work=$(mktemp -d)
worker_id="smoke-container-$$"
container="berth-worker-smoke-$$"
volume="berth-worker-smoke-$$"
pids=()
cleanup() {
    local status=$?
    if [[ $status -ne 0 ]]; then
        docker logs --tail 60 "$container" >"$work/worker-container.log" 2>&1 || true
    fi
    docker rm -f -v "$container" >/dev/null 2>&1 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # nothing of this run stays on the engine
    for sandbox_container in $(docker ps -aq --filter "label=berth.worker=$worker_id"); do
        docker rm -f -v "$sandbox_container" >/dev/null 2>&1 || true
    done
    for network in $(docker network ls -q --filter "label=berth.worker=$worker_id"); do
        docker network rm "$network" >/dev/null 2>&1 || true
    done
    docker volume rm "$volume" >/dev/null 2>&1 || true
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 60 "$log" >&2
        done
        echo "smoke (worker container): FAILED" >&2
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
step() { echo "smoke (worker container): $*"; }
fail() { echo "smoke (worker container): $*" >&2; exit 1; }
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
export BERTH_API_URL="http://127.0.0.1:$api_port"
export BERTH_DATA_DIR="$work/control-plane"

# the example config, with the image left to the worker's docker.default_image
sed 's/^  default_image: .*/  default_image: ""/' config/control-plane.yaml >"$work/control-plane.yaml"
step "starting berth serve (api $api_port, mesh $mesh_port)"
"$BERTH" serve --config "$work/control-plane.yaml" --data-dir "$work/control-plane" --ssh-listen 127.0.0.1:0 \
    --listen "127.0.0.1:$api_port" --mesh-listen "127.0.0.1:$mesh_port" \
    --heartbeat-interval 500ms >>"$work/serve.log" 2>&1 &
pids+=($!)
wait_for "the control plane" curl -fsS "$BERTH_API_URL/api/v1/health"
TOKEN=$("$BERTH" token create --worker-id "$worker_id" --ttl 10m 2>/dev/null)

step "starting the worker container $container ($image, sandboxes from $test_image)"
# the documented one-liner (docs/worker-container.md), with this run's names, a quick
# heartbeat and drain, and the local test image
docker run -d --pull never --name "$container" --restart unless-stopped --stop-timeout 360 \
    --network host --cap-add NET_ADMIN \
    -v "$socket:/var/run/docker.sock" -v "$volume:/var/lib/berth" \
    -e BERTH_JOIN_TOKEN="$TOKEN" -e BERTH_CONTROL_PLANE="https://127.0.0.1:$mesh_port" \
    -e BERTH_WORKER_ID="$worker_id" -e BERTH_HEARTBEAT_INTERVAL=500ms \
    -e BERTH_WORKER_DRAIN_DEADLINE=3s \
    "$image" worker --provider docker --docker-default-image "$test_image" \
    "${extra_args[@]}" >/dev/null

worker_field() { "$BERTH" workers get "$worker_id" -o json | json_field "$1"; }
worker_online() { [[ $(worker_field status) == online ]]; }
wait_for "$worker_id online" worker_online
serial=$(worker_field certificate.serial)
if [[ ${#extra_args[@]} -eq 0 ]]; then
    # the one-liner opens no port: the worker dials out to the control plane
    [[ $(worker_field mode) == dial-out ]] || fail "the worker is in mode $(worker_field mode), not dial-out"
fi
[[ $(docker inspect -f '{{.State.Running}}' "$container") == true ]] || fail "the worker container is not running"

step "a sandbox: a sibling container on the host's engine"
sandbox=$("$BERTH" sandbox create --provider docker --ttl 10m 2>/dev/null)
sandbox_container=$(docker ps -q --filter "label=berth.sandbox=$sandbox" --filter "label=berth.worker=$worker_id")
[[ -n "$sandbox_container" ]] || fail "no labelled container for $sandbox on the host's engine"
[[ $(docker inspect -f '{{.Config.Image}}' "$sandbox_container") == "$test_image" ]] \
    || fail "the sandbox does not run $test_image"

step "the host firewall, installed by iptables inside the worker container"
pool=10.213.0.0/16
docker exec "$container" iptables -w 5 -C INPUT -s "$pool" -j BERTH-SANDBOX-INPUT \
    || fail "the INPUT jump for $pool is missing"
grep -q "reject-with tcp-reset" <<<"$(docker exec "$container" iptables -w 5 -S BERTH-SANDBOX-INPUT 2>/dev/null)" \
    || fail "the chain BERTH-SANDBOX-INPUT is not filled"
# a listener on the host, on the sandbox network's gateway address only: the host
# reaches it, the sandbox is refused
network=$(docker network ls -q --filter "label=berth.sandbox=$sandbox")
gateway=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$network")
[[ -n "$gateway" ]] || fail "the sandbox network has no gateway"
probe_port=$(free_port)
mkdir "$work/www"
(cd "$work/www" && exec python3 -m http.server --bind "$gateway" "$probe_port" >>"$work/probe.log" 2>&1) &
pids+=($!)
wait_for "the probe listener on $gateway" curl -fsS "http://$gateway:$probe_port/"
# (nc: the test image's static busybox wget segfaults, even on an address)
if "$BERTH" sandbox exec "$sandbox" -- "nc -w 5 $gateway $probe_port </dev/null" \
    >"$work/probe.out" 2>&1; then
    fail "the sandbox reached the host at $gateway:$probe_port"
fi
grep -qi "refused" "$work/probe.out" || fail "the sandbox was not refused: $(cat "$work/probe.out")"

step "exec, files, logs"
[[ $("$BERTH" sandbox exec "$sandbox" -- echo hi) == hi ]] || fail "exec did not echo"
set +e
"$BERTH" sandbox exec "$sandbox" -- 'echo to-stderr >&2; exit 3' 2>"$work/stderr.txt"
code=$?
set -e
[[ $code == 3 ]] || fail "exec exit code $code, expected 3"
grep -q to-stderr "$work/stderr.txt" || fail "stderr was not kept apart"
head -c 1000000 /dev/urandom >"$work/blob.bin"
"$BERTH" sandbox put "$sandbox" "$work/blob.bin" /workspace/blob.bin --mode 0600 2>/dev/null
"$BERTH" sandbox cat "$sandbox" /workspace/blob.bin >"$work/blob.back"
cmp -s "$work/blob.bin" "$work/blob.back" || fail "the file came back different"
grep -q "0600 *1000000" <<<"$("$BERTH" sandbox ls "$sandbox" /workspace)" || fail "ls does not show the file"
grep -q "started" <<<"$("$BERTH" sandbox logs "$sandbox")" || fail "the console log misses the start line"

step "destroy removes the container and its network"
"$BERTH" sandbox destroy "$sandbox" 2>/dev/null
[[ -z $(docker ps -aq --filter "label=berth.sandbox=$sandbox") ]] || fail "the container is still there"
[[ -z $(docker network ls -q --filter "label=berth.sandbox=$sandbox") ]] || fail "the network is still there"

step "docker stop drains: a live sandbox is destroyed at the deadline, exit 0"
live=$("$BERTH" sandbox create --provider docker --ttl 10m 2>/dev/null)
[[ -n $(docker ps -q --filter "label=berth.sandbox=$live") ]] || fail "no container for $live"
stop_started=$(date +%s)
docker stop "$container" >/dev/null
(( $(date +%s) - stop_started <= 30 )) || fail "the drain overran its deadline"
[[ $(docker inspect -f '{{.State.ExitCode}}' "$container") == 0 ]] \
    || fail "the worker exited with $(docker inspect -f '{{.State.ExitCode}}' "$container")"
docker logs "$container" >"$work/worker-stop.log" 2>&1
grep -q "drained" "$work/worker-stop.log" || fail "the worker did not report its drain"
[[ -z $(docker ps -aq --filter "label=berth.sandbox=$live") ]] || fail "the drain left $live's container"

step "docker start: the identity comes back from the volume"
docker start "$container" >/dev/null
wait_for "$worker_id online again" worker_online
[[ $(worker_field certificate.serial) == "$serial" ]] || fail "the restarted worker was issued a new certificate"
fresh=$("$BERTH" sandbox create --provider docker --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox exec "$fresh" -- echo back) == back ]] || fail "the restarted worker does not run work"
"$BERTH" sandbox destroy "$fresh" 2>/dev/null

step "stopping"
docker stop "$container" >/dev/null
[[ $(docker inspect -f '{{.State.ExitCode}}' "$container") == 0 ]] || fail "the worker did not exit cleanly"
[[ -z $(docker ps -aq --filter "label=berth.worker=$worker_id") ]] || fail "containers of the worker are left"
kill -TERM "${pids[0]}"
wait "${pids[0]}" || fail "the control plane did not exit cleanly"
echo "smoke (worker container): ok"
