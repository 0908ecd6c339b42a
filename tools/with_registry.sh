#!/usr/bin/env bash
# Run a command with the local Schema Registry up (tools/registry/registry.sh): start it unless one
# answers, stop it after (the command interrupted too) only if this script started it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
if ! tools/registry/registry.sh status >/dev/null 2>&1; then
  tools/registry/registry.sh up || exit 1
  trap 'tools/registry/registry.sh down' EXIT
fi
"$@"
