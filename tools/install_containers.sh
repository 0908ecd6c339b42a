#!/usr/bin/env bash
# Debian's buildah, podman and debootstrap, for the image test (tests/deploy/test_image.py): it
# builds the Dockerfile on a base made from Debian's packages and runs the worker in podman, with
# no Docker engine and no registry. Never fails `make test`: without root or sudo it says why and
# exits 0, and the test skips.
set -euo pipefail
PACKAGES=(buildah podman debootstrap runc conmon fuse-overlayfs slirp4netns uidmap
    containernetworking-plugins golang-github-containers-common)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "containers: ${missing[*]} missing and this user cannot install them (not root, no sudo):" \
        "the image test will skip; run 'apt-get install ${missing[*]}' as root" >&2
    exit 0
fi
echo "installing Debian's ${missing[*]} (once) for the image test..."
if ! { $SUDO apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; }; then
    echo "containers: apt-get could not install ${missing[*]}: the image test will skip" >&2
fi
