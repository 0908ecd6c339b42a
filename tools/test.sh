#!/usr/bin/env bash
# `make test`: start the local broker unless one answers, run the whole suite, stop what we started.
set -uo pipefail
cd "$(dirname "$0")/.."
started=0
if ! tools/kafka/kafka.sh status >/dev/null 2>&1; then
  tools/kafka/kafka.sh up || exit 1
  started=1
fi
.venv/bin/python -m pytest "$@"
rc=$?
[ "$started" = 1 ] && tools/kafka/kafka.sh down
exit $rc
