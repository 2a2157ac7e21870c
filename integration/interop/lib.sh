# Shared by the interop scripts: builds the release binary, starts
# `tessera up` (meta, 3 datanodes, a WebDAV gateway) in a temp dir on a free
# port, stops it cleanly, and requires the clients a script needs.
# Source it after `set -euo pipefail`.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -q -p tessera
bin="$PWD/target/release/tessera"
work=$(mktemp -d)
pid=""
on_exit=()
cleanup() {
  local f
  for f in "${on_exit[@]}"; do eval "$f" || true; done
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# need CMD PACKAGE: fail loudly if a client is missing.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "FAIL: $1 is not installed (Debian package $2: apt-get install -y $2)" >&2
  exit 1
}

start() {
  "$bin" up --data "$work/data" --webdav 127.0.0.1:0 "$@" >"$work/up.out" 2>"$work/up.err" &
  pid=$!
  for _ in $(seq 1 300); do
    addr=$(sed -n 's|.*WebDAV on http://\([^/]*\)/.*|\1|p' "$work/up.out")
    if [ -n "$addr" ]; then url="http://$addr"; return 0; fi
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

# make_tree DIR COUNT: a tree of COUNT files in nested directories, of sizes
# from 0 bytes to a few MiB, with awkward names.
make_tree() {
  local dir=$1 count=$2 i sub size
  mkdir -p "$dir"
  for i in $(seq 1 "$count"); do
    sub="$dir/d$((i % 7))/e$((i % 3))"
    [ $((i % 11)) = 0 ] && sub="$dir/with space/ünï"
    mkdir -p "$sub"
    case $((i % 10)) in
      0) size=0 ;;
      1) size=$((3 * 1024 * 1024 + i)) ;;
      2) size=512 ;;
      *) size=$(( (i * 7919) % 70000 )) ;;
    esac
    head -c "$size" /dev/urandom >"$sub/file $i.bin"
  done
}
