#!/usr/bin/env bash
# Runs Berth's fuzz targets (fuzz/fuzz_targets/*.rs), one at a time, each as a single
# libFuzzer process, and reports what each did.
#
#   fuzz/run.sh --smoke              every target for a few seconds (CI)
#   fuzz/run.sh                      every target for 300 s
#   fuzz/run.sh --time 600           every target for 600 s
#   fuzz/run.sh --execs 1000000      every target for 10^6 executions
#   fuzz/run.sh --execs 1000000 --targets "paths glob"
#   fuzz/run.sh ... --report docs/fuzz-report.md
#
# Every run is bounded: -rss_limit_mb, -malloc_limit_mb and -timeout turn unbounded
# memory and hangs into findings. Inputs that crash, time out or run out of memory
# land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus-work/<target>/
# (seeded from the committed fuzz/corpus/<target>/). The exit status is 1 when any
# target found something.
#
# Needs nightly Rust; installs cargo-fuzz if it is missing. The build goes to
# $FUZZ_TARGET_DIR, else ${CARGO_TARGET_DIR}-fuzz, else fuzz/target.
set -euo pipefail
called_from="$PWD"

smoke=0
time_per_target=300
execs=""
targets=""
report=""
sanitizer="${FUZZ_SANITIZER:-}"
while (($#)); do
    case "$1" in
    --smoke) smoke=1 ;;
    --time) time_per_target="$2"; shift ;;
    --execs) execs="$2"; shift ;;
    --targets) targets="$2"; shift ;;
    --report) report="$2"; shift ;;
    --sanitizer) sanitizer="$2"; shift ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
    esac
    shift
done
if [[ -n "$report" && "$report" != /* ]]; then
    report="$called_from/$report"
fi
cd "$(dirname "$0")"
if ((smoke)); then
    time_per_target="${FUZZ_SMOKE_SECONDS:-10}"
    execs=""
fi

if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR}-fuzz"
else
    export CARGO_TARGET_DIR="$PWD/target"
fi
mkdir -p "$CARGO_TARGET_DIR"

# cargo-fuzz passes -Z flags to rustc: nightly, or (where no nightly can be had, as on
# a machine without network access to the toolchain server) the stable compiler with
# RUSTC_BOOTSTRAP=1, which accepts them and ships the same sanitizer runtimes
toolchain=(+nightly)
if ! rustup toolchain list | grep -q '^nightly'; then
    if ! rustup toolchain install nightly --profile minimal; then
        echo "== no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1"
        toolchain=()
        export RUSTC_BOOTSTRAP=1
    fi
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

echo "== building the fuzz targets (nightly, into $CARGO_TARGET_DIR)"
if [[ -n "$sanitizer" ]]; then
    cargo "${toolchain[@]}" fuzz build --sanitizer "$sanitizer"
else
    # cargo-fuzz's default: AddressSanitizer, release with debug assertions
    cargo "${toolchain[@]}" fuzz build
    sanitizer=address
fi
bin_dir="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

if [[ -z "$targets" ]]; then
    targets="$(cargo "${toolchain[@]}" fuzz list | tr '\n' ' ')"
fi

mkdir -p logs artifacts corpus-work
limits=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=4096)
if [[ -n "$execs" ]]; then
    budget=(-runs="$execs")
    budget_text="$execs executions per target"
else
    budget=(-max_total_time="$time_per_target")
    budget_text="${time_per_target} s per target"
fi

# one markdown row per target
rows=()
failed=0
started_all=$(date +%s)
for target in $targets; do
    bin="$bin_dir/$target"
    log="logs/$target.log"
    work="corpus-work/$target"
    mkdir -p "$work" "artifacts/$target" "corpus/$target"
    echo "== fuzz $target ($budget_text)"
    started=$(date +%s)
    set +e
    "$bin" "${limits[@]}" "${budget[@]}" -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" "$work" "corpus/$target" >"$log" 2>&1
    status=$?
    set -e
    seconds=$(($(date +%s) - started))
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
    runs=$(stat number_of_executed_units)
    speed=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    units=$(stat new_units_added)
    crashes=$(find "artifacts/$target" -name 'crash-*' | wc -l)
    timeouts=$(find "artifacts/$target" -name 'timeout-*' | wc -l)
    ooms=$(find "artifacts/$target" -name 'oom-*' | wc -l)
    leaks=$(find "artifacts/$target" -name 'leak-*' | wc -l)
    if ((status == 0)); then
        result="ok"
    else
        failed=1
        result="FAILED (exit $status)"
        if grep -q 'libFuzzer: timeout' "$log"; then
            result="TIMEOUT"
        elif grep -q 'out-of-memory\|malloc limit' "$log"; then
            result="OUT OF MEMORY"
        elif grep -q 'deadly signal\|panicked at\|ERROR: AddressSanitizer' "$log"; then
            result="CRASH"
        fi
        grep -m 3 'panicked at\|SUMMARY\|ERROR:' "$log" | sed 's/^/    /' || true
        echo "    see fuzz/$log and fuzz/artifacts/$target/"
    fi
    printf '   %s: %s runs, %s exec/s, peak RSS %s MB, %s s, %s\n' \
        "$target" "${runs:-?}" "${speed:-?}" "${rss:-?}" "$seconds" "$result"
    rows+=("| $target | ${runs:-?} | ${speed:-?} | ${rss:-?} | $seconds | ${units:-?} | $crashes / $timeouts / $ooms / $leaks | $result |")
done
total=$(($(date +%s) - started_all))

table() {
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $budget_text," \
        "sanitizer $sanitizer, one target at a time, one process each; ${total} s in all."
    echo "Limits: ${limits[*]}."
    echo
    echo "| target | executions | exec/s | peak RSS (MB) | seconds | new corpus units | crash / timeout / oom / leak artifacts | result |"
    echo "|---|---:|---:|---:|---:|---:|---|---|"
    printf '%s\n' "${rows[@]}"
}
echo
table
if [[ -n "$report" ]]; then
    table >"$report"
    echo "report written to $report"
fi
exit "$failed"
