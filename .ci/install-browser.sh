#!/usr/bin/env bash
# Install a headless Chromium and its WebDriver for the browser tests
# (tests/test_browser.py, marker `browser`). Idempotent and quiet: does nothing
# when both are already present. Debian/Ubuntu only (apt-get); needs root or sudo.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

browser_ok() {
    { have chromium || have chromium-browser; } && { have chromedriver || [ -x /usr/bin/chromedriver ]; }
}

if browser_ok; then
    exit 0
fi

if ! have apt-get; then
    echo "install-browser: apt-get not found; install Chromium and chromedriver by hand" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then SUDO="sudo"; else
        echo "install-browser: need root (or sudo) to run apt-get" >&2
        exit 1
    fi
fi

# Quiet on success; on failure show what apt said.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
run_apt update -qq
run_apt install -y -qq --no-install-recommends chromium chromium-driver

if ! browser_ok; then
    echo "install-browser: chromium/chromedriver still missing after apt-get install" >&2
    exit 1
fi
