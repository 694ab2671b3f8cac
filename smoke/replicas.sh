#!/usr/bin/env bash
# Smoke of several control planes on one Postgres, with real processes: a throwaway
# Postgres from the system's binaries, replica A (`--database-url postgres://…`),
# replica B sharing A's keys through `--keys-dir`, a worker that knows both; a sandbox
# created through A is exec'd and listed through B; A is stopped and the fleet keeps
# working through B; a replica without the cluster's keys refuses to start.
# Without Postgres binaries it says SKIPPED and passes, unless BERTH_REQUIRE_POSTGRES=1.
set -euo pipefail

cd "$(dirname "$0")/.."
step() { echo "smoke-replicas: $*"; }
fail() { echo "smoke-replicas: $*" >&2; exit 1; }

bin=""
for dir in $(tr ':' ' ' <<<"$PATH") $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV) /usr/local/bin; do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then bin=$dir; break; fi
done
if [[ -z "$bin" ]]; then
    [[ "${BERTH_REQUIRE_POSTGRES:-}" == 1 ]] && fail "no postgres binaries (BERTH_REQUIRE_POSTGRES=1)"
    echo "SKIPPED smoke/replicas.sh: no postgres binaries (initdb, pg_ctl, postgres)"
    echo "smoke-replicas: 0 passed, 0 failed, 1 skipped"
    exit 0
fi

BERTH=${BERTH:-}
if [[ -z "$BERTH" ]]; then
    cargo build --quiet --bin berth
    BERTH="${CARGO_TARGET_DIR:-target}/debug/berth"
fi

# initdb refuses root: then the server runs as the postgres user, in a dir it made
as_db() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d)
pgdir=$(as_db mktemp -d /tmp/berth-smoke-pg.XXXXXX)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_db "$bin/pg_ctl" stop -D "$pgdir/data" -m immediate >/dev/null 2>&1 || true
    if [[ $status -ne 0 ]]; then
        for log in "$work"/*.log "$pgdir/server.log"; do
            [[ -f "$log" ]] || continue
            echo "----- $log" >&2
            tail -n 40 "$log" >&2
        done
        echo "smoke-replicas: FAILED" >&2
        echo "smoke-replicas: 0 passed, 1 failed" >&2
    fi
    rm -rf "$work" "$pgdir"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() { # waits up to 20s for a command to succeed
    local what=$1; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    fail "timed out waiting for $what"
}

pg_port=$(free_port)
step "starting a throwaway postgres on port $pg_port"
as_db "$bin/initdb" -D "$pgdir/data" -U berth -A trust -E UTF8 --locale=C --no-sync >/dev/null
as_db "$bin/pg_ctl" start -w -D "$pgdir/data" -l "$pgdir/server.log" \
    -o "-p $pg_port -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
url="postgres://berth@127.0.0.1:$pg_port/postgres"

# start_serve NAME [flags…]: a replica with its own data dir and ports
start_serve() {
    local name=$1; shift
    local api mesh
    api=$(free_port); mesh=$(free_port)
    "$BERTH" serve --config config/control-plane.yaml --data-dir "$work/$name" --ssh-listen 127.0.0.1:0 \
        --listen "127.0.0.1:$api" --mesh-listen "127.0.0.1:$mesh" \
        --database-url "$url" --heartbeat-interval 500ms "$@" >>"$work/$name.log" 2>&1 &
    pids+=("$!")
    eval "${name}_pid=$! ${name}_api=http://127.0.0.1:$api ${name}_mesh=https://127.0.0.1:$mesh"
}

step "replica a on postgres"
start_serve a
wait_for "replica a" curl -fsS "$a_api/api/v1/health"
export BERTH_API_KEY_FILE="$work/a/admin.key"
at() { local api=$1; shift; BERTH_API_URL=$api "$BERTH" "$@"; }
grep -q "store *postgres" <<<"$(at "$a_api" status)" || fail "berth status does not say postgres"

step "replica b sharing a's keys through --keys-dir"
start_serve b --keys-dir "$work/a"
wait_for "replica b" curl -fsS "$b_api/api/v1/health"
if grep -q "admin API key" "$work/b.log"; then fail "replica b made a second admin key"; fi

step "a worker that knows both replicas"
token=$(at "$a_api" token create --ttl 10m 2>/dev/null)
"$BERTH" worker --control-plane "$a_mesh" --control-plane "$b_mesh" --join-token "$token" \
    --id smoke-r1 --listen "127.0.0.1:$(free_port)" --data-dir "$work/worker" \
    --heartbeat-interval 500ms >>"$work/worker.log" 2>&1 &
worker_pid=$!
pids+=("$worker_pid")
worker_field() { # worker_field API FIELD
    at "$1" workers get smoke-r1 -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
online_at() { [[ $(worker_field "$1" status) == online ]]; }
# the worker heartbeated to some replica after $1 (unix ms)
# (last_heartbeat is RFC 3339 to the second: a heartbeat in a later second than $1)
heartbeat_after() {
    local at
    at=$(worker_field "$b_api" last_heartbeat)
    (( $(python3 -c 'import datetime,sys; print(int(datetime.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")).timestamp()))' "$at") > $1 / 1000 ))
}
wait_for "the worker online at a" online_at "$a_api"
wait_for "the worker online at b" online_at "$b_api"

step "a sandbox made through a, used through b"
sandbox=$(at "$a_api" sandbox create --provider mock --ttl 10m 2>/dev/null)
grep -q "$sandbox" <<<"$(at "$b_api" sandbox list)" || fail "b does not list the sandbox"
[[ $(at "$b_api" sandbox exec "$sandbox" -- echo via-b) == via-b ]] || fail "exec through b failed"

step "stopping a: the fleet keeps working through b"
kill -TERM "$a_pid"
wait "$a_pid" || fail "replica a did not stop cleanly"
stopped=$(date +%s%3N)
wait_for "a heartbeat through b after a stopped" heartbeat_after "$stopped"
online_at "$b_api" || fail "the worker is not online at b"
[[ $(at "$b_api" sandbox exec "$sandbox" -- echo still-here) == still-here ]] || fail "exec after a stopped failed"
second=$(at "$b_api" sandbox create --provider mock 2>/dev/null)
at "$b_api" sandbox destroy "$second" 2>/dev/null
at "$b_api" sandbox destroy "$sandbox" 2>/dev/null

step "a replica without the cluster's keys refuses to start"
if "$BERTH" serve --data-dir "$work/c" --listen "127.0.0.1:$(free_port)" \
    --mesh-listen "127.0.0.1:$(free_port)" --database-url "$url" >"$work/c.log" 2>&1; then
    fail "replica c started without the cluster's keys"
fi
grep -q "holds no keys" "$work/c.log" || fail "replica c did not say why it refused"
[[ ! -e "$work/c/ca.key" ]] || fail "replica c made keys for a cluster that has some"

step "stopping"
kill -TERM "$worker_pid" "$b_pid"
wait "$worker_pid" || fail "the worker did not stop cleanly"
wait "$b_pid" || fail "replica b did not stop cleanly"
pids=()
echo "smoke-replicas: 1 passed, 0 failed"
