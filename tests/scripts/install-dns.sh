#!/usr/bin/env bash
# Installs the real DNS peers for tests and benchmarks from Debian: Knot DNS (RFC 2136 updates with TSIG),
# dnsperf (load) and dnsutils (dig, for humans). Idempotent.
set -euo pipefail
need=()
for p in knot dnsperf dnsutils; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# The package starts a system knotd on port 53; tests run their own on loopback ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet knot 2>/dev/null; then systemctl stop knot || true; fi
pkill -x knotd 2>/dev/null || true
command -v knotd >/dev/null && command -v dnsperf >/dev/null
