#!/usr/bin/env bash
# The real MCP servers the Tools tests talk to, in a virtualenv under .build/mcp-venv (pinned versions from PyPI):
#   mcp              the official Python SDK (its MCPServer, formerly FastMCP, runs Tests/ToolsTests/Fixtures/*.py)
#   mcp-server-time  the reference time server
# Safe to run repeatedly: it only calls pip when the pins are not installed yet.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/mcp-venv
pins=("mcp==2.3.0" "mcp-server-time==2026.10.19")
stamp="$venv/.pins"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${pins[*]}" ]; then exit 0; fi
echo "ensure-mcp-venv: installing ${pins[*]} into $venv" >&2
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
fi
mkdir -p .build
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}"
printf '%s' "${pins[*]}" > "$stamp"
