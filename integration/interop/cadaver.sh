#!/usr/bin/env bash
# cadaver, scripted: lock a file, put it, set a property, read it back,
# unlock, then check from outside that the content and property are there
# and the lock is gone.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need cadaver cadaver
need curl curl

start
echo "written through cadaver" >"$work/note.txt"
curl -sSf -T "$work/note.txt" "$url/note.txt" -o /dev/null
cd "$work"
# cadaver reads its commands from stdin when it is not a terminal.
cadaver "$url/" >"$work/cadaver.out" 2>&1 <<CMDS || true
lock note.txt
put note.txt
propset note.txt colour blue
propget note.txt colour
discover note.txt
unlock note.txt
discover note.txt
quit
CMDS
cat "$work/cadaver.out"
grep -q "Locking .note.txt.: *succeeded" "$work/cadaver.out" || { echo "FAIL: lock"; exit 1; }
grep -q "Uploading note.txt to .*succeeded" "$work/cadaver.out" || { echo "FAIL: put under the lock"; exit 1; }
grep -q "Setting property on .note.txt.: *succeeded" "$work/cadaver.out" || { echo "FAIL: propset"; exit 1; }
grep -q "blue" "$work/cadaver.out" || { echo "FAIL: propget"; exit 1; }
grep -q "Unlocking .note.txt.: *succeeded" "$work/cadaver.out" || { echo "FAIL: unlock"; exit 1; }
curl -sSf "$url/note.txt" | cmp - "$work/note.txt"
props=$(curl -sSf -X PROPFIND -H "Depth: 0" "$url/note.txt")
echo "$props" | grep -q "blue" || { echo "FAIL: the property is not stored: $props"; exit 1; }
echo "$props" | grep -q "activelock" && { echo "FAIL: the lock outlived UNLOCK: $props"; exit 1; }
code=$(curl -sS -T "$work/note.txt" "$url/note.txt" -o /dev/null -w '%{http_code}')
[ "$code" = 204 ] || { echo "FAIL: PUT after unlock answered $code"; exit 1; }
stop
echo "cadaver: lock, put, propset, propget, unlock: all succeeded"
