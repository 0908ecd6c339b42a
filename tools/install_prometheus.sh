#!/usr/bin/env bash
# Debian's prometheus package, for the alert rules' tests: /usr/bin/promtool checks and unit-tests
# k8s/components/alerts/ (tests/deploy/test_alerts.py), /usr/bin/prometheus evaluates them against
# live workers (tests/integration/test_alerts_live.py). Only the binaries are wanted: the package's
# own service (a system Prometheus on :9090) is kept from starting during the install and disabled.
# Never fails `make test`: without root or sudo it says why and exits 0, and the tests skip.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
# shellcheck source=tools/apt.sh
source "$(dirname "$0")/apt.sh"
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
# invoke-rc.d asks /usr/sbin/policy-rc.d whether a package may start its service; 101 = no. An
# existing policy (container images ship one that denies everything) is left as it is.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]] && { [[ -z $SUDO ]] || command -v sudo >/dev/null; }; then
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
apt_install "the alert rules' tests (they skip without it)" prometheus || exit 0
# The package enables its unit for the next boot: disable it (and stop it, had a permissive policy
# let it start). Offline `systemctl disable` works without systemd running (a container).
if [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now --quiet prometheus.service || true
else
    $SUDO systemctl disable --quiet prometheus.service 2>/dev/null || true
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
fi
