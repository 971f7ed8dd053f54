#!/usr/bin/env bash
# Browser tests of the reference page (Web/): headless Chromium via selenium against the built debug binary.
# Installs what is missing (Debian's chromium and chromium-driver, a virtualenv with selenium under .build/), quietly.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=.build/debug/agent-service
[[ -x $binary ]] || { echo "browser-tests: $binary is missing; run swift build first" >&2; exit 1; }

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
        as_root apt-get update -qq >/dev/null
        as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
}

[[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || apt_install chromium chromium-driver

venv=.build/browser-venv
if [[ ! -x $venv/bin/python3 ]] || ! "$venv/bin/python3" -c 'import selenium' 2>/dev/null; then
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check selenium==4.49.0
fi

# The test stops the service with SIGTERM itself; KILL bounds a hung browser or service.
exec timeout -s KILL 600 "$venv/bin/python3" Tests/Browser/test_page.py "$binary"
