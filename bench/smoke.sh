#!/usr/bin/env bash
# Every benchmark as a CI smoke: each runs once with tiny parameters on the debug build (seconds,
# not minutes), under a time limit, and must exit 0 and print its figures (its table or key lines;
# the figures themselves are not judged: tiny runs on debug builds mean nothing). A benchmark that
# skips (election.sh's exit 77 when not root) fails. Real runs and their commands: docs/BENCHMARKS.md
# ("Every benchmark has a CI smoke").
#
# Prints one line per benchmark with its wall time; on a failure, the end of that benchmark's output.
# Exits 1 naming every smoke that failed. Needs root (network namespaces and tc for shaped and
# election; apt-get for what the scripts install on a fresh machine).
#
# Usage: bench/smoke.sh [NAME...]   NAME: capacity transfer shaped election soak netsim stress_get
#        (default: all). Builds the debug binaries first (cargo build --workspace --bins --examples:
#        nothing to do after .ci/test); SMOKE_BUILD=0 skips that. Honours CARGO_TARGET_DIR.
# The bench/nat.sh matrix smoke is run by .ci/run on its own (it has its own test bed).
set -euo pipefail
cd "$(dirname "$0")/.."

all=(capacity transfer shaped election soak netsim stress_get)
for name in "$@"; do
  [[ " ${all[*]} " == *" $name "* ]] || { echo "smoke.sh: no smoke named $name (${all[*]})" >&2; exit 2; }
done
selected=("$@")
wanted() { [ ${#selected[@]} -eq 0 ] || [[ " ${selected[*]} " == *" $1 "* ]]; }

if [ "${SMOKE_BUILD:-1}" != 0 ]; then
  echo "smoke.sh: building the debug binaries and examples"
  cargo build --workspace --bins --examples --quiet
fi
target=${CARGO_TARGET_DIR:-target}/debug
logs=$(mktemp -d /tmp/canopy-smoke.XXXXXX)
failed=()
trap '[ ${#failed[@]} -gt 0 ] || rm -rf "$logs"' EXIT

# smoke NAME LIMIT_SECONDS PATTERN... -- COMMAND...
# Runs COMMAND (stdin closed, output to a log) under `timeout`; it passes if it exits 0 and its
# output matches every PATTERN (grep -E, one line each).
smoke() {
  local name=$1 limit=$2
  shift 2
  local patterns=()
  while [ "$1" != -- ]; do patterns+=("$1"); shift; done
  shift
  wanted "$name" || return 0
  local log="$logs/$name.log" code=0 start secs why="" pattern
  start=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$log" 2>&1 < /dev/null || code=$?
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  case $code in
    0) for pattern in "${patterns[@]}"; do
         grep -Eq -- "$pattern" "$log" || { why="did not print its figures (no line matching /$pattern/)"; break; }
       done ;;
    77) why="skipped (exit 77), which a smoke must not: run it as root" ;;
    124 | 137) why="timed out after $limit s" ;;
    *) why="exit $code" ;;
  esac
  if [ -z "$why" ]; then
    printf 'smoke %-10s ok     %6s s   %s\n' "$name" "$secs" "$*"
  else
    printf 'smoke %-10s FAILED %6s s   %s\n' "$name" "$secs" "$*"
    echo "--- $name: $why; its last 40 lines (whole log: $log):"
    tail -n 40 "$log"
    echo "---"
    failed+=("$name ($why)")
  fi
}

started=$(date +%s)
canopy="$target/canopy"

# Part 1 (index alone) and part 2 (a supernode process, leaves over QUIC, churn): 40 leaves x 20
# files, 2 s of churn.
smoke capacity 120 '^publish: tantivy [0-9]+ files/s' '^under churn \(.*queries over QUIC, p50 ' -- \
  "$target/examples/supernode_capacity" 40 20 2

# One 8 MiB file, one round of each tool (canopy, bare quinn, nginx).
smoke transfer 180 '^\| canopy \| [0-9.]+ \|' '^\| bare \| [0-9.]+ \|' '^\| nginx \| [0-9.]+ \|' -- \
  env CANOPY="$canopy" bash bench/transfer.sh 8 1

# Scenario (a) only, a 2 MiB file, one round of each tool (namespaces cshp<pid>-*).
smoke shaped 180 '^\*\*\(a\) ' '^\| aria2c \| [0-9.]+ \|' '^\| canopy \| [0-9.]+ \|' -- \
  env CANOPY="$canopy" ONLY=even bash bench/shaped.sh 2 1

# A supernode and two probing nodes on 50 and 1 Mbit/s links (namespaces cel<pid>-*).
smoke election 90 '^--- fast' '^--- slow' '^upload +[0-9.]+ Mbit/s' '^would be a (leaf|supernode) because' -- \
  bash bench/election.sh "$canopy"

# 2 supernodes, 4 leaves, 30 s of churn and downloads.
smoke soak 120 '^downloads: \{' '^panics: ' '^peak RSS: supernode ' -- \
  python3 bench/soak.py --supernodes 2 --leaves 4 --minutes 0.5 --file-size 262144 --binary "$canopy"

# Every run of netsim/reproduce.sh at 1,000 nodes and at most 100 queries, and its charts.
smoke netsim 180 '^clusters: [0-9.]+ s wall' '^canopy-nat-100000-load: [0-9.]+ s wall' -- \
  bash netsim/reproduce.sh --smoke "$logs/netsim-out"

# 3 downloads of 16 MiB from 3 sources that join at random moments.
smoke stress_get 240 '^\| runs \| finished' '^\| 3 \| [0-9]+ \| [0-9]+ \| [0-9]+ \| [0-9]+ \|' -- \
  env CANOPY="$canopy" bash bench/stress_get.sh 3 16 3 60

echo "smoke.sh: $(($(date +%s) - started)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "smoke.sh: FAILED: ${failed[*]}; logs in $logs" >&2
  exit 1
fi
