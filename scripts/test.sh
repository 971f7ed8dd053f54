#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what is missing, builds, and runs every test.
# The tests start their own throwaway PostgreSQL cluster and Claude stub; nothing needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
scripts/ensure-test-deps.sh
swift build --build-tests
# Test processes trap SIGTERM; KILL guarantees a hung run cannot outlive CI.
if [[ $# -gt 0 ]]; then
    exec timeout -s KILL 1800 swift test --skip-build "$@"
fi
# The whole suite. The multi-instance topology (three services, nginx, PgBouncer, long replies) runs on its own
# afterwards: sharing the two cores with every other suite made both its crash timings and others' pacing checks
# depend on the machine's mood.
timeout -s KILL 1800 swift test --skip-build --skip FleetTests
timeout -s KILL 900 swift test --skip-build --filter FleetTests
# The reference page in headless Chromium.
scripts/browser-tests.sh
