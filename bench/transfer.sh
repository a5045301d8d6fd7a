#!/usr/bin/env bash
# Single-source transfer of one file on loopback, three ways, in one run:
#   canopy    `canopy get` from a `canopy run` node (blocks verified, part file, final re-check)
#   bare      one bare QUIC stream with the same quinn/TLS/transport settings (the ceiling)
#   nginx     `curl` from nginx (the reference HTTP stack)
# Prints a Markdown table of medians for docs/BENCHMARKS.md.
#
# Usage: bench/transfer.sh [SIZE_MIB=1024] [RUNS=5]
#        CANOPY=target/debug/canopy bench/transfer.sh 8 1   (CI's smoke, bench/smoke.sh: no release
#        build; CANOPY=path runs that canopy and the bare_quinn in examples/ beside it, or BARE_QUINN=path)
set -euo pipefail
size_mib=${1:-1024}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/canopy-bench.XXXXXX)
chmod 755 "$work"   # nginx workers must be able to read it
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null

# QUIC wants larger UDP buffers than the 208 KiB default; both QUIC runs get the same.
if [ "$(id -u)" = 0 ]; then
  sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608 || true
fi

if [ -z "${CANOPY:-}" ]; then
  (cd "$root" && cargo build --release --quiet --bin canopy --example bare_quinn)
fi
canopy=${CANOPY:-$root/target/release/canopy}
bare=${BARE_QUINN:-$(dirname "$canopy")/examples/bare_quinn}
[ -x "$canopy" ] && [ -x "$bare" ] || { echo "transfer.sh: no $canopy or $bare (build them first)" >&2; exit 1; }

mkdir -p "$work/share" "$work/out"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/share/file.bin"
chmod 644 "$work/share/file.bin"
hash=$("$canopy" id --data-dir "$work/probe" >/dev/null; b3sum --no-names "$work/share/file.bin" 2>/dev/null || true)

# canopy node (hashes the file once at start)
"$canopy" run --share "$work/share" --listen 127.0.0.1:0 --data-dir "$work/node" > "$work/node.out" 2>/dev/null &
pids+=($!)
for _ in $(seq 600); do grep -q '^fetch with' "$work/node.out" 2>/dev/null && break; sleep 0.1; done
canopy_addr=$(sed -n 's/.*peers reach this node as \(.*\))$/\1/p' "$work/node.out")
[ -n "$hash" ] || hash=$(awk '/^fetch with/ {print $4}' "$work/node.out")

# bare quinn server
"$bare" serve "$work/share/file.bin" 127.0.0.1:0 > "$work/bare.out" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/bare.out" ] && break; sleep 0.1; done
bare_addr=$(head -1 "$work/bare.out")

# nginx
port=$((20000 + RANDOM % 20000))
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:$port; root $work/share; }
}
NGINX
nginx -c "$work/nginx.conf"
pids+=($(cat "$work/nginx.pid" 2>/dev/null || echo 0))
trap 'nginx -s quit -c "$work/nginx.conf" 2>/dev/null || true; cleanup' EXIT

seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A times
for run in $(seq "$runs"); do
  rm -f "$work/out/"*
  times[canopy]+="$(seconds "$canopy" get "$hash" --from "$canopy_addr" -o "$work/out/c.bin" --quiet --data-dir "$work/client") "
  cmp -s "$work/share/file.bin" "$work/out/c.bin" || { echo "canopy output differs" >&2; exit 1; }
  times[bare]+="$(seconds "$bare" fetch "$bare_addr" "$work/out/b.bin") "
  cmp -s "$work/share/file.bin" "$work/out/b.bin" || { echo "bare output differs" >&2; exit 1; }
  times[nginx]+="$(seconds curl -s -o "$work/out/n.bin" "http://127.0.0.1:$port/file.bin") "
  cmp -s "$work/share/file.bin" "$work/out/n.bin" || { echo "curl output differs" >&2; exit 1; }
done

mib=$size_mib
med() { echo "${times[$1]}" | tr ' ' '\n' | grep . | median; }
c=$(med canopy); b=$(med bare); n=$(med nginx)
echo
echo "| tool | median seconds | MiB/s | vs bare quinn |"
echo "|---|---|---|---|"
for t in canopy bare nginx; do
  s=$(med $t)
  printf "| %s | %.3f | %.0f | %.0f %% |\n" "$t" "$s" "$(echo "$mib / $s" | bc -l)" "$(echo "100 * $b / $s" | bc -l)"
done
echo
echo "runs: $runs of ${size_mib} MiB; all runs: canopy [${times[canopy]}] bare [${times[bare]}] nginx [${times[nginx]}]"
