#!/usr/bin/env bash
# A dial-out worker behind a firewall that takes no connection at all: the worker runs
# in a network namespace of its own (joined to the host by a veth pair) whose INPUT
# chain drops every inbound SYN. Shown with real processes:
#   1. the drop is real: a listener inside the namespace, reachable before the rule,
#      cannot be connected to from the host after it;
#   2. `berth worker` without --listen enrolls, shows as dial-out and heartbeats;
#   3. the whole API through it, by the CLI (and curl for the NDJSON stream): create,
#      exec (output and exit code), streaming exec, a binary file put and read back,
#      ls, logs, destroy;
#   4. a silent cut (every packet dropped both ways, no FIN, no RST): the control plane
#      notices within its keepalive timeout (its berth_dialout_connections gauge falls
#      to 0); when the link heals the worker dials again and takes new work. The
#      detection and reconnect times are printed.
# Needs root (ip netns, iptables); skips visibly without it, fails with
# BERTH_REQUIRE_NETNS=1.
set -euo pipefail

cd "$(dirname "$0")/.."
skip() {
    if [[ "${BERTH_REQUIRE_NETNS:-}" == 1 ]]; then
        echo "dialout: BERTH_REQUIRE_NETNS=1 but $*" >&2
        exit 1
    fi
    echo "dialout: SKIPPED: $*"
    exit 0
}
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v iptables >/dev/null || skip "no iptables"
[[ $(id -u) == 0 ]] || skip "not root"

BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi
BERTH=$(realpath "$BERTH")

n=$(($$ % 250 + 1))
ns="berth-dial-$n"
host_end="bdlh$n"
inner_end="bdln$n"
host_ip="10.234.$n.1"
worker_ip="10.234.$n.2"
worker_id=smoke-dial-1

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    # processes started through in_ns run in a subshell: kill what runs in the
    # namespace itself, not only the recorded pids
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # the rules inside the namespace go with it
    ip link del "$host_end" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "dialout: FAILED" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step() { echo "dialout: $*"; }
fail() { echo "dialout: $*" >&2; exit 1; }
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
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
in_ns() { ip netns exec "$ns" "$@"; }

step "a network namespace $ns: host $host_ip <-> worker $worker_ip"
ip netns add "$ns" || skip "cannot create a network namespace"
ip link add "$host_end" type veth peer name "$inner_end"
ip link set "$inner_end" netns "$ns"
ip addr add "$host_ip/30" dev "$host_end"
ip link set "$host_end" up
ip -n "$ns" addr add "$worker_ip/30" dev "$inner_end"
ip -n "$ns" link set "$inner_end" up
ip -n "$ns" link set lo up

step "1. every inbound SYN dropped in the namespace, and the drop is real"
probe_port=$(free_port)
in_ns python3 -m http.server --bind "$worker_ip" "$probe_port" >>"$work/probe-listener.log" 2>&1 &
probe_pid=$!
pids+=("$probe_pid")
probe_url="http://$worker_ip:$probe_port/"
# before the rule the host reaches it (so what fails below fails because of the rule)
wait_up_to "the probe listener in the namespace" 20 curl -fsS --max-time 2 -o /dev/null "$probe_url"
in_ns iptables -A INPUT -p tcp --syn -j DROP
set +e
curl -sS --connect-timeout 3 -o /dev/null "$probe_url" 2>"$work/probe-curl.out"
code=$?
set -e
# 28: the connect timed out (a refusal would be 7: the SYN must vanish, not be answered)
[[ $code == 28 ]] || fail "a connection into the namespace was not dropped (curl exit $code: $(cat "$work/probe-curl.out"))"
step "   a listener at $worker_ip:$probe_port is out of reach from the host (connect timed out)"
kill "$probe_pid"
wait "$probe_pid" 2>/dev/null || true

api_port=$(free_port)
mesh_port=$(free_port)
export BERTH_API_URL="http://127.0.0.1:$api_port"
export BERTH_DATA_DIR="$work/control-plane"
metrics_url="$BERTH_API_URL/metrics"

"$BERTH" serve --config config/control-plane.yaml --data-dir "$work/control-plane" --ssh-listen 127.0.0.1:0 \
    --listen "127.0.0.1:$api_port" --mesh-listen "$host_ip:$mesh_port" \
    --heartbeat-interval 1s >>"$work/serve.log" 2>&1 &
pids+=($!)
wait_up_to "the control plane" 20 curl -fsS "$BERTH_API_URL/api/v1/health"
api_key=$(cat "$work/control-plane/admin.key")

step "2. a dial-out worker in the namespace (no --listen) enrolls and heartbeats"
"$BERTH" token create --worker-id "$worker_id" --ttl 10m >"$work/token" 2>/dev/null
chmod 600 "$work/token"
in_ns "$BERTH" worker --control-plane "https://$host_ip:$mesh_port" \
    --join-token-file "$work/token" --id "$worker_id" --data-dir "$work/worker" \
    --provider mock --heartbeat-interval 1s --drain-deadline 2s >>"$work/worker.log" 2>&1 &
pids+=($!)

worker_field() { "$BERTH" workers get "$worker_id" -o json | json_field "$1"; }
is_online() { [[ $(worker_field status) == online ]]; }
wait_up_to "$worker_id online" 30 is_online
[[ $(worker_field mode) == dial-out ]] || fail "the worker's mode is $(worker_field mode), not dial-out"
[[ -z $(worker_field advertise_addr) ]] || fail "a dial-out worker advertises $(worker_field advertise_addr)"
grep -Eq "^$worker_id +.*online.*dial-out|^$worker_id +.*dial-out.*online" <<<"$("$BERTH" workers list)" \
    || fail "workers list does not show $worker_id online and dial-out: $("$BERTH" workers list)"
first_beat=$(worker_field last_heartbeat)
heartbeat_advanced() { [[ $(worker_field last_heartbeat) != "$first_beat" ]]; }
wait_up_to "a heartbeat after $first_beat" 10 heartbeat_advanced
step "   online, mode dial-out, heartbeats advance ($first_beat -> $(worker_field last_heartbeat))"

# metric NAME: the value of NAME{worker="$worker_id"} on the control plane's /metrics,
# 0 when the series is absent (the last scrape is kept in cp-metrics.log)
metric() {
    curl -fsS "$metrics_url" >"$work/scrape.txt" || return 1
    grep '^berth_dialout' "$work/scrape.txt" >"$work/cp-metrics.log" || true
    python3 -c 'import re,sys
name, worker = sys.argv[1], sys.argv[2]
value = 0.0
for line in open(sys.argv[3]):
    m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(\S+)", line)
    if m and m.group(1) == name and re.search(r"\bworker=\"%s\"" % re.escape(worker), m.group(2)):
        value = float(m.group(3))
print("%g" % value)' "$1" "$worker_id" "$work/scrape.txt"
}
connections_are() { [[ $(metric berth_dialout_connections) == "$1" ]]; }
wait_up_to "berth_dialout_connections of $worker_id at 1" 10 connections_are 1

step "3. the API through the dial-out connection"
sandbox=$("$BERTH" sandbox create --provider mock --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox get "$sandbox" -o json | json_field worker_id) == "$worker_id" ]] \
    || fail "the sandbox is not on $worker_id"
[[ $("$BERTH" sandbox exec "$sandbox" -- echo hello) == hello ]] || fail "exec did not echo"
set +e
"$BERTH" sandbox exec "$sandbox" -- 'echo to-stderr >&2; exit 3' >"$work/exec.out" 2>"$work/exec.err"
code=$?
set -e
[[ $code == 3 ]] || fail "exec exit code $code, expected 3"
grep -q to-stderr "$work/exec.err" || fail "stderr was not kept apart"
[[ ! -s "$work/exec.out" ]] || fail "stdout got stderr's output: $(cat "$work/exec.out")"

# streamed by the CLI: the first line is out while the command is still running
"$BERTH" sandbox exec --stream "$sandbox" -- 'generate --lines 5 --delay-ms 400' \
    >"$work/stream.out" 2>"$work/stream.err" &
stream_pid=$!
pids+=("$stream_pid")
wait_up_to "the first streamed line" 10 grep -q "line 1" "$work/stream.out"
kill -0 "$stream_pid" 2>/dev/null || fail "the stream had ended before its first line was read"
[[ $(wc -l <"$work/stream.out") -lt 5 ]] || fail "the stream came all at once"
wait "$stream_pid" || fail "the streamed exec failed: $(cat "$work/stream.err")"
[[ $(wc -l <"$work/stream.out") == 5 ]] || fail "the stream did not carry 5 lines: $(cat "$work/stream.out")"

# streamed over HTTP: NDJSON lines, the last one the exit
curl -fsS -N -H "X-API-Key: $api_key" -H 'Content-Type: application/json' \
    -d '{"command": "generate --lines 3 --delay-ms 100; echo err >&2; exit 5", "stream": true}' \
    "$BERTH_API_URL/api/v1/sandboxes/$sandbox/exec" >"$work/stream.ndjson"
python3 - "$work/stream.ndjson" <<'EOF' || fail "the NDJSON stream is wrong: $(cat "$work/stream.ndjson")"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = "".join(l["data"] for l in lines if l["stream"] == "stdout")
err = "".join(l["data"] for l in lines if l["stream"] == "stderr")
assert out == "line 1\nline 2\nline 3\n", out
assert err == "err\n", err
assert lines[-1] == {"stream": "exit", "exit_code": 5} or (
    lines[-1]["stream"] == "exit" and lines[-1]["exit_code"] == 5), lines[-1]
assert sum(l["stream"] in ("exit", "error") for l in lines) == 1
EOF

head -c 300000 /dev/urandom >"$work/blob.bin"
"$BERTH" sandbox put "$sandbox" "$work/blob.bin" /workspace/blob.bin --mode 0600 2>/dev/null
"$BERTH" sandbox cat "$sandbox" /workspace/blob.bin >"$work/blob.back"
sent=$(sha256sum <"$work/blob.bin" | cut -d' ' -f1)
back=$(sha256sum <"$work/blob.back" | cut -d' ' -f1)
[[ "$sent" == "$back" ]] || fail "the file came back different (sha256 $sent sent, $back back)"
grep -q "0600 *300000" <<<"$("$BERTH" sandbox ls "$sandbox" /workspace)" \
    || fail "ls does not show the file: $("$BERTH" sandbox ls "$sandbox" /workspace)"
"$BERTH" sandbox rm "$sandbox" /workspace/blob.bin
if grep -q blob.bin <<<"$("$BERTH" sandbox ls "$sandbox" /workspace)"; then fail "rm left the file"; fi
grep -q "exec: echo 'hello'" <<<"$("$BERTH" sandbox logs "$sandbox")" \
    || fail "the console log misses the exec: $("$BERTH" sandbox logs "$sandbox")"
"$BERTH" sandbox destroy "$sandbox" 2>/dev/null
if "$BERTH" sandbox get "$sandbox" >/dev/null 2>&1; then fail "a destroyed sandbox is still there"; fi
step "   create, exec (exit 3, stderr apart), streamed exec (CLI and NDJSON), 300 KB put/cat (sha256 $sent), ls, rm, logs, destroy"

step "4. a silent cut: every packet in and out of the namespace dropped, no FIN"
reconnects_before=$(metric berth_dialout_reconnects_total)
in_ns iptables -I INPUT -j DROP
in_ns iptables -I OUTPUT -j DROP
cut_at=$(now)
connection_gone() { connections_are 0; }
wait_up_to "the control plane to notice the silent cut" 40 connection_gone
detected=$(since "$cut_at")
step "   the control plane dropped the half-open connection after ${detected}s"
# the worker was not told, and cannot be: nothing crosses the link
in_ns iptables -D INPUT -j DROP
in_ns iptables -D OUTPUT -j DROP
in_ns iptables -C INPUT -p tcp --syn -j DROP || fail "the SYN drop did not survive the heal"
healed_at=$(now)
wait_up_to "$worker_id to dial again" 30 connections_are 1
reconnected=$(since "$healed_at")
reconnects_after=$(metric berth_dialout_reconnects_total)
awk -v a="$reconnects_after" -v b="$reconnects_before" 'BEGIN { exit !(a >= 1 && a > b) }' \
    || fail "berth_dialout_reconnects_total went from $reconnects_before to $reconnects_after"
# the worker noticed the dead connection on its own (its keepalives) and dialed again
[[ $(grep -c "connected (dial-out)" "$work/worker.log") -ge 2 ]] || fail "the worker log shows no second connection"
step "   the worker was back ${reconnected}s after the heal (reconnects $reconnects_before -> $reconnects_after)"
wait_up_to "$worker_id online after the heal" 30 is_online
fresh=$("$BERTH" sandbox create --provider mock --ttl 10m 2>/dev/null)
[[ $("$BERTH" sandbox exec "$fresh" -- echo back) == back ]] || fail "the reconnected worker takes no work"
"$BERTH" sandbox destroy "$fresh" 2>/dev/null
step "   a new sandbox execs through the new connection"

step "detection ${detected}s, reconnect ${reconnected}s"
step "ok"
