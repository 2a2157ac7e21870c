#!/usr/bin/env bash
# A davfs2 mount (mount -t davfs, locks on) of `tessera up`: copy a tree in,
# unmount (davfs2 uploads its cache then), mount again with an empty cache
# and read every file back identical. Needs root and /dev/fuse.
#
# Reading a directory through davfs2 1.6.1 fails with EINVAL on this
# machine's kernel (6.18) whatever the server (Apache mod_dav too), so files
# are checked by path (lookup, open, read), not by listing the mount.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need mount.davfs davfs2
need curl curl
[ "$(id -u)" = 0 ] || { echo "FAIL: davfs2 mounts need root"; exit 1; }
[ -e /dev/fuse ] || { echo "FAIL: /dev/fuse is missing (modprobe fuse)"; exit 1; }

start
mnt="$work/mnt"
mkdir -p "$mnt"
# davfs2 drops to its own user: its cache must be root:davfs2 775 and every
# parent traversable.
chmod 755 "$work"
fresh_cache() {
  rm -rf "$work/cache" && mkdir -p "$work/cache"
  chown root:davfs2 "$work/cache" && chmod 775 "$work/cache"
}
fresh_cache
: >"$work/secrets" && chmod 600 "$work/secrets"
conf="$work/davfs2.conf"
cat >"$conf" <<CONF
ask_auth 0
cache_dir $work/cache
secrets $work/secrets
use_locks 1
delay_upload 0
CONF

davmount() {
  timeout 60 mount -t davfs -o "conf=$conf,uid=0,gid=0" "$url/" "$mnt" </dev/null
  on_exit+=("mountpoint -q '$mnt' && umount -l '$mnt'")
}

# Every file of the tree, read through the mount, equals the original.
check_tree() {
  local f n=0
  while IFS= read -r -d '' f; do
    cmp "$work/tree/$f" "$mnt/dv/$f" || { echo "FAIL: $f differs"; exit 1; }
    n=$((n + 1))
  done < <(cd "$work/tree" && find . -type f -print0)
  echo "$n"
}

make_tree "$work/tree" 120
davmount
mkdir "$mnt/dv"
cp -a "$work/tree/." "$mnt/dv/"
# (Reading back at once is no test: davfs2 answers a file whose upload it
# has queued as empty for a few seconds, against Apache too.)
timeout 600 umount "$mnt"

# The server has every file (a listing over plain WebDAV) ...
listed=$(curl -sSf -X PROPFIND -H "Depth: 1" "$url/dv/d1/e1/" | grep -o "<D:href>" | wc -l)
want=$(($(find "$work/tree/d1/e1" -maxdepth 1 | wc -l)))
[ "$listed" = "$want" ] || { echo "FAIL: /dv/d1/e1/ lists $listed entries, want $want"; exit 1; }
# ... and a fresh mount with an empty cache reads them all back.
fresh_cache
davmount
count=$(check_tree)
# An edit in place through the mount reaches the server.
echo "edited" >"$mnt/dv/d1/e1/file 1.bin"
timeout 600 umount "$mnt"
curl -sSf "$url/dv/d1/e1/file%201.bin" | grep -q edited || { echo "FAIL: the edit did not reach Tessera"; exit 1; }
stop
echo "davfs2: $count files copied in, remounted and read back identical; an edit reached the server"
