#!/usr/bin/env bash
# `tessera up` in a temp dir, then curl -T / curl round trips, a restart, and
# a clean Ctrl-C. Fails loudly on any difference.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

start
url="http://$addr"
head -c 0 /dev/urandom >"$work/f0"
head -c 513 /dev/urandom >"$work/f513"
head -c $((20 * 1024 * 1024 + 7)) /dev/urandom >"$work/fbig"
curl -sSf -X MKCOL "$url/dir" -o /dev/null
for f in f0 f513 fbig; do
  code=$(curl -sS -T "$work/$f" "$url/dir/$f" -o /dev/null -w '%{http_code}')
  [ "$code" = 201 ] || { echo "PUT $f answered $code"; exit 1; }
  curl -sSf "$url/dir/$f" -o "$work/$f.back"
  cmp "$work/$f" "$work/$f.back"
done
stop

start
url="http://$addr"
for f in f0 f513 fbig; do
  curl -sSf "$url/dir/$f" -o "$work/$f.again"
  cmp "$work/$f" "$work/$f.again"
done
code=$(curl -sS "$url/a%00b" -o /dev/null -w '%{http_code}')
[ "$code" = 400 ] || { echo "a NUL in the path answered $code"; exit 1; }
stop
echo "curl-roundtrip: 3 passed, 0 failed"
