#!/usr/bin/env bash
# Installs the system packages agent-service needs, if they are missing (Debian/Ubuntu).
#   libcurl4-openssl-dev  Claude client (libcurl, HTTP/2)
#   libpq-dev             Postgres client library
#   postgresql            server binaries for the embedded local database and the test clusters
#   libmimalloc-dev       the service's memory allocator (README, "Memory allocator")
# Safe to run repeatedly: it only calls apt-get when something is missing.
set -euo pipefail

missing=()
pkg-config --exists libcurl 2>/dev/null || missing+=(libcurl4-openssl-dev)
pkg-config --exists libpq 2>/dev/null || missing+=(libpq-dev)
# No pkg-config file: look for the library the linker needs.
if ! compgen -G '/usr/lib/*/libmimalloc.so' >/dev/null && ! compgen -G '/usr/lib/libmimalloc.so' >/dev/null; then
    missing+=(libmimalloc-dev)
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)

if [ ${#missing[@]} -gt 0 ]; then
    echo "ensure-deps: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "ensure-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "ensure-deps: the Swift toolchain (6.2 or newer) is not on PATH; see https://www.swift.org/install/linux/" >&2
    exit 1
fi
