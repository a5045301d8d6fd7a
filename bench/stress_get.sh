#!/usr/bin/env bash
# Hunts download hangs (issue 25: a `canopy get` that waited forever at
# 16,383 of 16,384 blocks). Many runs of one `canopy get` from several
# sources that start sharing at random moments during the download.
#
# Each run: a fresh random file; SOURCES `canopy run --share` nodes, each on
# its own copy (cp, not a link) and a fixed loopback port, started after
# random delays over about as long as the download takes, most of them
# *after* the get has started (a node still hashing its copy answers "not
# found"; one not yet listening is reached when its handshake retries get
# through). `get` knows every source
# from the start and must end within TIMEOUT_S: finished with the right
# bytes, or failed with an exit code and a message. A run that reaches the
# timeout is a HANG: its part state file, get's output and a thread dump
# (gdb) are kept under the printed folder, then it is killed.
#
# Prints one line per run and a summary; exits 1 on any hang or wrong
# output. Zero hangs is the only passing result.
#
# Usage: bench/stress_get.sh [RUNS=20] [SIZE_MIB=256] [SOURCES=4] [TIMEOUT_S=120]
#        CANOPY=target/debug/canopy bench/stress_get.sh 3 16 3 60   (CI's smoke)
set -euo pipefail
runs=${1:-20}
size_mib=${2:-256}
sources=${3:-4}
timeout_s=${4:-120}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/canopy-stress.XXXXXX)
keep="$work/kept"
mkdir -p "$keep"
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() {
  stop_all
  # The evidence of a hang stays; everything else goes.
  if [ -z "$(ls -A "$keep")" ]; then rm -rf "$work"; else find "$work" -mindepth 1 -maxdepth 1 ! -name kept -exec rm -rf {} +; fi
}
trap cleanup EXIT

command -v b3sum >/dev/null || { apt-get update -qq && apt-get install -y -qq b3sum >/dev/null; }
if [ "$(id -u)" = 0 ]; then
  sysctl -qw net.core.rmem_max=8388608 net.core.wmem_max=8388608 || true
fi
# CANOPY=path runs another build (CI's smoke uses the debug one it has).
if [ -z "${CANOPY:-}" ]; then
  (cd "$root" && cargo build --release --quiet --bin canopy)
fi
canopy=${CANOPY:-$root/target/release/canopy}

finished=0 failed=0 hangs=0 wrong=0
# Loopback moves about 500 MiB/s; hashing a copy takes about as long.
spread=$(echo "1 + $size_mib / 300" | bc -l)
for run in $(seq "$runs"); do
  dir="$work/run$run"
  mkdir -p "$dir/out"
  head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$dir/file.bin"
  hash=$(b3sum --no-names "$dir/file.bin")
  base=$((20000 + RANDOM % 30000))
  addrs=()
  for i in $(seq "$sources"); do
    mkdir -p "$dir/share$i"
    id=$("$canopy" id --data-dir "$dir/node$i")
    addrs+=(--source "$id@127.0.0.1:$((base + i))")
    # Source 1 starts first; the others at random moments over about as
    # long as the download takes, while the get (started at 0.3 s) runs.
    delay=$([ "$i" = 1 ] && echo 0 || echo "$spread * $RANDOM / 32768" | bc -l)
    (
      sleep "$delay"
      cp "$dir/file.bin" "$dir/share$i/file.bin"
      exec "$canopy" run --share "$dir/share$i" --listen "127.0.0.1:$((base + i))" --role leaf \
        --data-dir "$dir/node$i" > "$dir/node$i.out" 2> "$dir/node$i.err"
    ) &
    pids+=($!)
  done
  sleep 0.3
  started=$(date +%s.%N)
  "$canopy" get "$hash" "${addrs[@]}" -o "$dir/out/file.bin" --json --data-dir "$dir/client" \
    > "$dir/get.jsonl" 2> "$dir/get.err" &
  get=$!
  code=""
  for _ in $(seq "$((timeout_s * 10))"); do
    if ! kill -0 "$get" 2>/dev/null; then
      wait "$get" && code=0 || code=$?
      break
    fi
    sleep 0.1
  done
  seconds=$(echo "$(date +%s.%N) - $started" | bc -l)
  if [ -z "$code" ]; then
    hangs=$((hangs + 1))
    evidence="$keep/run$run"
    mkdir -p "$evidence"
    cp "$dir"/out/*.state "$dir/get.jsonl" "$dir/get.err" "$dir"/node*.err "$evidence/" 2>/dev/null || true
    if command -v gdb >/dev/null; then
      gdb -p "$get" -batch -ex "thread apply all bt" > "$evidence/threads.txt" 2>&1 || true
    else
      cat /proc/"$get"/task/*/stack > "$evidence/threads.txt" 2>/dev/null || true
    fi
    kill -9 "$get" 2>/dev/null || true
    printf "run %3d: HANG after %.0f s (evidence kept in %s)\n" "$run" "$seconds" "$evidence"
  elif [ "$code" = 0 ]; then
    if cmp -s "$dir/file.bin" "$dir/out/file.bin"; then
      finished=$((finished + 1))
      helped=$(tail -1 "$dir/get.jsonl" | python3 -c 'import json, sys
print(sum(1 for s in json.load(sys.stdin).get("sources", []) if s["bytes"] > 0))')
      printf "run %3d: finished in %.1f s from %s sources\n" "$run" "$seconds" "$helped"
    else
      wrong=$((wrong + 1))
      printf "run %3d: WRONG OUTPUT\n" "$run"
    fi
  else
    failed=$((failed + 1))
    message=$(tail -1 "$dir/get.jsonl" | sed -n 's/.*"message":"\([^"]*\)".*/\1/p')
    printf "run %3d: failed in %.1f s, exit %s: %s\n" "$run" "$seconds" "$code" "$message"
  fi
  stop_all
  rm -rf "$dir"
done

echo
echo "| runs | finished | failed with a message | hangs | wrong output |"
echo "|---|---|---|---|---|"
echo "| $runs | $finished | $failed | $hangs | $wrong |"
echo "($size_mib MiB, $sources sources, timeout ${timeout_s} s per run)"
[ "$hangs" = 0 ] && [ "$wrong" = 0 ]
