#!/usr/bin/env bash
# Run a command with the local broker up: start it unless one answers, stop it after if we did.
set -uo pipefail
cd "$(dirname "$0")/.."
started=0
if ! tools/kafka/kafka.sh status >/dev/null 2>&1; then
  tools/kafka/kafka.sh up || exit 1
  started=1
fi
"$@"
rc=$?
[ "$started" = 1 ] && tools/kafka/kafka.sh down
exit $rc
