#!/usr/bin/env bash
# Installs a Lua interpreter (Debian's lua5.4) for the Argo CD health-check tests (tests/tests/gitops.rs).
# Idempotent: a fast no-op when lua5.4, lua5.3 or lua is already on PATH.
set -euo pipefail

for lua in lua5.4 lua5.3 lua; do
  if command -v "$lua" >/dev/null 2>&1; then
    exit 0
  fi
done

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
else
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq lua5.4
command -v lua5.4 >/dev/null
