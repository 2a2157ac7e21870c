#!/usr/bin/env bash
# `tessera up` in a temp dir, then curl -T / curl round trips, a restart, and
# a clean Ctrl-C. Fails loudly on any difference.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tessera
bin="$PWD/target/release/tessera"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start() {
  "$bin" up --data "$work/data" --webdav 127.0.0.1:0 >"$work/up.out" 2>"$work/up.err" &
  pid=$!
  for _ in $(seq 1 300); do
    addr=$(sed -n 's|.*WebDAV on http://\([^/]*\)/.*|\1|p' "$work/up.out")
    [ -n "$addr" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$work/up.err"; echo "tessera up died"; exit 1; }
    sleep 0.1
  done
  cat "$work/up.err"; echo "tessera up did not become ready"; exit 1
}

stop() {
  kill -INT "$pid"
  wait "$pid"
  grep -q "stopped cleanly" "$work/up.out" || { cat "$work/up.err"; echo "no clean shutdown"; exit 1; }
  pid=""
}

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
