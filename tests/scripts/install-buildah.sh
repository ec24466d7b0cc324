#!/usr/bin/env bash
# Installs Debian's buildah (builds the operator image with `make image`; tests/tests/image.rs).
# No Docker engine and no registry here: images are built FROM scratch, see tests/scripts/image.sh.
# Idempotent: a fast no-op when buildah is already on PATH.
set -euo pipefail
command -v buildah >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq buildah >/dev/null
command -v buildah >/dev/null
