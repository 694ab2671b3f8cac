#!/usr/bin/env bash
# Builds the small image the Docker tests and the smoke run use, without a registry:
# a root filesystem made of Debian's static busybox (every applet linked, `sh`
# included) imported with `docker import` and tagged berth-test-busybox:latest (or
# $BERTH_TEST_IMAGE). Idempotent: an existing tag is reused. Parallel callers (test
# processes) serialise on a lock file, so the image is built once.
# Prints the image reference on success.
set -euo pipefail

image=${BERTH_TEST_IMAGE:-berth-test-busybox:latest}
lock=${BERTH_TEST_IMAGE_LOCK:-${TMPDIR:-/tmp}/berth-docker-test-image.lock}

have_image() { docker image inspect "$image" >/dev/null 2>&1; }

if have_image; then
    echo "$image"
    exit 0
fi

exec 9>"$lock"
flock 9
# another process may have built it while this one waited for the lock
if have_image; then
    echo "$image"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# a static busybox: the installed one if it is static, else Debian's busybox-static
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
    if [[ -x "$candidate" ]] && ! ldd "$candidate" >/dev/null 2>&1; then
        busybox=$candidate
        break
    fi
done
if [[ -z "$busybox" ]]; then
    download() { (cd "$work" && apt-get download -qq busybox-static >/dev/null 2>&1); }
    if ! download; then
        # no package lists yet (a fresh machine): fetch them once, as root only
        if [[ $(id -u) == 0 ]]; then
            apt-get update -qq >/dev/null 2>&1 || true
        fi
        download || {
            echo "docker-test-image: cannot download Debian's busybox-static" >&2
            exit 1
        }
    fi
    dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
    busybox="$work/pkg/bin/busybox"
fi

rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,workspace}
install -d -m 1777 "$rootfs/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
    [[ "$applet" == busybox ]] && continue
    ln -sf busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/sh"]' \
        - "$image" >/dev/null
echo "$image"
