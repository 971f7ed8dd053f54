#!/usr/bin/env bash
# Runs the service: installs what is missing, builds (release), migrates and serves on http://127.0.0.1:8000.
# With DATABASE_URL unset it uses an embedded PostgreSQL under .agent-service/; with ANTHROPIC_API_KEY unset it
# answers from the built-in offline Claude stub. Settings come from the environment or a .env file.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build -c release --product agent-service
exec .build/release/agent-service serve "$@"
