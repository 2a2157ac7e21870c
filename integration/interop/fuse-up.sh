#!/usr/bin/env bash
# `tessera up --mount DIR` as the README gives it: a tree copied into the
# mount reads back identical through the mount and over WebDAV (curl), the
# mount is gone after Ctrl-C, and after a restart the tree is still there.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -e /dev/fuse ] || { echo "FAIL: /dev/fuse is missing (modprobe fuse)"; exit 1; }
need curl curl

mnt="$work/mnt"
mkdir -p "$mnt"
on_exit+=("umount -l '$mnt' 2>/dev/null")
make_tree "$work/src" 60
start --mount "$mnt"
grep -q "FUSE mount on" "$work/up.out" || { cat "$work/up.err"; echo "no mount"; exit 1; }
cp -a "$work/src/." "$mnt/tree/"
diff -r "$work/src" "$mnt/tree"
# The same bytes over WebDAV.
f=$(cd "$work/src" && find . -type f -name '*.bin' | head -1)
enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1][2:]))' "$f")
curl -sSf "http://$addr/tree/$enc" -o "$work/over-webdav"
cmp "$work/src/$f" "$work/over-webdav"
stop
if grep -q " $mnt " /proc/mounts; then echo "still mounted after Ctrl-C"; exit 1; fi
start --mount "$mnt"
diff -r "$work/src" "$mnt/tree"
stop
echo "fuse-up: 60 files identical through the mount, over WebDAV and after a restart"
