#!/usr/bin/env bash
# Multi-source transfer of one file over rate-limited links, canopy against aria2c, in one run.
#
# Test bed (needs root): one client network namespace and 4 source namespaces, each source joined
# to the client by its own veth pair. Source i is 198.18.i.1, the client's end of that link is
# 198.18.i.2 (198.18.0.0/15 is the RFC 2544 benchmarking range). No namespace has a default route,
# so nothing can leave the test bed. Each source's egress toward the client is shaped with
# `tc tbf` (the kernel has no netem, so no delay is added). Every source namespace runs nginx and a
# `canopy run` node serving the same file.
#
#   aria2c  `aria2c -s4 -x1 -k1M` with the 4 nginx URLs: one HTTP connection per source at once
#   canopy  `canopy get HASH --source ... (x4)`: the multi-source scheduler, every block verified
#
# Scenarios (RUNS rounds each, the two tools alternating, the output deleted between runs):
#   even   4 x 20 Mbit/s
#   slow   source 4 at 4 Mbit/s, the others at 20
#   dies   4 x 20 Mbit/s, source 4 is SIGKILLed (its nginx for aria2c, its canopy node for canopy)
#          at 40 % of the time the transfer would take at 80 Mbit/s; restarted before the next run
#   vanish as "dies", but source 4's host vanishes: its link goes down as its server is killed, so
#          nothing more arrives from it, not even a TCP reset (a peer whose machine or network goes
#          away). aria2c gets --timeout=3 --connect-timeout=3 here, canopy's 3 s stall patience
#          (aria2c's default is 60 s). Not in the default set: run it with ONLY="... vanish".
#   single one source (source 1 at 20 Mbit/s), one round: the per-link baseline of each stack
#   stale  as "even", but every canopy run uses a new client identity (--data-dir), so the sources
#          advertise earlier downloaders (now gone) to it through source exchange. In the other
#          scenarios one client identity fetches every time, as one user would (the sources
#          then only know that client, which does not dial itself).
#
# Prints one Markdown table of medians per scenario for docs/BENCHMARKS.md.
#
# Usage: bench/shaped.sh [SIZE_MIB=64] [RUNS=3]   (KEEP=1 keeps the logs in /tmp/canopy-shaped.*;
#        ONLY="even slow" runs just those scenarios, for quick iterations; honours CARGO_TARGET_DIR;
#        CANOPY=path runs that canopy binary instead of building the release one)
#        CANOPY=target/debug/canopy ONLY=even bench/shaped.sh 2 1   (CI's smoke, bench/smoke.sh)
set -euo pipefail

size_mib=${1:-64}
runs=${2:-3}
[[ $size_mib =~ ^[0-9]+$ && $size_mib -ge 1 && $runs =~ ^[0-9]+$ && $runs -ge 1 ]] ||
  { echo "usage: bench/shaped.sh [SIZE_MIB=64] [RUNS=3]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "shaped.sh: needs root (network namespaces, tc)" >&2; exit 1; }

# Shaping, identical for both tools (they share the links). tc's "mbit" is 10^6 bit/s and counts
# whole Ethernet frames. burst 32 KiB is ~13 ms at 20 Mbit/s (well above rate/HZ); limit 128 KiB
# is a ~52 ms queue at 20 Mbit/s (~262 ms at 4 Mbit/s), after which tbf drops.
rate_mbit=20
slow_mbit=4
burst=32768
limit=131072
nsrc=4
victim=4            # the source that is slow in "slow" and dies in "dies"
kill_fraction=0.4   # when it dies, as a fraction of size / (nsrc * rate)
port=4663           # canopy's UDP port in each source namespace
client_timeout=300  # seconds; bound on any single download

root=$(cd "$(dirname "$0")/.." && pwd)
tag="cshp$$"        # namespace names are unique to this run
cns="$tag-c"
sns() { echo "$tag-s$1"; }
size=$((size_mib * 1024 * 1024))

say() { echo "shaped.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

work=$(mktemp -d /tmp/canopy-shaped.XXXXXX)
chmod 755 "$work"   # nginx must be able to read what it serves
mkdir -p "$work/share" "$work/out" "$work/log"

declare -A nginx_pid canopy_pid
created_ns=()
saved_rmem=$(sysctl -n net.core.rmem_max)
saved_wmem=$(sysctl -n net.core.wmem_max)
cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  # Everything still running in our namespaces was started by this script.
  local ns p left
  for ns in "${created_ns[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
  done
  for _ in $(seq 30); do   # up to 3 s to exit cleanly, then SIGKILL
    left=""
    for ns in "${created_ns[@]}"; do left+=$(ip netns pids "$ns" 2>/dev/null); done
    [ -z "$left" ] && break
    sleep 0.1
  done
  for ns in "${created_ns[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  for ns in "${created_ns[@]}"; do ip netns del "$ns" 2>/dev/null; done   # removes the veths too
  sysctl -qw net.core.rmem_max="$saved_rmem" net.core.wmem_max="$saved_wmem" 2>/dev/null
  if [ "$status" = 0 ] && [ -z "${KEEP:-}" ]; then
    rm -rf "$work"
  elif [ "$status" = 0 ]; then
    say "logs kept in $work"
  else
    say "failed (exit $status); logs kept in $work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in nginx:nginx-light aria2c:aria2 b3sum:b3sum jq:jq; do
  command -v "${tool%%:*}" >/dev/null ||
    { say "installing ${tool#*:}"; apt-get update -qq && apt-get install -y -qq "${tool#*:}" >/dev/null; }
done
for tool in ip tc ss awk timeout cmp; do command -v "$tool" >/dev/null || die "$tool is required"; done

# QUIC wants larger UDP buffers than the 208 KiB default (the setting is host-wide; restored on exit).
[ "$saved_rmem" -ge 8388608 ] || sysctl -qw net.core.rmem_max=8388608
[ "$saved_wmem" -ge 8388608 ] || sysctl -qw net.core.wmem_max=8388608

if [ -n "${CANOPY:-}" ]; then
  canopy=$(cd "$(dirname "$CANOPY")" && pwd)/$(basename "$CANOPY")
else
  say "building canopy (release)"
  (cd "$root" && cargo build --release --quiet --bin canopy)
  canopy="${CARGO_TARGET_DIR:-$root/target}/release/canopy"
fi
[ -x "$canopy" ] || die "no canopy binary at $canopy"

say "making a ${size_mib} MiB file"
head -c "$size" /dev/urandom > "$work/share/file.bin"
chmod 644 "$work/share/file.bin"
hash=$(b3sum --no-names "$work/share/file.bin")

# ---- test bed -------------------------------------------------------------------------------
say "creating namespaces $cns and $(sns 1)..$(sns $nsrc)"
ip netns add "$cns"; created_ns+=("$cns")
ip -n "$cns" link set lo up
for i in $(seq "$nsrc"); do
  ns=$(sns "$i")
  ip netns add "$ns"; created_ns+=("$ns")
  ip -n "$ns" link set lo up
  ip link add "vc$i" netns "$cns" type veth peer name "vs$i" netns "$ns"
  ip -n "$ns" addr add "198.18.$i.1/24" dev "vs$i"
  ip -n "$cns" addr add "198.18.$i.2/24" dev "vc$i"
  ip -n "$ns" link set "vs$i" up
  ip -n "$cns" link set "vc$i" up
done

shape() { # source rate_mbit
  ip netns exec "$(sns "$1")" tc qdisc replace dev "vs$1" root tbf rate "${2}mbit" burst "$burst" limit "$limit"
}
for i in $(seq "$nsrc"); do shape "$i" "$rate_mbit"; done

# Per-link tbf counters: "SENT_BYTES SENT_PACKETS DROPPED_PACKETS"
link_counters() {
  ip netns exec "$(sns "$1")" tc -s qdisc show dev "vs$1" |
    awk '/Sent/ { s = $2; p = $4; d = $7; sub(",", "", d); print s, p, d; exit }'
}

# ---- servers --------------------------------------------------------------------------------
start_nginx() { # source
  local i=$1 conf="$work/nginx$1.conf"
  cat > "$conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx$i.pid;
error_log $work/log/nginx$i.err;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  server { listen 198.18.$i.1:80; root $work/share; }
}
NGINX
  # One process (no master), so one SIGKILL really kills this server.
  ip netns exec "$(sns "$i")" nginx -e "$work/log/nginx$i.err" -c "$conf" &
  nginx_pid[$i]=$!
  for _ in $(seq 100); do
    ip netns exec "$(sns "$i")" ss -Hltn "sport = :80" | grep -q . && return 0
    kill -0 "${nginx_pid[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  die "nginx $i did not start (see $work/log/nginx$i.err)"
}

declare -A canopy_addr
start_canopy() { # source
  local i=$1 out="$work/log/canopy-run$1.out"
  : > "$out"   # a restarted node must not be taken as ready from its previous output
  ip netns exec "$(sns "$i")" "$canopy" run --share "$work/share" --listen "198.18.$i.1:$port" \
    --data-dir "$work/src$i" > "$out" 2>> "$work/log/canopy-run$i.err" &
  canopy_pid[$i]=$!
  for _ in $(seq 600); do   # hashing the file takes a moment
    grep -q '^fetch with' "$out" 2>/dev/null && break
    kill -0 "${canopy_pid[$i]}" 2>/dev/null || die "canopy node $i exited (see $work/log/canopy-run$i.err)"
    sleep 0.1
  done
  grep -q "^fetch with: canopy get $hash " "$out" || die "canopy node $i did not offer $hash in 60 s"
  local addr
  addr=$(sed -n 's/.*peers reach this node as \(.*\))$/\1/p' "$out" | tail -1)
  [ -z "${canopy_addr[$i]:-}" ] || [ "${canopy_addr[$i]}" = "$addr" ] ||
    die "canopy node $i came back as $addr, was ${canopy_addr[$i]}"
  canopy_addr[$i]=$addr
}

kill_server() { # pid
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

say "starting nginx and canopy in each source namespace"
for i in $(seq "$nsrc"); do
  start_nginx "$i"
  start_canopy "$i"
  ip netns exec "$cns" timeout 5 bash -c "exec 3<>/dev/tcp/198.18.$i.1/80" ||
    die "198.18.$i.1:80 unreachable from the client"
done

urls=(); sources=()
for i in $(seq "$nsrc"); do
  urls+=("http://198.18.$i.1/file.bin")
  sources+=(--source "${canopy_addr[$i]}")
done

# ---- runs -----------------------------------------------------------------------------------
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN { print $* }"; }

declare -A times wire frame drops share late own received learned after_kill
# One download. Records seconds, wire bytes / file size, tbf drops and the bytes each link carried.
run_one() { # tool scenario round
  local tool=$1 scen=$2 round=$3 out="$work/out/$1.bin" log="$work/log/$1-$2-$3.log"
  local -a cmd
  rm -f "$work/out/"*
  local -a use_urls=("${urls[@]}") use_sources=("${sources[@]}")
  if [ "$scen" = single ]; then use_urls=("${urls[0]}"); use_sources=("${sources[@]:0:2}"); fi
  case $tool in
    aria2c) local -a patience=()
            [ "$scen" != vanish ] || patience=(--timeout=3 --connect-timeout=3)
            cmd=(aria2c "${patience[@]}" -s"${#use_urls[@]}" -x1 -k1M --file-allocation=none --allow-overwrite=true
                 --auto-file-renaming=false --summary-interval=0 --quiet=true
                 --log="$log" --log-level=notice -d "$work/out" -o aria2c.bin "${use_urls[@]}") ;;
    canopy) local client_dir="$work/client"
            [ "$scen" != stale ] || client_dir="$work/client-stale-$round"
            cmd=("$canopy" get "$hash" "${use_sources[@]}" -o "$out" --data-dir "$client_dir" --json) ;;
  esac
  local before=() after=() i
  for i in $(seq "$nsrc"); do before[i]=$(link_counters "$i"); done

  local start end rc=0 victim_pid at_kill=""
  start=$(date +%s.%N)
  if [ "$tool" = canopy ]; then
    ip netns exec "$cns" timeout "$client_timeout" "${cmd[@]}" > "$log" 2> "$log.err" &
  else
    ip netns exec "$cns" timeout "$client_timeout" "${cmd[@]}" > /dev/null 2> "$log.err" &
  fi
  local cpid=$!
  if [ "$scen" = dies ] || [ "$scen" = vanish ]; then
    sleep "$(calc "$kill_fraction * $size * 8 / ($nsrc * $rate_mbit * 1000000)")"
    kill -0 "$cpid" 2>/dev/null || late[$scen,$tool]+="$round "
    if [ "$tool" = aria2c ]; then victim_pid=${nginx_pid[$victim]}; else victim_pid=${canopy_pid[$victim]}; fi
    [ "$scen" != vanish ] || ip -n "$(sns "$victim")" link set "vs$victim" down
    kill_server "$victim_pid"
    at_kill=$(link_counters "$victim")
  fi
  wait "$cpid" || rc=$?
  end=$(date +%s.%N)
  [ "$rc" = 0 ] || die "$tool ($scen, round $round) exited with $rc; see $log*"
  cmp -s "$work/share/file.bin" "$out" || die "$tool ($scen, round $round): output differs from the source"

  local secs sent=0 pkts=0 dropped=0 split=""
  secs=$(calc "$end - $start")
  for i in $(seq "$nsrc"); do
    after[i]=$(link_counters "$i")
    local b0 p0 d0 b1 p1 d1
    read -r b0 p0 d0 <<< "${before[i]}"; read -r b1 p1 d1 <<< "${after[i]}"
    sent=$((sent + b1 - b0)); pkts=$((pkts + p1 - p0)); dropped=$((dropped + d1 - d0))
    split+="$(calc "($b1 - $b0) / 1048576" | xargs printf '%.1f')/"
  done
  if [ -n "$at_kill" ]; then
    # What the dead source's link still carried after the kill: a TCP server's kernel sends
    # what is already in its socket buffer; a QUIC server's data dies with its process.
    local k0 kp kd v1 vp vd
    read -r k0 kp kd <<< "$at_kill"; read -r v1 vp vd <<< "${after[$victim]}"
    after_kill[$scen,$tool]+="$(( (v1 - k0) / 1024 )) "
  fi
  times[$scen,$tool]+="$secs "
  wire[$scen,$tool]+="$(calc "$sent / $size") "
  frame[$scen,$tool]+="$(calc "$sent / $pkts") "
  drops[$scen,$tool]+="$dropped "
  share[$scen,$tool]+="${split%/} "
  local extra=""
  if [ "$tool" = canopy ]; then
    # canopy's own timer (node started -> file verified and in place, before the endpoint shuts
    # down), bytes received including duplicates, and sources learned from the sources.
    local done_line
    done_line=$(jq -c 'select(.event == "done")' "$log")
    own[$scen]+="$(jq -r .seconds <<< "$done_line") "
    received[$scen]+="$(jq -r ".received / $size" <<< "$done_line") "
    learned[$scen]+="$(jq -r "(.sources | length) - ${#use_urls[@]}" <<< "$done_line") "
    extra=" (own timer $(jq -r '.seconds * 100 | round / 100' <<< "$done_line") s, $(jq -r "(.sources | length) - ${#use_urls[@]}" <<< "$done_line") learned sources)"
  fi
  say "$scen round $round: $tool $(printf '%.2f' "$secs") s$extra, MiB on links 1-$nsrc: ${split%/}, tbf drops: $dropped"

  if [ "$scen" = vanish ]; then
    ip -n "$(sns "$victim")" link set "vs$victim" up
    shape "$victim" "$rate_mbit"
  fi
  if [ "$scen" = dies ] || [ "$scen" = vanish ]; then   # bring the victim back for the next run
    if [ "$tool" = aria2c ]; then start_nginx "$victim"; else start_canopy "$victim"; fi
  fi
  sleep 1   # let queues drain and connections close
}

scenario() { # name
  local scen=$1 round
  for round in $(seq "$runs"); do
    # Alternate which tool goes first, so neither always follows the other.
    if [ $((round % 2)) = 1 ]; then
      run_one aria2c "$scen" "$round"; run_one canopy "$scen" "$round"
    else
      run_one canopy "$scen" "$round"; run_one aria2c "$scen" "$round"
    fi
  done
}

report() { # name title sum_of_rates_mbit
  local scen=$1 title=$2 sum=$3 a c
  med() { echo "${times[$scen,$1]}" | tr ' ' '\n' | grep . | median; }
  medof() { echo "$1" | tr ' ' '\n' | grep . | median; }
  a=$(med aria2c); c=$(med canopy)
  echo
  echo "**$title** (sum of available source rates: $sum Mbit/s)"
  echo
  echo "| tool | median seconds | Mbit/s | % of sum of source rates | vs aria2c | wire bytes / file | mean frame (B) | tbf drops per run |"
  echo "|---|---|---|---|---|---|---|---|"
  for t in aria2c canopy; do
    local s mbit
    s=$(med $t); mbit=$(calc "$size * 8 / 1000000 / $s")
    printf "| %s | %.2f | %.1f | %.1f %% | %.2f× | %.3f | %.0f | %.0f |\n" "$t" "$s" "$mbit" \
      "$(calc "100 * $mbit / $sum")" "$(calc "$a / $s")" \
      "$(medof "${wire[$scen,$t]}")" "$(medof "${frame[$scen,$t]}")" "$(medof "${drops[$scen,$t]}")"
  done
  local o
  o=$(medof "${own[$scen]}")
  echo
  echo "All runs (s): aria2c $(printf '%.2f ' ${times[$scen,aria2c]})· canopy $(printf '%.2f ' ${times[$scen,canopy]})"
  echo "canopy's own timer (\`done\` event, excludes process start and endpoint shutdown): $(printf '%.2f ' ${own[$scen]})s;" \
    "median $(printf '%.2f' "$o") s = $(printf '%.1f' "$(calc "$size * 8 / 1000000 / $o")") Mbit/s" \
    "($(printf '%.1f' "$(calc "100 * $size * 8 / 1000000 / $o / $sum")") % of the sum)." \
    "Learned (extra) sources per run: ${learned[$scen]}; received / file size: $(printf '%.3f ' ${received[$scen]})"
  echo "MiB carried by links 1-$nsrc per run: aria2c ${share[$scen,aria2c]}· canopy ${share[$scen,canopy]}"
  [ -z "${after_kill[$scen,aria2c]:-}" ] ||
    echo "KiB source $victim's link carried after its server was killed, per run: aria2c ${after_kill[$scen,aria2c]}· canopy ${after_kill[$scen,canopy]:-}"
  for t in aria2c canopy; do
    [ -z "${late[$scen,$t]:-}" ] || echo "Note: $t had already finished when source $victim was killed in round(s) ${late[$scen,$t]}"
  done
  local cm am goal1 goal2
  cm=$(calc "$size * 8 / 1000000 / $c"); am=$(calc "$size * 8 / 1000000 / $a")
  goal1=$(awk -v x="$cm" -v y="$sum" 'BEGIN { print (x >= 0.95 * y) ? "met" : "not met" }')
  goal2=$(awk -v x="$cm" -v y="$am" 'BEGIN { print (x >= y) ? "met" : "not met" }')
  case $scen in even | slow | dies | vanish) ;; *) return 0 ;; esac
  echo
  echo "Goals: canopy ≥ 95 % of the sum of source rates: $goal1 ($(printf '%.1f' "$(calc "100 * $cm / $sum")") %); canopy ≥ aria2c: $goal2 ($(printf '%.2f' "$(calc "$a / $c")")×)."
}

wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
wanted_explicitly() { [[ " ${ONLY:-} " == *" $1 "* ]]; }
if wanted even; then
  say "scenario even: $nsrc x $rate_mbit Mbit/s"
  scenario even
fi
if wanted slow; then
  say "scenario slow: source $victim at $slow_mbit Mbit/s"
  shape "$victim" "$slow_mbit"
  scenario slow
  shape "$victim" "$rate_mbit"
fi
if wanted dies; then
  say "scenario dies: source $victim killed at $(calc "100 * $kill_fraction")% of the expected time"
  scenario dies
fi
if wanted_explicitly vanish; then
  say "scenario vanish: source $victim's host vanishes at $(calc "100 * $kill_fraction")% of the expected time"
  scenario vanish
fi
if wanted single; then
  say "scenario single: source 1 alone at $rate_mbit Mbit/s, one round"
  run_one aria2c single 1; run_one canopy single 1
fi
# Last: every run here leaves one more gone downloader that the sources will advertise.
if wanted stale; then
  say "scenario stale: $nsrc x $rate_mbit Mbit/s, a new canopy client identity per run"
  scenario stale
fi

{
  echo
  echo "Shaping: tbf rate ${rate_mbit}mbit (slow source ${slow_mbit}mbit) burst $burst limit $limit on each source's egress; no added delay."
  echo "File: ${size_mib} MiB of random bytes; $runs rounds per scenario; kernel $(uname -r); $(nproc) CPUs."
  ! wanted even || report even "(a) $nsrc × $rate_mbit Mbit/s" "$((nsrc * rate_mbit))"
  ! wanted slow || report slow "(b) source $victim at $slow_mbit Mbit/s, the others at $rate_mbit" "$(((nsrc - 1) * rate_mbit + slow_mbit))"
  ! wanted dies || report dies "(c) $nsrc × $rate_mbit Mbit/s, source $victim killed at $(calc "100 * $kill_fraction") % of the expected time" "$(((nsrc - 1) * rate_mbit))"
  ! wanted_explicitly vanish || report vanish "(f) as (c), but source $victim's host vanishes (its link goes down as its server is killed)" "$(((nsrc - 1) * rate_mbit))"
  ! wanted single || report single "(d) baseline: source 1 alone at $rate_mbit Mbit/s, one round" "$rate_mbit"
  ! wanted stale || report stale "(e) as (a), a new canopy client identity per run (sources advertise earlier, gone downloaders)" "$((nsrc * rate_mbit))"
} | tee "$work/report.md"
