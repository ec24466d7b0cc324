#!/usr/bin/env bash
# Installs moto_server (PyPI `moto[server]`, an S3-compatible server) into a venv under
# ~/.cache/azora/venv-moto for the replication tests and benchmark. Idempotent. Prints the moto_server path.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
VENV="$CACHE/venv-moto"
log() { echo "[install-s3] $*" >&2; }
if [ -x "$VENV/bin/moto_server" ] && [ -f "$VENV/.complete" ]; then echo "$VENV/bin/moto_server"; exit 0; fi
. "$(dirname "$0")/python.sh"
ensure_python_venv
rm -rf "$VENV"
"$PY" -m venv "$VENV"
log "installing moto[server] from PyPI"
if ! "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6' >&2; then
  rm -rf "$VENV"; log "pip install failed"; exit 1
fi
touch "$VENV/.complete"
log "installed: $("$VENV/bin/python" -c 'import moto; print("moto", moto.__version__)')"
echo "$VENV/bin/moto_server"
