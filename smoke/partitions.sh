#!/usr/bin/env bash
# Real partitions: a worker in a network namespace of its own, joined to the host by a
# veth pair, its link cut (not the process killed) for three lengths of time:
#   1. shorter than the heartbeat grace: nothing happens (never unhealthy, exec works);
#   2. longer than the grace, shorter than the disconnect policy's lost_after: the
#      worker turns unhealthy and its sandbox's calls fail with 503, then the link
#      heals and the same sandbox, with its files, serves again;
#   3. longer than lost_after: the sandbox is lost; when the link heals the worker is
#      told to destroy it, and it takes new work.
# What Berth promises in each case is written down in docs/partitions.md.
# Needs root (ip netns); skips visibly without it, fails with BERTH_REQUIRE_NETNS=1.
set -euo pipefail

cd "$(dirname "$0")/.."
skip() {
    if [[ "${BERTH_REQUIRE_NETNS:-}" == 1 ]]; then
        echo "partitions: BERTH_REQUIRE_NETNS=1 but $*" >&2
        exit 1
    fi
    echo "partitions: SKIPPED: $*"
    exit 0
}
command -v ip >/dev/null || skip "no ip (iproute2)"
[[ $(id -u) == 0 ]] || skip "not root"

BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi
BERTH=$(realpath "$BERTH")

n=$(($$ % 250 + 1))
ns="berth-part-$n"
host_end="bpth$n"
inner_end="bptn$n"
host_ip="10.233.$n.1"
worker_ip="10.233.$n.2"

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip link del "$host_end" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "partitions: FAILED" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "partitions: $*"; }
fail() { echo "partitions: $*" >&2; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
json_field() {
    python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"
}
# waits up to $2 seconds for a command to succeed
wait_up_to() {
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "timed out after ${seconds}s waiting for $what"
}

step "a network namespace $ns: host $host_ip <-> worker $worker_ip"
ip netns add "$ns" || skip "cannot create a network namespace"
ip link add "$host_end" type veth peer name "$inner_end"
ip link set "$inner_end" netns "$ns"
ip addr add "$host_ip/30" dev "$host_end"
ip link set "$host_end" up
ip -n "$ns" addr add "$worker_ip/30" dev "$inner_end"
ip -n "$ns" link set "$inner_end" up
ip -n "$ns" link set lo up

api_port=$(free_port)
mesh_port=$(free_port)
worker_port=$(free_port)
export BERTH_API_URL="http://127.0.0.1:$api_port"
export BERTH_DATA_DIR="$work/control-plane"

# heartbeats every 1s, unhealthy after 4 missed (grace 4s), sandboxes kept 20s
lost_after=20
sed -e 's/^missed_heartbeats: .*/missed_heartbeats: 4/' \
    -e "s/^    lost_after: .*/    lost_after: ${lost_after}s/" \
    config/control-plane.yaml >"$work/control-plane.yaml"
grep -q "lost_after: ${lost_after}s" "$work/control-plane.yaml" || fail "the config has no lost_after to set"
"$BERTH" serve --config "$work/control-plane.yaml" --data-dir "$work/control-plane" --ssh-listen 127.0.0.1:0 \
    --listen "127.0.0.1:$api_port" --mesh-listen "$host_ip:$mesh_port" \
    --heartbeat-interval 1s >>"$work/serve.log" 2>&1 &
pids+=($!)
wait_up_to "the control plane" 20 curl -fsS "$BERTH_API_URL/api/v1/health"

"$BERTH" token create --worker-id part-1 --ttl 10m >"$work/token" 2>/dev/null
ip netns exec "$ns" "$BERTH" worker --config config/worker.yaml \
    --control-plane "https://$host_ip:$mesh_port" --listen "$worker_ip:$worker_port" \
    --data-dir "$work/worker" --join-token-file "$work/token" \
    --heartbeat-interval 1s >>"$work/worker.log" 2>&1 &
pids+=($!)

status_of() { "$BERTH" workers get part-1 -o json | json_field status; }
is_online() { [[ $(status_of) == online ]]; }
is_unhealthy() { [[ $(status_of) == unhealthy ]]; }
state_of() { "$BERTH" sandbox get "$1" -o json | json_field state; }
is_lost() { [[ $(state_of "$1") == lost ]]; }
cut() { ip link set "$host_end" down; }
heal() { ip link set "$host_end" up; }

wait_up_to "part-1 online" 30 is_online
sandbox=$("$BERTH" sandbox create --provider mock --ttl 30m 2>/dev/null)
"$BERTH" sandbox exec "$sandbox" -- 'echo kept > kept.txt' >/dev/null

step "1. a cut shorter than the grace (1s of 4s): nothing happens"
cut
# the status is sampled through the cut and a few heartbeats after it
statuses=()
end=$((SECONDS + 1))
while ((SECONDS < end)); do statuses+=("$(status_of)"); sleep 0.2; done
heal
end=$((SECONDS + 4))
while ((SECONDS < end)); do statuses+=("$(status_of)"); sleep 0.3; done
for status in "${statuses[@]}"; do
    [[ $status == online ]] || fail "the worker turned $status during a 1s cut: ${statuses[*]}"
done
[[ $("$BERTH" sandbox exec "$sandbox" -- cat kept.txt) == kept ]] || fail "exec failed after a short cut"

step "2. a cut longer than the grace, shorter than lost_after (10s of ${lost_after}s)"
cut
cut_at=$SECONDS
wait_up_to "part-1 unhealthy" 10 is_unhealthy
if "$BERTH" sandbox exec "$sandbox" -- echo through >"$work/cut-exec.out" 2>&1; then
    fail "an exec went through a cut link"
fi
grep -qi "unavailable\|unreachable\|unhealthy" "$work/cut-exec.out" \
    || fail "the failed exec does not say the worker is unavailable: $(cat "$work/cut-exec.out")"
[[ $(state_of "$sandbox") == running ]] || fail "the sandbox was given up during a short partition"
sleep $((10 - (SECONDS - cut_at)))
heal
wait_up_to "part-1 online after the heal" 30 is_online
[[ $(state_of "$sandbox") == running ]] || fail "the sandbox is $(state_of "$sandbox") after the heal"
[[ $("$BERTH" sandbox exec "$sandbox" -- cat kept.txt) == kept ]] \
    || fail "the sandbox lost its files across a partition shorter than lost_after"

step "3. a cut longer than lost_after: the sandbox is lost, the returning worker drops it"
cut
wait_up_to "the sandbox lost" $((lost_after + 15)) is_lost "$sandbox"
heal
wait_up_to "part-1 online after the long cut" 30 is_online
dropped() { grep "destroyed a sandbox without a lease" "$work/worker.log" | grep -q "$sandbox"; }
wait_up_to "the worker to drop the lost sandbox" 20 dropped
[[ $(state_of "$sandbox") == lost ]] || fail "a lost sandbox came back as $(state_of "$sandbox")"
fresh=$("$BERTH" sandbox create --provider mock --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox exec "$fresh" -- echo back) == back ]] || fail "the healed worker takes no work"
"$BERTH" sandbox destroy "$fresh" 2>/dev/null
step "ok"
