#!/usr/bin/env bash
# Builds the image that runs `berth worker` as a container, without a registry: a
# root filesystem holding the berth binary (/usr/local/bin/berth), the shared
# libraries it links and this host's `iptables` (the docker provider installs host
# firewall rules for sandbox networks with it), imported with `docker import`.
#
#   deploy/worker-image.sh [BERTH_BINARY]
#
# The binary: the argument, else $BERTH, else ${CARGO_TARGET_DIR:-target}/debug/berth
# (built with cargo if missing). The image: berth:local, or $BERTH_IMAGE.
# Idempotent: the image is labelled with the sha256 of the binary and of what else
# goes in (this script, iptables), and rebuilt only when one of them changed.
# Parallel callers serialise on a lock file. Prints the image reference on success.
#
# iptables is copied from this host because it must drive the same backend (nft or
# legacy) as the host's own firewall: build the image on (a copy of) the host that
# runs it.
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
image=${BERTH_IMAGE:-berth:local}
lock=${BERTH_IMAGE_LOCK:-${TMPDIR:-/tmp}/berth-worker-image.lock}
fail() { echo "worker-image: $*" >&2; exit 1; }

berth=${1:-${BERTH:-}}
if [[ -z "$berth" ]]; then
    cd "$(dirname "$script")/.."
    berth="${CARGO_TARGET_DIR:-target}/debug/berth"
    if [[ ! -x "$berth" ]]; then
        cargo build --quiet --bin berth
    fi
fi
[[ -x "$berth" ]] || fail "$berth is not an executable"
berth=$(readlink -f "$berth")

iptables=$(command -v iptables || true)
for candidate in /usr/sbin/iptables /sbin/iptables; do
    [[ -n "$iptables" ]] && break
    [[ -x "$candidate" ]] && iptables=$candidate
done
[[ -n "$iptables" ]] || fail "no iptables on this host (the docker provider needs it; apt-get install iptables)"
# Debian: an alternatives symlink to xtables-nft-multi or xtables-legacy-multi
iptables=$(readlink -f "$iptables")

binary_sha=$(sha256sum "$berth" | cut -d' ' -f1)
recipe_sha=$(cat "$script" "$iptables" | sha256sum | cut -d' ' -f1)

label() { docker image inspect --format "{{index .Config.Labels \"$1\"}}" "$image" 2>/dev/null; }
current() { [[ $(label berth.binary) == "$binary_sha" && $(label berth.recipe) == "$recipe_sha" ]]; }

if current; then
    echo "$image"
    exit 0
fi

exec 9>"$lock"
flock 9
# another process may have built it while this one waited for the lock
if current; then
    echo "$image"
    exit 0
fi

# the image this build replaces, removed afterwards unless a container still uses it
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"

# the host's top-level layout (merged /usr: /lib -> usr/lib, ...), so that every path
# ldd prints means the same file inside
for dir in bin sbin lib lib32 lib64 libx32; do
    if [[ -L "/$dir" ]]; then
        target=$(readlink "/$dir")
        target=${target#/}
        mkdir -p "$rootfs/$target"
        ln -s "$target" "$rootfs/$dir"
    elif [[ -d "/$dir" ]]; then
        mkdir -p "$rootfs/$dir"
    fi
done
mkdir -p "$rootfs"/{etc,root,proc,sys,dev,run,usr/bin,usr/sbin,usr/local/bin,var/lib/berth}
install -d -m 1777 "$rootfs/tmp"

# copy PATH [DEST]: a file (symlinks followed) at the same path inside
copy() {
    local dest="$rootfs${2:-$1}"
    mkdir -p "$(dirname "$dest")"
    cp -L --preserve=mode "$1" "$dest"
}
# the shared libraries and the dynamic loader a binary or module links
libraries() {
    local out
    if ! out=$(ldd "$1" 2>&1); then
        # static: nothing to bring
        [[ "$out" == *"not a dynamic executable"* || "$out" == *"statically linked"* ]] && return 0
        fail "ldd $1: $out"
    fi
    if grep -q "not found" <<<"$out"; then
        fail "$1 links libraries this host lacks: $(grep "not found" <<<"$out" | tr -s ' \t' ' ')"
    fi
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}
declare -A copied=()
copy_libraries() {
    local lib
    for lib in $(libraries "$1"); do
        [[ -n "${copied[$lib]:-}" ]] && continue
        copied[$lib]=1
        copy "$lib"
    done
}

copy "$berth" /usr/local/bin/berth
copy_libraries "$berth"

# iptables: the multi-call binary, named iptables by a symlink, and its extensions
copy "$iptables"
copy_libraries "$iptables"
if [[ "$iptables" != /usr/sbin/iptables ]]; then
    ln -sf "$iptables" "$rootfs/usr/sbin/iptables"
fi
xtables_lib=$(ldd "$iptables" | awk '$1 ~ /^libxtables\.so/ { print $3 }')
[[ -n "$xtables_lib" ]] || fail "$iptables does not link libxtables"
extensions="$(dirname "$(readlink -f "$xtables_lib")")/xtables"
[[ -d "$extensions" ]] || fail "no iptables extensions at $extensions"
mkdir -p "$rootfs$extensions"
cp -a "$extensions/." "$rootfs$extensions/"
for module in "$extensions"/*.so; do
    copy_libraries "$module"
done
if [[ -d /etc/xtables ]]; then
    cp -a /etc/xtables "$rootfs/etc/"
fi

# name services: files and DNS (in libc since glibc 2.34; separate modules before)
libc_dir=$(dirname "$(readlink -f "$(ldd "$berth" | awk '$1 == "libc.so.6" { print $3 }')")")
for module in libnss_files.so.2 libnss_dns.so.2 libresolv.so.2; do
    if [[ -e "$libc_dir/$module" ]]; then copy "$libc_dir/$module"; fi
done
for file in /etc/protocols /etc/services; do
    if [[ -f "$file" ]]; then copy "$file"; fi
done
cat >"$rootfs/etc/nsswitch.conf" <<'EOF'
passwd:   files
group:    files
hosts:    files dns
networks: files
protocols: files
services: files
EOF
# the engine replaces /etc/hosts and /etc/resolv.conf of a running container
cat >"$rootfs/etc/hosts" <<'EOF'
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
EOF
: >"$rootfs/etc/resolv.conf"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV BERTH_WORKER_DATA_DIR=/var/lib/berth' \
        --change 'VOLUME /var/lib/berth' \
        --change 'ENTRYPOINT ["/usr/local/bin/berth"]' \
        --change 'CMD ["worker"]' \
        --change "LABEL berth.binary=$binary_sha" \
        --change "LABEL berth.recipe=$recipe_sha" \
        - "$image" >/dev/null
if [[ -n "$previous" ]]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "$image"
