//! The small POSIX `sh` programs the provider runs inside a sandbox (through exec, as
//! the sandbox's own user, so permissions are what the user would meet): the sleeper
//! that keeps the container up, file operations the engine's archive API cannot do
//! (stat, list, walk, delete, move, chmod) and the signaller that reaches a command's
//! whole process family (and kills it). They need `/bin/sh` and the usual utilities (busybox or coreutils:
//! `stat`, `find`, `rm`, `rmdir`, `mv`, `chmod`, `grep`, `ls`, `sleep`), which every
//! general-purpose image has.
//!
//! File operations answer with an exit status the provider maps to `ProviderError`s,
//! and print the path concerned on stdout. Paths are always absolute and normalized by
//! the caller, so none can be taken for an option.

/// Exit statuses of [`FS`].
pub const NOT_FOUND: i64 = 10;
pub const NOT_A_DIRECTORY: i64 = 11;
pub const DIRECTORY_NOT_EMPTY: i64 = 12;
pub const IS_A_DIRECTORY: i64 = 13;
pub const EXISTS: i64 = 14;
pub const INVALID: i64 = 15;

/// The container's main process: says it started (the first console line), then
/// sleeps until the container is removed. `docker-init` (the engine's `init: true`)
/// runs as PID 1 above it and reaps orphans.
pub fn sleeper(sandbox_id: &str) -> Vec<String> {
    vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "echo \"berth: sandbox $BERTH_SANDBOX_ID started\"; trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".to_owned(),
        format!("berth-init-{sandbox_id}"),
    ]
}

/// `sh -c FS berth-fs OP ARGS...`; see the module docs.
pub const FS: &str = r#"
fail() { printf '%s' "$2"; exit "$1"; }
exists() { [ -e "$1" ] || [ -L "$1" ]; }
parent_of() { p=${1%/*}; [ -n "$p" ] || p=/; printf '%s' "$p"; }
op=$1; shift
case $op in
stat)
    exists "$1" || fail 10 "$1"
    exec stat -c '%s %f %Y' "$1"
    ;;
list)
    exists "$1" || fail 10 "$1"
    [ -d "$1" ] || fail 11 "$1"
    cd "$1" || exit 1
    for f in * .*; do
        case $f in .|..) continue ;; esac
        exists "./$f" || continue
        printf '%s\0' "$f"
        stat -c '%s %f %Y' "./$f" || exit 1
    done
    ;;
walk)
    exists "$1" || exit 0
    if [ "$2" = all ]; then
        find "$1" \( -path /proc -o -path /sys -o -path /dev \) -prune -o -print0 2>/dev/null
    else
        find "$1" -maxdepth "$2" \( -path /proc -o -path /sys -o -path /dev \) -prune -o -print0 2>/dev/null
    fi
    exit 0
    ;;
dir)
    exists "$1" || fail 10 "$1"
    [ -d "$1" ] || fail 11 "$1"
    ;;
writable)
    parent=$(parent_of "$1")
    exists "$parent" || fail 10 "$parent"
    [ -d "$parent" ] || fail 11 "$parent"
    if [ -d "$1" ] && [ ! -L "$1" ]; then fail 13 "$1"; fi
    ;;
rm)
    exists "$1" || fail 10 "$1"
    if [ -d "$1" ] && [ ! -L "$1" ]; then
        [ "$2" = recursive ] && exec rm -rf "$1"
        [ -z "$(ls -A "$1")" ] || fail 12 "$1"
        exec rmdir "$1"
    fi
    exec rm -f "$1"
    ;;
mv)
    exists "$1" || fail 10 "$1"
    parent=$(parent_of "$2")
    exists "$parent" || fail 10 "$parent"
    [ -d "$parent" ] || fail 11 "$parent"
    [ "$1" = "$2" ] && exit 0
    case $2 in "$1"/*) fail 15 "cannot move $1 into itself" ;; esac
    if [ -d "$2" ] && [ ! -L "$2" ]; then fail 14 "$2"; fi
    if exists "$2" && [ -d "$1" ] && [ ! -L "$1" ]; then fail 11 "$2"; fi
    exec mv -f "$1" "$2"
    ;;
chmod)
    exists "$2" || fail 10 "$2"
    exec chmod "$1" "$2"
    ;;
*)
    fail 15 "unknown operation $op"
    ;;
esac
"#;

/// `sh -c SIGNAL berth-signal MARKER SIGNUM`: sends signal `SIGNUM` to every process
/// whose environment carries `BERTH_EXEC_ID=MARKER` (a command and everything it
/// started, however deep, unless it wiped its environment).
///
/// SIGKILL (9) ends them all: each round finds them all, stops them all (so none runs
/// on, or forks, when a child dies) and then kills them; rounds repeat until none is
/// left. Any other signal is sent once to each process found, which may handle it.
pub const SIGNAL: &str = r#"
marker="BERTH_EXEC_ID=$1"
sig=$2
round=0
while [ $round -lt 5 ]; do
    pids=
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$$" ] && continue
        grep -q "$marker" "$d/environ" 2>/dev/null && pids="$pids $pid"
    done
    [ -n "$pids" ] || exit 0
    if [ "$sig" != 9 ]; then
        kill -"$sig" $pids 2>/dev/null
        exit 0
    fi
    kill -STOP $pids 2>/dev/null
    kill -KILL $pids 2>/dev/null
    round=$((round + 1))
done
"#;

/// The environment variable that marks a command's processes.
pub const EXEC_MARKER: &str = "BERTH_EXEC_ID";
