#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's own packages, for building the Dockerfile where
# no registry is reachable (python:*-slim cannot be pulled) but apt's mirror is:
#   tools/container/base.sh [IMAGE]        (default localhost/streamapp-base:bookworm)
# debootstrap's minbase plus python3, python3-venv and ca-certificates, committed with buildah.
# Cached: an existing image is kept (`buildah rmi IMAGE` makes it again). Runs as root.
# DEBIAN_MIRROR overrides the mirror, which is otherwise the one apt uses for bookworm here.
set -euo pipefail
IMAGE=${1:-localhost/streamapp-base:bookworm}
SUITE=bookworm
if [[ $(id -u) -ne 0 ]]; then
    echo "base.sh: run as root (debootstrap and buildah mount need it)" >&2
    exit 1
fi
if buildah inspect --type image "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
# apt's own reading of /etc/apt/sources.list(.d), no `apt-get update` needed: the URI of the
# suite itself (not -security).
# shellcheck disable=SC2016  # $(REPO_URI) and $(RELEASE) are apt's fields, not the shell's
MIRROR=${DEBIAN_MIRROR:-$(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' |
    awk -v suite="$SUITE" '$2 == suite && !found++ { print $1 }')}
if [[ -z $MIRROR ]]; then
    echo "base.sh: apt has no source for $SUITE: set DEBIAN_MIRROR=http://deb.debian.org/debian" >&2
    exit 1
fi
container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null' EXIT
root=$(buildah mount "$container")
echo "debootstrap $SUITE from $MIRROR into $IMAGE..."
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
# As the official python images: a UTF-8 locale that needs no locales package.
buildah config --cmd /bin/bash --env LANG=C.UTF-8 "$container"
buildah commit --quiet "$container" "$IMAGE" >/dev/null
echo "made $IMAGE"
