#!/usr/bin/env bash
# Builds the azora-operator runtime image (`make image`) with Debian's buildah: no Docker engine, no daemon, no
# registry. The image is FROM scratch (see Containerfile): this script assembles its root filesystem in a temp dir
# from the operator binary, exactly the shared libraries `ldd` names plus the dynamic loader, /etc/passwd and
# /etc/group with the non-root user 65532 (nonroot), the host's CA bundle and a /tmp with mode 1777.
#
#   tests/scripts/image.sh [--binary PATH] [--tag TAG] [--strip]
#   tests/scripts/image.sh --print-tag         # prints the default tag (the chart's default image must match)
#   tests/scripts/image.sh --storage-opts      # prints the buildah global options for the image store, e.g.
#   buildah $(tests/scripts/image.sh --storage-opts) images
#
#   --binary PATH  operator binary (default: $CARGO_TARGET_DIR/release/azora-operator, else .../debug/...)
#   --tag TAG      image name (default: ghcr.io/azora-io/azora-operator:<workspace version>, what the chart runs)
#   --strip        strip debug info from the copy of the binary put in the image
#
# What works in a container without user namespaces or overlayfs (this CI machine; also fine on a normal host):
#   * image store under ~/.cache/azora/containers (AZORA_CONTAINERS), never /var/lib/containers:
#       buildah --root $STORE/storage --runroot $STORE/run --storage-driver vfs ...
#     vfs instead of overlay: overlay mounts fail where the kernel or the outer container forbids them.
#   * BUILDAH_ISOLATION=chroot (buildah build --isolation chroot, buildah run --isolation chroot): no user
#     namespace and no OCI runtime needed. The build itself has no RUN step (scratch has no shell), so only
#     `buildah run` in tests/tests/image.rs actually executes anything.
#   * needs root (or sudo) for vfs + chroot; rootless buildah needs /etc/subuid and user namespaces.
# Prints the image id and size on stdout's last two lines ("id: ...", "size: ...").
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${AZORA_CACHE:-$HOME/.cache/azora}"
STORE="${AZORA_CONTAINERS:-$CACHE/containers}"
TARGET="${CARGO_TARGET_DIR:-$HOME/.cache/azora/target}"
STORAGE_OPTS=(--root "$STORE/storage" --runroot "$STORE/run" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
log() { echo "[image] $*" >&2; }

if [ "${1:-}" = "--storage-opts" ]; then
  echo "${STORAGE_OPTS[*]}"
  exit 0
fi

VERSION=$(awk '/^\[workspace\.package\]/{p=1;next} /^\[/{p=0} p && $1=="version"{gsub(/"/,"",$3); print $3; exit}' "$ROOT_DIR/Cargo.toml")
[ -n "$VERSION" ] || { log "no version in [workspace.package] of $ROOT_DIR/Cargo.toml"; exit 1; }
BINARY=""
TAG="ghcr.io/azora-io/azora-operator:$VERSION"
STRIP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="$2"; shift 2 ;;
    --tag) TAG="$2"; shift 2 ;;
    --strip) STRIP=1; shift ;;
    --print-tag) echo "$TAG"; exit 0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done
if [ -z "$BINARY" ]; then
  for p in "$TARGET/release/azora-operator" "$TARGET/debug/azora-operator"; do
    [ -x "$p" ] && { BINARY="$p"; break; }
  done
fi
[ -n "$BINARY" ] && [ -x "$BINARY" ] || { log "operator binary missing (${BINARY:-$TARGET/{release,debug}/azora-operator}): cargo build -p azora-operator"; exit 1; }
command -v buildah >/dev/null || { log "buildah missing: run tests/scripts/install-buildah.sh (make test-env)"; exit 1; }
[ -f /etc/ssl/certs/ca-certificates.crt ] || { log "/etc/ssl/certs/ca-certificates.crt missing: apt-get install ca-certificates"; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RFS="$WORK/rootfs"
mkdir -p "$RFS/usr/local/bin" "$RFS/etc/ssl/certs" "$RFS/tmp"
chmod 1777 "$RFS/tmp"

install -m 0755 "$BINARY" "$RFS/usr/local/bin/azora-operator"
if [ "$STRIP" = 1 ]; then strip --strip-debug "$RFS/usr/local/bin/azora-operator"; fi

# Exactly the libraries the dynamic linker resolves for this binary (and the loader itself), at the same paths.
if ldd "$BINARY" >"$WORK/ldd" 2>&1; then
  grep -q 'not found' "$WORK/ldd" && { log "unresolved libraries:"; cat "$WORK/ldd" >&2; exit 1; }
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' "$WORK/ldd" | sort -u >"$WORK/libs"
  while read -r lib; do
    mkdir -p "$RFS$(dirname "$lib")"
    cp -L "$lib" "$RFS$lib"   # -L: the real file, not the host's symlink chain
  done <"$WORK/libs"
elif grep -Eq 'not a dynamic executable|statically linked' "$WORK/ldd"; then
  : >"$WORK/libs"           # a static (musl) binary needs no libraries
else
  log "ldd $BINARY failed:"; cat "$WORK/ldd" >&2; exit 1
fi

cat >"$RFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$RFS/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
# glibc >= 2.34 has files and dns built in: no libnss_* needed for name resolution. An older build host would
# give an image that cannot resolve names, so it is refused.
GLIBC=$(ldd --version 2>/dev/null | head -1 | grep -oE '[0-9]+\.[0-9]+$' || true)
if [ -n "$GLIBC" ] && [ -s "$WORK/libs" ]; then
  major=${GLIBC%%.*}; minor=${GLIBC##*.}
  if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 34 ]; }; then
    log "glibc $GLIBC on this host: name resolution needs libnss_* below 2.34; build on Debian 12 or newer"; exit 1
  fi
fi
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$RFS/etc/nsswitch.conf"
cp -L /etc/ssl/certs/ca-certificates.crt "$RFS/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$RFS/etc/passwd" "$RFS/etc/group" "$RFS/etc/nsswitch.conf" "$RFS/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$RFS/home/nonroot" && chown 65532:65532 "$RFS/home/nonroot" 2>/dev/null || true

cp "$ROOT_DIR/Containerfile" "$WORK/Containerfile"
REVISION=$(git -C "$ROOT_DIR" rev-parse HEAD 2>/dev/null || echo unknown)
mkdir -p "$STORE"
log "binary $BINARY ($(du -h "$RFS/usr/local/bin/azora-operator" | cut -f1)), libraries: $(tr '\n' ' ' <"$WORK/libs")"
log "building $TAG (store $STORE, vfs, chroot isolation)"
buildah "${STORAGE_OPTS[@]}" build --isolation chroot --quiet \
  --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
  -f "$WORK/Containerfile" -t "$TAG" "$WORK" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
# The image a previous build gave this tag is now dangling: vfs keeps a full copy per image, so drop it.
buildah "${STORAGE_OPTS[@]}" rmi --prune >/dev/null 2>&1 || true
ID=$(buildah "${STORAGE_OPTS[@]}" inspect --type image --format '{{.FromImageID}}' "$TAG")
SIZE=$(buildah "${STORAGE_OPTS[@]}" images --noheading --format '{{.Size}}' "$TAG" | head -1)
log "tagged $TAG"
echo "id: $ID"
echo "size: $SIZE"
