#!/usr/bin/env bash
# GNOME's gvfs (gio mount dav://, headless in a private D-Bus session):
# make folders, copy files in, list them, read them back identical, rename
# and delete, against `tessera up`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need gio libglib2.0-bin
need dbus-run-session dbus
[ -x /usr/libexec/gvfsd-dav ] || { echo "FAIL: gvfs's WebDAV backend is missing (apt-get install -y gvfs-backends)"; exit 1; }

start
make_tree "$work/tree" 40
dav="dav://${addr}"
cat >"$work/session.sh" <<SCRIPT
set -euo pipefail
gio mount "$dav/" </dev/null
cd "$work/tree"
gio mkdir "$dav/gv"
# Parents before children (sorted), as a file manager makes them.
find . -mindepth 1 -type d | sort | while IFS= read -r d; do
  gio mkdir "$dav/gv/\${d#./}"
done
find . -type f | while IFS= read -r f; do
  gio copy "\$f" "$dav/gv/\${f#./}"
done
find . -type f | while IFS= read -r f; do
  gio cat "$dav/gv/\${f#./}" | cmp - "\$f"
done
gio list "$dav/gv/d1/e1/" | grep -q "file 1.bin"
gio move "$dav/gv/d1/e1/file 1.bin" "$dav/gv/d1/e1/renamed.bin"
gio cat "$dav/gv/d1/e1/renamed.bin" | cmp - "d1/e1/file 1.bin"
gio remove "$dav/gv/d1/e1/renamed.bin"
if gio info "$dav/gv/d1/e1/renamed.bin" >/dev/null 2>&1; then echo "removed file still there" >&2; exit 1; fi
gio mount -u "$dav/"
SCRIPT
timeout 600 dbus-run-session -- bash "$work/session.sh" 2>"$work/gio.err" || {
  grep -v "VolumeMonitor\|bus can't be made" "$work/gio.err" | tail -20; echo "FAIL: gvfs session"; exit 1; }
count=$(find "$work/tree" -type f | wc -l)
# What gvfs wrote is what the server has.
curl -sSf "$url/gv/d2/e2/file%202.bin" | cmp - "$work/tree/d2/e2/file 2.bin"
stop
echo "gvfs: $count files copied in through gio, read back identical, renamed and removed"
