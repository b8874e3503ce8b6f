#!/usr/bin/env bash
# Build the compose stack's base images offline: no registry is reachable, so nothing can be
# pulled. Each base is a minimal Debian root file system made by debootstrap from Debian's
# package mirror (which apt reaches) and imported with `docker import`:
#   scones/base:bookworm  Debian 12, python3.11: endpoint, train and deploy (the CPU torch wheel is cp311)
#   scones/base:trixie    Debian 13, python3.13: LocalStack 4.14 (needs Python 3.13)
# An image that already exists is kept; --force rebuilds it.
#
#   harness/compose/build-base.sh [--force] [bookworm] [trixie]
#
# Needs root, debootstrap and a running dockerd (harness/compose/dockerd.sh start).
set -euo pipefail

MIRROR="${SCONES_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,ca-certificates"
force=0
suites=()
for argument in "$@"; do
    case "$argument" in
        --force) force=1 ;;
        bookworm|trixie) suites+=("$argument") ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "build-base.sh: unknown argument '$argument' (expected --force, bookworm, trixie)" >&2; exit 2 ;;
    esac
done
[ ${#suites[@]} -gt 0 ] || suites=(bookworm trixie)

for tool in debootstrap docker; do
    command -v "$tool" >/dev/null || { echo "build-base.sh: '$tool' is not installed (apt-get install debootstrap docker.io)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-base.sh: debootstrap needs root" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "build-base.sh: no Docker daemon answers; start one with harness/compose/dockerd.sh start" >&2; exit 1; }

for suite in "${suites[@]}"; do
    image="scones/base:$suite"
    if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
        echo "base: $image exists (--force rebuilds it)"
        continue
    fi
    rootfs="$(mktemp -d "${TMPDIR:-/tmp}/scones-rootfs-$suite.XXXXXX")"
    trap 'rm -rf "$rootfs"' EXIT
    echo "base: debootstrap --variant=minbase $suite from $MIRROR (a few minutes)"
    if ! nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$rootfs" "$MIRROR" \
            > "$rootfs.log" 2>&1; then
        echo "build-base.sh: debootstrap of $suite failed; last lines of $rootfs.log:" >&2
        tail -n 20 "$rootfs.log" >&2
        exit 1
    fi
    # Nothing in the image needs the package cache or lists: they only make it bigger.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    echo "base: importing $image"
    tar --numeric-owner -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase --include=$PACKAGES $suite" - "$image" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
    trap - EXIT
    echo "base: $image $(docker image inspect --format '{{.Size}}' "$image" | numfmt --to=iec) ($(docker run --rm --network none "$image" python3 --version))"
done
