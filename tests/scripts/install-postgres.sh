#!/usr/bin/env bash
# Installs PostgreSQL 15 (Debian's postgresql-15) for the database replication tests (tests/tests/database.rs):
# the tests run their own instances (initdb, pg_basebackup -R) as the `postgres` user on loopback ports; the
# package's own cluster is not used. Also openssl (the TLS tests' CA). Idempotent: a fast no-op when the binaries are there.
set -euo pipefail

BIN=/usr/lib/postgresql/15/bin
if [ -x "$BIN/postgres" ] && [ -x "$BIN/pg_basebackup" ] && id postgres >/dev/null 2>&1 && command -v openssl >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
else
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The package's default cluster is never started by the tests; no init system starts it here either.
# openssl: the TLS tests make a throwaway CA with it (tests/src/tls.rs).
$SUDO apt-get install -y -qq postgresql-15 postgresql-client-15 openssl
[ -x "$BIN/postgres" ] && id postgres >/dev/null && command -v openssl >/dev/null
