#!/usr/bin/env bash
# Debian's buildah, podman and debootstrap, for the image test (tests/deploy/test_image.py): it
# builds the Dockerfile on a base made from Debian's packages and runs the worker in podman, with
# no Docker engine and no registry. Never fails `make test`: without root or sudo it says why and
# exits 0, and the test skips.
set -euo pipefail
# shellcheck source=tools/apt.sh
source "$(dirname "$0")/apt.sh"
mapfile -t missing < <(apt_missing buildah podman debootstrap runc conmon fuse-overlayfs slirp4netns \
    uidmap containernetworking-plugins golang-github-containers-common)
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "the image test (it skips without them)" "${missing[@]}" || true
fi
