#!/usr/bin/env bash
# Debian's chromium, for the dashboard's browser test (Playwright drives it; no browser download).
set -euo pipefail
# shellcheck source=tools/apt.sh
source "$(dirname "$0")/apt.sh"
if command -v chromium >/dev/null; then
    exit 0
fi
apt_install "the dashboard test" chromium
command -v chromium >/dev/null
