#!/usr/bin/env bash
# Installs the system packages the multi-instance tests and benchmark need, if they are missing (Debian/Ubuntu):
#   nginx-light  the reverse proxy in front of several `serve` processes
#   pgbouncer    the transaction-mode pooler between them and Postgres
# The tests start their own nginx and PgBouncer (temp folders, random ports); the packages' own system services must
# not run, so they are kept from starting while installing (policy-rc.d) and stopped and disabled after.
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

# The MCP servers of the Tools tests (a Python virtualenv under .build/mcp-venv).
"$(dirname "$0")/ensure-mcp-venv.sh"

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "ensure-test-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "ensure-test-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

# Keep the packages' services from starting during the install (exit 101: "action forbidden by policy").
policy=/usr/sbin/policy-rc.d
placed_policy=false
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    placed_policy=true
fi
cleanup() { if $placed_policy; then $sudo rm -f "$policy"; fi; }
trap cleanup EXIT

$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2> >(grep -v "^debconf: delaying" >&2)

# Whatever started anyway (no policy-rc.d support, a later boot): stopped now, and not started at boot.
for service in nginx pgbouncer; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
    else
        $sudo service "$service" stop >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null 2>&1 && $sudo update-rc.d "$service" disable >/dev/null 2>&1 || true
    fi
done
