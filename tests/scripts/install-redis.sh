#!/usr/bin/env bash
# Installs Redis 7 (Debian's redis-server) for the database replication tests (tests/tests/database.rs): the
# tests run their own redis-server processes on loopback ports; the package's own service is not used.
# Idempotent: a fast no-op when redis-server is there.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
else
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server
command -v redis-server >/dev/null
