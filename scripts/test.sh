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
