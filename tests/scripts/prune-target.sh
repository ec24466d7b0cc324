#!/usr/bin/env bash
# Keep the shared cargo target directory bounded. Every clone path (a CI checkout, /tmp copies, the work tree)
# builds its own copies of the workspace crates, and incremental sessions pile up; nothing removes them, and a
# full disk fails the build. Workspace artifacts and incremental sessions untouched for a day go (cargo rebuilds
# whatever it still needs); if the directory is still over the limit, its debug profile goes whole.
set -euo pipefail
dir="${CARGO_TARGET_DIR:-$HOME/.cache/azora/target}"
limit_gib="${AZORA_TARGET_LIMIT_GIB:-20}"
[ -d "$dir" ] || exit 0
for profile in debug release; do
  [ -d "$dir/$profile" ] || continue
  find "$dir/$profile/deps" -maxdepth 1 -name '*azora*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
  find "$dir/$profile/incremental" -mindepth 1 -maxdepth 1 -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
done
used_kib=$(du -sk "$dir" | cut -f1)
if [ "$used_kib" -gt $((limit_gib * 1024 * 1024)) ]; then
  echo "prune-target: $dir is $((used_kib / 1024 / 1024)) GiB (limit ${limit_gib} GiB); removing its debug profile"
  rm -rf "$dir/debug"
fi
