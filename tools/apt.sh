# shellcheck shell=bash
# Debian packages the tests need, installed once by the project's own scripts (sourced by
# tools/install_*.sh): as root, or through sudo.

# The packages of "$@" that dpkg does not have installed, one per line.
apt_missing() {
    local package
    for package in "$@"; do
        dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || echo "$package"
    done
}

# apt_install FOR PACKAGE...: install the packages for FOR (what needs them). Returns 1, after
# saying why on stderr, when this user cannot (not root, no sudo) or apt-get fails.
apt_install() {
    local purpose=$1 sudo=""
    shift
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "$*: missing, and this user cannot install them for $purpose (not root, no sudo):" \
                "run 'apt-get install --no-install-recommends $*' as root" >&2
            return 1
        fi
        sudo="sudo"
    fi
    echo "installing Debian's $* (once) for $purpose..."
    if ! { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }; then
        echo "$*: apt-get could not install them for $purpose" >&2
        return 1
    fi
}
