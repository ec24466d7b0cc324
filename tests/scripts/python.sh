# Sourced by the install scripts that need Python packages from PyPI: sets PY to a python3 that can make
# venvs (with pip), installing python3 and python3-venv from Debian when missing. Logs through the
# caller's log().
ensure_python_venv() {
  PY=$(command -v python3 || true)
  if [ -z "$PY" ] || ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
    log "installing python3 and python3-venv from Debian"
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >&2
    PY=$(command -v python3)
  fi
}
