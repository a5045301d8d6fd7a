#!/usr/bin/env bash
# Start-up election on real shaped links: one supernode, one node on a 50 Mbit/s link and one on a
# 1 Mbit/s link, each in its own network namespace; each runs `canopy probe` against the supernode
# and must take the right role from its own measurements: the fast one qualifies, the slow one is a
# leaf "because upload ... < 5.0 Mbit/s".
#
# Usage (root): bench/election.sh [CANOPY_BINARY]   exits 0 when both roles are right, 77 when not
# root (skipped: CI's smoke, bench/smoke.sh, counts that as a failure). The binary defaults to
# $CANOPY, else the debug build. Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range),
# inside namespaces made here (named cel<pid>-…).
set -euo pipefail
canopy=${1:-${CANOPY:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/canopy}}
[ "$(id -u)" = 0 ] || { echo "election.sh: needs root (network namespaces, tc)" >&2; exit 77; }
[ -x "$canopy" ] || { echo "election.sh: no canopy binary at $canopy" >&2; exit 2; }

tag="cel$$"
work=$(mktemp -d /tmp/canopy-election.XXXXXX)
cleanup() {
  for ns in sn fast slow; do
    ip netns pids "$tag-$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$tag-$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

for ns in sn fast slow; do ip netns add "$tag-$ns"; ip -n "$tag-$ns" link set lo up; done
link() { # name subnet rate
  local name=$1 net=$2 rate=$3
  ip link add "$tag-$name" netns "$tag-$name" type veth peer name "$tag-s$name" netns "$tag-sn"
  ip -n "$tag-$name" addr add "198.18.$net.2/24" dev "$tag-$name"
  ip -n "$tag-sn" addr add "198.18.$net.1/24" dev "$tag-s$name"
  ip -n "$tag-$name" link set "$tag-$name" up
  ip -n "$tag-sn" link set "$tag-s$name" up
  # Shape both directions of the node's link.
  ip netns exec "$tag-$name" tc qdisc replace dev "$tag-$name" root tbf rate "$rate" burst 32768 limit 131072
  ip netns exec "$tag-sn" tc qdisc replace dev "$tag-s$name" root tbf rate "$rate" burst 32768 limit 131072
}
link fast 20 50mbit
link slow 21 1mbit

ip netns exec "$tag-sn" "$canopy" run --role supernode --listen 0.0.0.0:4663 --data-dir "$work/sn" \
  > "$work/sn.out" 2> "$work/sn.err" &
for _ in $(seq 100); do grep -q "peers reach this node as" "$work/sn.out" 2>/dev/null && break; sleep 0.1; done
id=$(sed -n 's/^canopy node \(.*\)$/\1/p' "$work/sn.out")
[ -n "$id" ] || { echo "election.sh: the supernode did not start" >&2; cat "$work/sn.err" >&2; exit 1; }

probe() { # name subnet
  ip netns exec "$tag-$1" "$canopy" probe --bootstrap "$id@198.18.$2.1:4663" --data-dir "$work/$1"
}
fast=$(probe fast 20)
slow=$(probe slow 21)
echo "--- fast (50 Mbit/s)"; echo "$fast"
echo "--- slow (1 Mbit/s)"; echo "$slow"

ok=0
echo "$fast" | grep -q "would be a leaf because it qualifies" || { echo "FAIL: the fast node should qualify" >&2; ok=1; }
echo "$slow" | grep -Eq "would be a leaf because upload [0-9.]+ Mbit/s < 5.0 Mbit/s" ||
  { echo "FAIL: the slow node should be a leaf for its upload" >&2; ok=1; }
exit $ok
