#!/usr/bin/env bash
# Debian's chromium, for the dashboard's browser test (Playwright drives it; no browser download).
set -euo pipefail
if command -v chromium >/dev/null; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    SUDO=""
elif command -v sudo >/dev/null; then
    SUDO="sudo"
else
    echo "chromium is missing and this user cannot install it: run 'apt-get install chromium' as root" >&2
    exit 1
fi
echo "installing Debian's chromium (once) for the dashboard test..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
