#!/usr/bin/env bash
# Builds the worker image on a machine without a container registry.
#
#   build-local-image.sh BASE_TAG WORKER_TAG
#
# 1. BASE_TAG (skipped when it exists): debootstrap a Debian root filesystem with the packages
#    in packages.txt and `docker import` it. This is the slow part (minutes) and changes rarely.
# 2. WORKER_TAG: the base plus the worker loop and the unprivileged crate user, committed from a
#    throw-away container (no `docker build`, so no builder plugin is needed). The loop runs as
#    root (worker.sh says why and with which capabilities); crate code as the crate user.
# The Rust toolchain is not in the image: the agent bind-mounts the host's read-only.
set -euo pipefail
exec 2>&1 # one stream, in order, for whoever shows the progress
here=$(cd "$(dirname "$0")" && pwd)
base_tag=$1
worker_tag=$2
suite=${CRATER_DEBIAN_SUITE:-bookworm}
mirror=${CRATER_DEBIAN_MIRROR:-http://deb.debian.org/debian}

step() { printf '==> %s\n' "$*"; }

# One build at a time on this machine; whoever waited finds the image built.
exec 9>"${TMPDIR:-/tmp}/crater-at-home-image.lock"
flock 9
if docker image inspect "$worker_tag" >/dev/null 2>&1; then
    step "already built: $worker_tag"
    exit 0
fi

if ! docker image inspect "$base_tag" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            step "installing debootstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        else
            echo "error: debootstrap is needed to build the worker image without a registry;" >&2
            echo "       install it (apt-get install debootstrap) or build docker/Dockerfile." >&2
            exit 1
        fi
    fi
    [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
    packages=$(grep -v '^\s*#' "$here/packages.txt" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
    rootfs=$(mktemp -d /var/tmp/crater-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    step "debootstrap $suite into $rootfs (several minutes)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
        | grep --line-buffered -E '^I: (Retrieving|Installing|Configuring|Base system)' \
        | awk '{ n++; if ($2 != last || n % 25 == 0) { print; fflush() } last = $2 }'
    # Keep the image small: package lists and docs are not needed to build crates.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    step "docker import $base_tag"
    tar -C "$rootfs" -c . | docker import - "$base_tag" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

step "adding the worker loop: $worker_tag"
# `docker commit` cannot run commands, so a one-shot container installs the loop and the user.
cid=$(docker run -d -v "$here/worker.sh:/tmp/worker.sh:ro" "$base_tag" /bin/sh -c '
    set -e
    install -m 0755 /tmp/worker.sh /usr/local/bin/crater-worker
    # The crate user. The loop runs as root and runs every crate command as this user.
    useradd --uid 1000 --user-group --create-home --shell /bin/bash crater
    # Where crates write: root-owned, sticky, world-writable, so the crate user can fill them
    # and empty them but not change or remove the folders themselves.
    mkdir -p /build /cargo /opt/rust /opt/miri-sysroot /run/crater /usr/local/share/crater
    chmod 1777 /build /cargo
    chmod 0700 /run/crater
    # Miri runs each test under nextest with a 60 s limit, as the seed does; the profile lives
    # here, where the crate cannot change it.
    printf "[profile.default]\nslow-timeout = { period = \"60s\", terminate-after = 1 }\n" \
        >/usr/local/share/crater/nextest.toml
')
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
if [ "$(docker wait "$cid")" != 0 ]; then
    docker logs "$cid" >&2
    exit 1
fi
docker commit \
    --change 'ENV PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/cargo HOME=/tmp LANG=C.UTF-8 TERM=xterm-256color' \
    --change 'USER 0:0' \
    --change 'WORKDIR /build' \
    --change 'ENTRYPOINT ["/usr/local/bin/crater-worker"]' \
    --change 'LABEL org.crater-at-home.image=worker' \
    "$cid" "$worker_tag" >/dev/null
step "done: $worker_tag"
