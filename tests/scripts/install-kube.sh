#!/usr/bin/env bash
# Installs a real Kubernetes control plane for tests, the way envtest does, from nothing on a fresh machine:
#   - etcd from Debian's etcd-server package;
#   - kube-apiserver and kube-controller-manager built from Debian bookworm's kubernetes *source* package
#     (1.20.2 with vendored dependencies), cached under ~/.cache/azora/kube-1.20.2.
# Idempotent: a cached build is reused. Prints the bin directory on stdout's last line.
set -euo pipefail
KUBE_SRC_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
BIN="$CACHE/kube-1.20.2/bin"
log() { echo "[install-kube] $*" >&2; }

apt_updated=""
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq >&2 || true; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

apt_install etcd-server
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then
  log "cached: $BIN"; echo "$BIN"; exit 0
fi

apt_install golang-go rsync jq golang-github-modern-go-reflect2-dev dpkg-dev
if [ ! -f /etc/apt/sources.list.d/azora-deb-src.sources ]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
    > /etc/apt/sources.list.d/azora-deb-src.sources
  apt-get update -qq >&2 || true
fi
WORK="$CACHE/kube-src"
mkdir -p "$WORK"
cd "$WORK"
if ! ls kubernetes_*.dsc >/dev/null 2>&1; then
  log "downloading kubernetes source $KUBE_SRC_VERSION"
  apt-get source --download-only "kubernetes=$KUBE_SRC_VERSION" >&2
fi
TREE="$WORK/tree"
if [ ! -f "$TREE/.unpacked" ]; then
  rm -rf "$TREE"
  dpkg-source --no-check -x kubernetes_*.dsc "$TREE" >&2
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18 ("fatal error: fault" in mapiternext).
  R="$TREE/vendor/github.com/modern-go/reflect2"
  find "$R" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$R/"
  cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R/" 2>/dev/null || true
  touch "$TREE/.unpacked"
fi
mkdir -p "$WORK/.go/src/k8s.io"
ln -sfn "$TREE" "$WORK/.go/src/k8s.io/kubernetes"
cd "$WORK/.go/src/k8s.io/kubernetes"
log "building kube-apiserver and kube-controller-manager (about 6 minutes on 2 cores)"
GOPATH="$WORK/.go" CGO_ENABLED=0 \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
mkdir -p "$BIN"
for b in kube-apiserver kube-controller-manager; do
  cp "$(find _output -type f -name "$b" | head -1)" "$BIN/$b"
done
log "built: $BIN"
echo "$BIN"
