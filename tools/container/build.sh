#!/usr/bin/env bash
# The worker image from the Dockerfile with buildah, where no registry is reachable (as root):
#   tools/container/build.sh [IMAGE [buildah bud options...]]    (default localhost/streamapp:latest)
# BASE_IMAGE: the base of both stages, local (--pull-never); by default tools/container/base.sh's
#   Debian bookworm, made first when missing.
# STREAMAPP_EXTRA_CA=bundle.pem: CAs pip trusts besides the base's, e.g. the host's
#   /etc/ssl/certs/ca-certificates.crt behind a proxy that re-signs HTTPS. A build secret: the
#   file is mounted in the RUN that installs, and is in no layer.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${1:-localhost/streamapp:latest}
[[ $# -gt 0 ]] && shift
BASE_IMAGE=${BASE_IMAGE:-localhost/streamapp-base:bookworm}
if [[ $BASE_IMAGE == localhost/streamapp-base:* ]]; then
    tools/container/base.sh "$BASE_IMAGE"
fi
args=(--isolation chroot --pull-never --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$IMAGE")
if [[ -n ${STREAMAPP_EXTRA_CA:-} ]]; then
    args+=(--secret "id=extra_ca,src=$STREAMAPP_EXTRA_CA")
fi
exec buildah bud "${args[@]}" "$@" .
