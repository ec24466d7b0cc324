#!/usr/bin/env bash
# Installs the GeoIP test data tools into a venv under ~/.cache/azora/venv-geoip: PyPI's `mmdb-writer` (the
# tests write small .mmdb databases of their own) and `maxminddb-geolite2` (a real 2018 GeoLite2 City
# database) plus `maxminddb` (an independent reader to compare against). Idempotent. Prints the venv's python.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
VENV="$CACHE/venv-geoip"
log() { echo "[install-geoip] $*" >&2; }
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ]; then echo "$VENV/bin/python"; exit 0; fi
. "$(dirname "$0")/python.sh"
ensure_python_venv
rm -rf "$VENV"
"$PY" -m venv "$VENV"
log "installing mmdb-writer, maxminddb and maxminddb-geolite2 from PyPI"
if ! "$VENV/bin/pip" install -q --disable-pip-version-check 'mmdb-writer>=0.2' 'maxminddb>=2' 'maxminddb-geolite2==2018.703' >&2; then
  rm -rf "$VENV"; log "pip install failed"; exit 1
fi
touch "$VENV/.complete"
log "installed: $("$VENV/bin/python" -c 'import geolite2, os; print(os.path.dirname(geolite2.__file__))')"
echo "$VENV/bin/python"
