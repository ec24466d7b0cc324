#!/usr/bin/env bash
# Installs moto_server (PyPI `moto[server]`, an S3-compatible server) into a venv under
# ~/.cache/azora/venv-moto for the replication tests and benchmark. Idempotent. Prints the moto_server path.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
VENV="$CACHE/venv-moto"
log() { echo "[install-s3] $*" >&2; }
if [ -x "$VENV/bin/moto_server" ] && [ -f "$VENV/.complete" ]; then echo "$VENV/bin/moto_server"; exit 0; fi
PY=$(command -v python3 || true)
if [ -z "$PY" ] || ! "$PY" -m venv --help >/dev/null 2>&1; then
  log "installing python3 and python3-venv from Debian"
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
  PY=$(command -v python3)
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
log "installing moto[server] from PyPI"
if ! "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' >&2; then
  rm -rf "$VENV"; log "pip install failed"; exit 1
fi
touch "$VENV/.complete"
log "installed: $("$VENV/bin/python" -c 'import moto; print("moto", moto.__version__)')"
echo "$VENV/bin/moto_server"
