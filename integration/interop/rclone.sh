#!/usr/bin/env bash
# rclone (--webdav-vendor other) copies a tree of a few hundred files up to
# `tessera up` and back; the copy must be identical, and a second copy up
# must find nothing to transfer.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need rclone rclone

start
make_tree "$work/tree" 300
export RCLONE_CONFIG="$work/rclone.conf"
cat >"$RCLONE_CONFIG" <<CONF
[t]
type = webdav
url = $url/
vendor = other
CONF
rclone copy --transfers 8 "$work/tree" t:up
rclone copy --transfers 8 t:up "$work/back"
diff -r "$work/tree" "$work/back"
again=$(rclone copy -v "$work/tree" t:up 2>&1 | grep -c "Copied" || true)
[ "$again" = 0 ] || { echo "FAIL: a second copy transferred $again files again"; exit 1; }
count=$(find "$work/back" -type f | wc -l)
stop
echo "rclone: $count files up and back identical; an unchanged tree copies nothing"
