#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing, builds, and runs every test.
# The tests start their own throwaway PostgreSQL cluster and Claude stub; nothing needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/ensure-test-deps.sh
swift build --build-tests
# Test processes trap SIGTERM; KILL guarantees a hung run cannot outlive CI.
timeout -s KILL 1800 swift test --skip-build "$@"
# The reference page in headless Chromium (only for the whole suite, not a filtered run).
if [[ $# -eq 0 ]]; then scripts/browser-tests.sh; fi
