#!/usr/bin/env bash
# End-to-end smoke of Berth with real processes, real ports and real mTLS:
# `berth serve` and `berth worker` started from the config/ files, a worker enrolled
# with a join token from `berth token create`, listed online, restarted with its stored
# identity, a used-up token refused; a sandbox created, exec'd (whole and streamed),
# files written, read back, listed and removed, logs read and the sandbox destroyed
# through the CLI; StacyVM's own Python SDK run against it; the control plane killed
# during parallel creates and every sandbox settling; both processes stopped cleanly
# by SIGTERM.
# Exits non-zero on the first failure, printing the processes' logs.
set -euo pipefail

cd "$(dirname "$0")/.."
# BERTH_SMOKE_PROVIDER=docker runs the docker provider's smoke instead (smoke-docker.sh)
if [[ "${BERTH_SMOKE_PROVIDER:-mock}" == docker ]]; then
    exec bash smoke/smoke-docker.sh
fi
BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "smoke: FAILED" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
json_field() { # json_field FIELD.SUBFIELD < json
    python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[k]
print(v)' "$1"
}
step() { echo "smoke: $*"; }
fail() { echo "smoke: $*" >&2; exit 1; }

# (output is captured before grep reads it: with pipefail, `cmd | grep -q` fails
# whenever grep exits before cmd has written everything)

# waits up to 20s for a command to succeed
wait_for() {
    local what=$1; shift
    for _ in $(seq 1 100); do
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

# the example config, with a reaper quick enough for the lifecycle steps below and a
# spawn timeout short enough that spawns a killed control plane left are resolved soon
sed -e 's/^  reap_interval: .*/  reap_interval: 500ms/' -e 's/^  spawn_timeout: .*/  spawn_timeout: 2s/' \
    config/control-plane.yaml >"$work/control-plane.yaml"
start_serve() {
    "$BERTH" serve --config "$work/control-plane.yaml" --data-dir "$work/control-plane" --ssh-listen 127.0.0.1:0 \
        --listen "127.0.0.1:$api_port" --mesh-listen "127.0.0.1:$mesh_port" \
        --heartbeat-interval 500ms >>"$work/serve.log" 2>&1 &
    serve_pid=$!
    pids+=("$serve_pid")
    wait_for "the control plane" curl -fsS "$BERTH_API_URL/api/v1/health"
}

step "starting berth serve (api $api_port, mesh $mesh_port)"
start_serve
[[ $(stat -c %a "$work/control-plane/admin.key") == 600 ]] || fail "admin.key is not 0600"
[[ $(stat -c %a "$work/control-plane/ca.key") == 600 ]] || fail "ca.key is not 0600"
grep -q "admin API key" "$work/serve.log" || fail "the first admin key was not shown"

step "creating a join token pinned to smoke-1"
"$BERTH" token create --worker-id smoke-1 --ttl 10m >"$work/token" 2>/dev/null
chmod 600 "$work/token"

start_worker() {
    "$BERTH" worker --config config/worker.yaml --control-plane "https://127.0.0.1:$mesh_port" \
        --listen "127.0.0.1:$worker_port" --data-dir "$work/worker" \
        --heartbeat-interval 500ms --drain-deadline 2s "$@" >>"$work/worker.log" 2>&1 &
    worker_pid=$!
    pids+=("$worker_pid")
}
worker_online() {
    [[ $("$BERTH" workers get smoke-1 -o json | json_field status) == online ]]
}

step "starting berth worker"
start_worker --join-token-file "$work/token"
wait_for "smoke-1 online" worker_online
spiffe=$("$BERTH" workers get smoke-1 -o json | json_field spiffe_id)
[[ "$spiffe" == "spiffe://berth.local/worker/smoke-1" ]] || fail "unexpected identity $spiffe"
serial=$("$BERTH" workers get smoke-1 -o json | json_field certificate.serial)
[[ $(stat -c %a "$work/worker/worker.key") == 600 ]] || fail "worker.key is not 0600"
grep -q "smoke-1 *online" <<<"$("$BERTH" workers list)" || fail "workers list does not show smoke-1 online"

step "restarting the worker: it keeps its identity without a token"
kill -TERM "$worker_pid"
wait "$worker_pid" || fail "the worker did not exit cleanly on SIGTERM"
start_worker
wait_for "smoke-1 online again" worker_online
[[ $("$BERTH" workers get smoke-1 -o json | json_field certificate.serial) == "$serial" ]] \
    || fail "the restarted worker was issued a new certificate"

step "a used-up join token is refused"
if "$BERTH" worker --control-plane "https://127.0.0.1:$mesh_port" --join-token-file "$work/token" \
    --listen "127.0.0.1:$(free_port)" --data-dir "$work/intruder" >"$work/intruder.log" 2>&1; then
    fail "a second worker enrolled with a used-up token"
fi
grep -q "used up" "$work/intruder.log" || fail "the refusal does not say the token is used up"

step "a sandbox through the CLI: create, exec, stream, files, logs, destroy"
sandbox=$("$BERTH" sandbox create --provider mock --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox exec "$sandbox" -- echo hello) == hello ]] || fail "exec did not echo"
set +e
"$BERTH" sandbox exec "$sandbox" -- 'echo to-stderr >&2; exit 3' 2>"$work/stderr.txt"
code=$?
set -e
[[ $code == 3 ]] || fail "exec exit code $code, expected 3"
grep -q to-stderr "$work/stderr.txt" || fail "stderr was not kept apart"
streamed=$("$BERTH" sandbox exec --stream "$sandbox" -- 'generate --lines 3 --delay-ms 100')
[[ $(echo "$streamed" | wc -l) == 3 ]] || fail "the stream did not carry 3 lines: $streamed"
head -c 5000000 /dev/urandom >"$work/blob.bin"
"$BERTH" sandbox put "$sandbox" "$work/blob.bin" /workspace/blob.bin --mode 0600 2>/dev/null
"$BERTH" sandbox cat "$sandbox" /workspace/blob.bin >"$work/blob.back"
cmp -s "$work/blob.bin" "$work/blob.back" || fail "the file came back different"
grep -q "0600 *5000000" <<<"$("$BERTH" sandbox ls "$sandbox" /workspace)" || fail "ls does not show the file"
"$BERTH" sandbox rm "$sandbox" /workspace/blob.bin
grep -q "exec: echo 'hello'" <<<"$("$BERTH" sandbox logs "$sandbox")" || fail "the console log misses the exec"
"$BERTH" sandbox extend "$sandbox" --ttl 1h >/dev/null
"$BERTH" sandbox destroy "$sandbox" 2>/dev/null
if "$BERTH" sandbox get "$sandbox" >/dev/null 2>&1; then fail "a destroyed sandbox is still there"; fi

step "StacyVM's Python SDK against Berth"
venv="${CARGO_TARGET_DIR:-target}/stacyvm-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import stacyvm" 2>/dev/null; then
    python3 -m venv "$venv" && "$venv/bin/pip" install --quiet stacyvm \
        || fail "cannot install the stacyvm SDK from PyPI"
fi
# a team with a quota of one sandbox and a member key, minted by the CLI
"$BERTH" teams create sdk --max-sandboxes 1 --max-ttl 2h >/dev/null 2>&1 || fail "teams create"
team_key=$("$BERTH" keys create --team sdk --scopes read,write,exec --name sdk 2>/dev/null) \
    || fail "keys create --team"
"$venv/bin/python" smoke/stacyvm_sdk.py "$BERTH_API_URL" "$(cat "$work/control-plane/admin.key")" \
    "$team_key" || fail "the StacyVM SDK run failed"

step "status, metrics and the audit log"
grep -q "workers *1 (online 1)" <<<"$("$BERTH" status)" || fail "berth status does not show the worker online"
grep -q 'berth_workers{status="online"} 1' <<<"$(curl -fsS "$BERTH_API_URL/metrics")" || fail "/metrics lacks the online worker"
grep -q "sandboxes/{id}/exec" <<<"$("$BERTH" audit list)" || fail "the audit log misses the execs"
grep -q "audit log intact" <<<"$("$BERTH" audit verify)" || fail "audit verify failed"

worker_field() { "$BERTH" workers get smoke-1 -o json | json_field "$1"; }
worker_status_is() { [[ $(worker_field status) == "$1" ]]; }
drain_state_is() { [[ $(worker_field drain.state) == "$1" ]]; }
sandbox_state_is() { [[ $("$BERTH" sandbox get "$1" -o json 2>/dev/null | json_field state) == "$2" ]]; }
sandbox_gone() { ! "$BERTH" sandbox get "$1" >/dev/null 2>&1; }

step "SIGKILL: the worker turns unhealthy; restarted without its sandbox, the sandbox is lost; it takes work"
doomed=$("$BERTH" sandbox create --ttl 10m 2>/dev/null)
kill -KILL "$worker_pid"
wait "$worker_pid" 2>/dev/null || true
wait_for "smoke-1 unhealthy" worker_status_is unhealthy
# the disconnect policy keeps a silent worker's sandboxes for it (lost_after: 5m)
sandbox_state_is "$doomed" running || fail "a silent worker's sandbox was given up at once"
start_worker
wait_for "smoke-1 online after the restart" worker_online
# the mock kept it in memory only: the returning worker does not report it
wait_for "the killed worker's sandbox lost" sandbox_state_is "$doomed" lost
fresh=$("$BERTH" sandbox create --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox exec "$fresh" -- echo back) == back ]] || fail "the restarted worker does not run work"
"$BERTH" sandbox destroy "$doomed" 2>/dev/null
"$BERTH" sandbox destroy "$fresh" 2>/dev/null

step "the control plane restarted mid-stream: the sandbox and its files survive"
steady=$("$BERTH" sandbox create --ttl 10m 2>/dev/null)
"$BERTH" sandbox exec "$steady" -- 'echo kept > kept.txt' >/dev/null
"$BERTH" sandbox exec --stream "$steady" -- 'generate --lines 100 --delay-ms 100' >"$work/stream.out" 2>&1 &
stream_pid=$!
pids+=("$stream_pid")
wait_for "the stream to start" grep -q line "$work/stream.out"
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "the control plane did not exit cleanly mid-stream"
start_serve
wait_for "smoke-1 online after the restart" worker_online
[[ $("$BERTH" sandbox exec "$steady" -- cat kept.txt) == kept ]] || fail "the sandbox did not survive the restart"
"$BERTH" sandbox destroy "$steady" 2>/dev/null

step "the control plane restarted mid-drain: the drain still finishes"
live=$("$BERTH" sandbox create --ttl 10m 2>/dev/null)
"$BERTH" workers drain smoke-1 --deadline 3s >/dev/null
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "the control plane did not exit cleanly"
start_serve
wait_for "the drain to finish after the restart" drain_state_is drained
wait_for "the sandbox destroyed at the deadline" sandbox_gone "$live"
"$BERTH" workers undrain smoke-1 >/dev/null
wait_for "smoke-1 online after the drain" worker_online

step "SIGKILL of the control plane mid-create: every sandbox ends running or destroyed"
creates=()
for _ in 1 2 3 4 5 6; do
    "$BERTH" sandbox create --ttl 10m >/dev/null 2>&1 &
    creates+=("$!")
done
sleep 0.3
kill -KILL "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
for pid in "${creates[@]}"; do wait "$pid" 2>/dev/null || true; done
start_serve
wait_for "smoke-1 online after the kill" worker_online
all_running() {
    "$BERTH" sandbox list -o json >"$work/list.json"
    python3 -c 'import json,sys; sys.exit(any(s["state"] != "running" for s in json.load(sys.stdin)))' \
        <"$work/list.json"
}
wait_for "no sandbox left creating after the kill" all_running
for id in $(python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))' <"$work/list.json"); do
    "$BERTH" sandbox destroy "$id" 2>/dev/null
done

step "SIGTERM drains the worker: a live sandbox is destroyed at the drain deadline"
"$BERTH" sandbox create --ttl 10m >/dev/null 2>&1
kill -TERM "$worker_pid"
drain_started=$(date +%s)
wait "$worker_pid" || fail "the worker did not exit cleanly after draining"
(( $(date +%s) - drain_started <= 15 )) || fail "the self-drain overran its deadline"
grep -q "drained" "$work/worker.log" || fail "the worker did not report its drain"

step "stopping"
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "the control plane did not exit cleanly"
pids=()
echo "smoke: 1 passed, 0 failed"
