#!/usr/bin/env bash
# Installs Prometheus and promtool for the alert-rule tests and the real-Prometheus end-to-end test, from
# Debian's `prometheus` package — downloaded (`apt-get download`) and unpacked (`dpkg -x`) into
# ~/.cache/azora/prometheus-<version>/, never installed system-wide (no service started, no user created),
# then linked into ~/.cache/azora/tools/bin next to kubectl and helm, where the tests look (`tool()`).
# Idempotent and cached: a second run only checks the links. Prints the bin directory.
set -euo pipefail
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
BIN="$CACHE/tools/bin"
log() { echo "[install-prometheus] $*" >&2; }
if [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ] && "$BIN/promtool" --version >/dev/null 2>&1; then
  echo "$BIN"; exit 0
fi
apt-get update -qq >&2 || log "apt-get update failed; trying the cached package lists"
version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
[ -n "$version" ] && [ "$version" != "(none)" ] || { log "no candidate version of Debian's prometheus package"; exit 1; }
DEST="$CACHE/prometheus-${version//[:+~]/_}"
if [ ! -x "$DEST/usr/bin/prometheus" ] || [ ! -x "$DEST/usr/bin/promtool" ]; then
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  chmod 0755 "$WORK" # apt's _apt user writes the download here
  log "downloading prometheus $version from Debian"
  (cd "$WORK" && apt-get download -qq -o APT::Sandbox::User=root "prometheus=$version" >&2)
  deb=$(ls "$WORK"/prometheus_*.deb)
  rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
  dpkg -x "$deb" "$DEST.tmp"
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
fi
mkdir -p "$BIN"
for b in prometheus promtool; do ln -sfn "$DEST/usr/bin/$b" "$BIN/$b"; done
log "installed: $("$BIN/promtool" --version 2>&1 | head -1)"
echo "$BIN"
