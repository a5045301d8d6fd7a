#!/usr/bin/env bash
# The NAT test bed: a small internet of network namespaces on this machine,
# with home routers that behave as home routers do (issue 19).
#
#   wan 10.77.0.0/24, a bridge (in namespace ${P}wan); no default routes
#     ${P}sn   10.77.0.2    a public supernode's machine
#     ${P}pub  10.77.0.3    a public peer's machine
#     ${P}sn2  10.77.0.6    a second public supernode's machine (the matrix runs two)
#     ${P}rK   10.77.0.1K   home router K: NAT (masquerade) for its home,
#                           dropping (never rejecting: a reject would make
#                           conntrack pick another port) anything nobody
#                           inside asked for
#       ${P}hK 192.168.1.2  the machine behind it; every home uses the same
#                           private range, so a leaked private address
#                           reaches the wrong machine, loudly
#
# Router kinds: cone (plain masquerade: the same outside port towards every
# peer while it is free, "endpoint-independent mapping") and sym
# (masquerade random: a new port per peer, "symmetric"), upnp (cone,
# with miniupnpd answering NAT-PMP, PCP and UPnP-IGD for its home: see
# upnp_router below) and igd (the same, UPnP-IGD only); cone6 and cone6fw
# are cone routers of dual-stack homes (a global IPv6 prefix 2a0b:77:K::/64
# routed to the home, without NAT), cone6 letting IPv6 in unasked, cone6fw
# dropping it. All filter by the exact peer address and port, like
# most home routers. Every wan machine also has 2a0b:77::N.
#
# Usage: bench/nat.sh up [KIND...]   homes 1, 2, … of these kinds (default: cone sym)
#        bench/nat.sh down
#        bench/nat.sh list
#        RATE=20mbit bench/nat.sh up|matrix …   homes' uplinks shaped (tc tbf)
#        bench/nat.sh matrix [RUNS=5] [SIZE_KIB=1024]
#            every pair of (public, cone, symmetric, upnp home) as downloader
#            and source: `canopy get --json` of a fresh file each run, the
#            bytes checked, and per pair the path taken (direct, pushed,
#            punched, relayed), the median time from start to the first
#            verified block and to the end. One Markdown table for
#            docs/BENCHMARKS.md. Uses $CANOPY, else target/release/canopy,
#            else target/debug/canopy.
# CANOPY_NETNS_PREFIX sets P (default "cn-"), to run beside another bed.
# Needs root, iproute2 and nftables (installed if missing).
set -euo pipefail
P=${CANOPY_NETNS_PREFIX:-cn-}

ns() { echo "$P$1"; }
in_ns() { local name=$1; shift; ip netns exec "$(ns "$name")" "$@"; }

down() {
  upnp_stop
  for name in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do
    ip netns pids "$name" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$name"
  done
}

# A machine on the wan: its namespace, a veth to the bridge, its address.
wan_member() {
  local name=$1 address=$2
  ip netns add "$(ns "$name")"
  in_ns "$name" ip link set lo up
  ip -n "$(ns wan)" link add "w-$name" type veth peer name wan0 netns "$(ns "$name")"
  ip -n "$(ns wan)" link set "w-$name" master br0 up
  in_ns "$name" ip addr add "$address/24" dev wan0
  # IPv6 beside it: 2a0b:77::N for 10.77.0.N (global-looking, as an ISP's
  # would be; nodad: usable at once).
  in_ns "$name" ip -6 addr add "2a0b:77::${address##*.}/64" dev wan0 nodad
  in_ns "$name" ip link set wan0 up
}

# Home K: router rK on the wan at 10.77.0.1K, machine hK behind it.
home() {
  local k=$1 kind=$2 router="r$1" host="h$1"
  local random=""
  case $kind in
    cone) ;;
    sym) random=" random" ;;
    upnp|igd|cone6|cone6fw) ;;
    *) echo "unknown router kind $kind (cone, sym, upnp, igd, cone6 or cone6fw)" >&2; exit 2 ;;
  esac
  wan_member "$router" "10.77.0.1$k"
  ip netns add "$(ns "$host")"
  in_ns "$host" ip link set lo up
  ip -n "$(ns "$router")" link add lan0 type veth peer name eth0 netns "$(ns "$host")"
  in_ns "$router" ip addr add 192.168.1.1/24 dev lan0
  in_ns "$router" ip link set lan0 up
  in_ns "$host" ip addr add 192.168.1.2/24 dev eth0
  in_ns "$host" ip link set eth0 up
  in_ns "$host" ip route add default via 192.168.1.1
  in_ns "$router" sysctl -qw net.ipv4.ip_forward=1
  local v6_inbound="" v6_input=""
  if [ "$kind" = cone6 ] || [ "$kind" = cone6fw ]; then
    # Dual stack: IPv4 behind the cone NAT, and a global IPv6 prefix
    # 2a0b:77:K::/64 routed to the home, no NAT on it. cone6's router lets
    # IPv6 in unasked (some ISPs' routers do, or a user opened it);
    # cone6fw's drops it, as most home routers do by default.
    in_ns "$router" sysctl -qw net.ipv6.conf.all.forwarding=1
    in_ns "$router" ip -6 addr add "2a0b:77:$k::1/64" dev lan0 nodad
    in_ns "$host" ip -6 addr add "2a0b:77:$k::2/64" dev eth0 nodad
    in_ns "$host" ip -6 route add default via "2a0b:77:$k::1"
    for member in sn pub sn2; do
      in_ns "$member" ip -6 route add "2a0b:77:$k::/64" via "2a0b:77::1$k"
    done
    # Neighbour discovery (ICMPv6) reaches the router itself, or nothing
    # on the wan can find it.
    v6_input='meta l4proto ipv6-icmp accept'
    [ "$kind" = cone6 ] && v6_inbound='iifname "wan0" oifname "lan0" meta nfproto ipv6 accept'
  fi
  if [ "$kind" = upnp ] || [ "$kind" = igd ]; then
    upnp_router "$k" "$kind"
  else
  in_ns "$router" nft -f - <<NFT
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade$random
  }
}
table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    ct state established,related accept
    iifname "lan0" accept
    $v6_input
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
    $v6_inbound
  }
}
NFT
  fi
  if [ -n "${RATE:-}" ]; then
    # The home's uplink: what its machine sends to the internet, as a DSL
    # or cable line caps it (tbf: a 32 KiB bucket, ~50 ms of queue).
    in_ns "$router" tc qdisc add dev wan0 root tbf rate "$RATE" burst 32kb latency 50ms
  fi
  echo "home $k: $kind router $(ns "$router") at 10.77.0.1$k, machine $(ns "$host") at 192.168.1.2"
}

# Kind "upnp": the cone router plus miniupnpd (Debian bookworm: packages
# miniupnpd + miniupnpd-nftables, 2.3.1) answering NAT-PMP and PCP on
# 192.168.1.1:5351 (and UPnP-IGD) for its home. Kind "igd": the same
# miniupnpd with NAT-PMP and PCP off, answering UPnP-IGD only. miniupnpd's nftables backend
# only works on inet-family tables, so this router's NAT lives in
# `table inet nat` (not `ip nat`); its three chains must exist before it
# starts, it only adds and deletes rules inside them.
#
# miniupnpd 2.3.1 will not map while its external address is private (and
# 10.77.x is RFC 1918): ext_ip= refuses private addresses and there is no
# ext_allow_private_ipv4 yet. Two ways round it (UPNP_EXT):
#   stun (default) miniupnpd's ext_perform_stun test against a STUN server
#                  on the wan (${P}stun, 10.77.0.4 and 10.77.0.5: the test
#                  needs answers from a second address and port); it then
#                  reports the true 10.77.0.1K.
#   fake           ext_ip=11.77.0.1K, a stand-in public address: no STUN
#                  server, mapping works the same (the DNAT rules match only
#                  interface and port) but NAT-PMP/PCP report 11.77.0.1K.
UPNP_DIR=${UPNP_DIR:-/tmp/${P}upnp}
UPNP_EXT=${UPNP_EXT:-stun}

# A STUN server (RFC 5780 CHANGE-REQUEST) on the wan, for miniupnpd's test.
upnp_stun_server() {
  mkdir -p "$UPNP_DIR"
  cat >"$UPNP_DIR/stunserver.py" <<'PY'
import select, socket, struct, sys
ips = sys.argv[1:3]; ports = [3478, 3479]; socks = {}
for i in range(2):
    for j in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ips[i], ports[j])); socks[(i, j)] = s
where = {s: k for k, s in socks.items()}
print("ready", flush=True)
while True:
    for s in select.select(list(socks.values()), [], [])[0]:
        req, (ip, port) = s.recvfrom(2048)
        if len(req) < 20 or req[:2] != b"\x00\x01":  # Binding Request only
            continue
        change, at = 0, 20
        while at + 4 <= len(req):
            t, l = struct.unpack("!HH", req[at:at + 4])
            if t == 3 and l == 4:  # CHANGE-REQUEST: 4 = other address, 2 = other port
                change = req[at + 7]
            at += 4 + (l + 3) // 4 * 4
        i, j = where[s]
        a = socket.inet_aton(ip)
        xa = bytes(x ^ y for x, y in zip(a, req[4:8]))
        attrs = struct.pack("!HHBBH4s", 1, 8, 0, 1, port, a) + struct.pack("!HHBBH4s", 0x20, 8, 0, 1, port ^ 0x2112, xa)
        socks[(i ^ bool(change & 4), j ^ bool(change & 2))].sendto(
            struct.pack("!HH", 0x0101, len(attrs)) + req[4:20] + attrs, (ip, port))
PY
  wan_member stun 10.77.0.4
  ip -n "$(ns stun)" addr add 10.77.0.5/24 dev wan0
  in_ns stun python3 "$UPNP_DIR/stunserver.py" 10.77.0.4 10.77.0.5 >"$UPNP_DIR/stun.log" 2>&1 &
  local waited=0
  until grep -q ready "$UPNP_DIR/stun.log" 2>/dev/null; do
    sleep 0.1; waited=$((waited + 1))
    [ $waited -lt 50 ] || { echo "the STUN server did not start: $(cat "$UPNP_DIR/stun.log")" >&2; exit 1; }
  done
  echo "wan: $(ns stun) at 10.77.0.4 and 10.77.0.5, a STUN server for the upnp routers"
}

upnp_router() {
  local k=$1 router="r$1" natpmp=yes listening="Listening for NAT-PMP/PCP"
  # Kind "igd": UPnP-IGD only, like the many home routers that speak
  # nothing else.
  [ "${2:-upnp}" = igd ] && { natpmp=no; listening="HTTP listening on port"; }
  in_ns "$router" nft -f - <<NFT
table inet nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
    oifname "wan0" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
table inet filter {
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    ct state established,related accept
    iifname "lan0" accept
    iifname "wan0" ip saddr { 10.77.0.4, 10.77.0.5 } udp sport { 3478, 3479 } accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
    iifname "wan0" oifname "lan0" jump miniupnpd
  }
  chain miniupnpd {
  }
}
NFT
  local ext="ext_perform_stun=yes
ext_stun_host=10.77.0.4
ext_stun_port=3478"
  [ "$UPNP_EXT" = fake ] && ext="ext_ip=11.77.0.1$k"
  mkdir -p "$UPNP_DIR"
  cat >"$UPNP_DIR/$router.conf" <<CONF
ext_ifname=wan0
$ext
listening_ip=lan0
http_port=0
enable_natpmp=$natpmp
enable_upnp=yes
ipv6_disable=yes
secure_mode=yes
min_lifetime=120
max_lifetime=86400
uuid=3d3cec3a-8cf0-11e0-98ee-0000000000$(printf %02d "$k")
upnp_table_name=filter
upnp_nat_table_name=nat
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 192.168.1.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
CONF
  # -d: foreground, logs to stderr. Its own pid file: the pid namespace is
  # shared, and miniupnpd refuses to start while its pid file's pid lives.
  rm -f "$UPNP_DIR/$router.pid"
  in_ns "$router" miniupnpd -f "$UPNP_DIR/$router.conf" -P "$UPNP_DIR/$router.pid" -d \
    >"$UPNP_DIR/$router.log" 2>&1 &
  local waited=0
  until grep -q "$listening" "$UPNP_DIR/$router.log" 2>/dev/null; do
    sleep 0.1; waited=$((waited + 1))
    [ $waited -lt 100 ] || { echo "miniupnpd in $(ns "$router") did not start:" >&2; cat "$UPNP_DIR/$router.log" >&2; exit 1; }
  done
  grep -q "Port forwarding is impossible\|does not support port forwarding" "$UPNP_DIR/$router.log" &&
    { echo "miniupnpd in $(ns "$router") will not map:" >&2; cat "$UPNP_DIR/$router.log" >&2; exit 1; }
  return 0
}

# Stop every miniupnpd of this bed (SIGTERM: it deletes its rules, exits).
upnp_stop() {
  local f
  for f in "$UPNP_DIR"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

up() {
  [ "$(id -u)" = 0 ] || { echo "the NAT test bed needs root (network namespaces)" >&2; exit 1; }
  command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; }
  command -v nft >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null; }
  local kinds=("$@")
  ((${#kinds[@]})) || kinds=(cone sym)
  down
  ip netns add "$(ns wan)"
  ip -n "$(ns wan)" link add br0 type bridge
  ip -n "$(ns wan)" link set br0 up
  wan_member sn 10.77.0.2
  wan_member pub 10.77.0.3
  wan_member sn2 10.77.0.6
  echo "wan: $(ns sn) at 10.77.0.2, $(ns pub) at 10.77.0.3, $(ns sn2) at 10.77.0.6"
  if [[ " ${kinds[*]} " == *" upnp "* ]] || [[ " ${kinds[*]} " == *" igd "* ]]; then
    command -v miniupnpd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq miniupnpd-nftables >/dev/null; }
    [ "$UPNP_EXT" = fake ] || upnp_stun_server
  fi
  local k=1
  for kind in "${kinds[@]}"; do
    home "$k" "$kind"
    k=$((k + 1))
  done
}

# The matrix: sources pub (public), h1 (cone), h3 (symmetric), h5 (upnp)
# run `canopy run --share`; downloaders sn's machine (public), h2 (cone),
# h4 (symmetric) and h6 (upnp) run `canopy get`. Every downloader fetches
# from every source.
matrix() {
  local runs=${1:-5} size_kib=${2:-1024}
  [[ $runs =~ ^[0-9]+$ && $runs -ge 1 && $size_kib =~ ^[0-9]+$ && $size_kib -ge 1 ]] ||
    { echo "usage: bench/nat.sh matrix [RUNS=5] [SIZE_KIB=1024]" >&2; exit 2; }
  local here canopy
  here=$(cd "$(dirname "$0")/.." && pwd)
  canopy=${CANOPY:-}
  [ -n "$canopy" ] || for candidate in "${CARGO_TARGET_DIR:-$here/target}"/{release,debug}/canopy; do
    [ -x "$candidate" ] && { canopy=$candidate; break; }
  done
  [ -x "$canopy" ] || { echo "no canopy binary: cargo build --release -p canopy-node" >&2; exit 1; }
  command -v b3sum >/dev/null || { echo "needs b3sum (apt-get install b3sum)" >&2; exit 1; }
  up cone cone sym sym upnp upnp >/dev/null
  # Global: the exit trap reads it after this function has returned.
  work=$(mktemp -d /tmp/canopy-nat-matrix.XXXXXX)
  trap 'pkill -f "$work/" 2>/dev/null; down; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
  # Two supernodes, as a real network has many: what two peers see of a
  # home tells its router's kind (one port for both, or one per peer),
  # which decides how a punch is planned.
  local supernode sn="" address
  for supernode in sn sn2; do
    address=10.77.0.2
    [ $supernode = sn2 ] && address=10.77.0.6
    in_ns $supernode "$canopy" run --role supernode --listen $address:4663 --no-ui --data-dir "$work/$supernode" \
      >"$work/$supernode.out" 2>"$work/$supernode.err" &
    local found="" waited=0
    while [ -z "$found" ] && [ $waited -lt 100 ]; do
      sleep 0.2; waited=$((waited + 1))
      found=$(grep -o "as [a-z0-9]*@$address:4663" "$work/$supernode.out" 2>/dev/null | head -1 | cut -c4- || true)
    done
    [ -n "$found" ] || { echo "the supernode $supernode did not start: $(cat "$work/$supernode.err")" >&2; exit 1; }
    sn+=" --bootstrap $found"
  done
  # Sources: one shared folder each, refilled with fresh files per run.
  local source listen
  for source in pub h1 h3 h5; do
    mkdir -p "$work/share-$source"
    listen=0.0.0.0:4663
    [ $source = pub ] && listen=10.77.0.3:4663
    in_ns $source "$canopy" run --share "$work/share-$source" $sn --listen $listen \
      --no-ui --rescan-interval 1 --data-dir "$work/node-$source" >"$work/$source.out" 2>"$work/$source.err" &
  done
  local name
  declare -A kind=([pub]=public [h1]=cone [h3]=symmetric [h5]=upnp [sn]=public [h2]=cone [h4]=symmetric [h6]=upnp)
  echo "| downloader → source | runs ok | path | first block, median | whole file, median | rate |"
  echo "|---|---|---|---|---|---|"
  local downloader
  for downloader in sn h2 h4 h6; do
    for source in pub h1 h3 h5; do
      local ok=0 paths="" firsts=() totals=()
      for ((run = 1; run <= runs; run++)); do
        name="$downloader-$source-$run.bin"
        head -c $((size_kib * 1024)) /dev/urandom >"$work/$name.tmp"
        mv "$work/$name.tmp" "$work/share-$source/$name"
        local hash
        hash=$(b3sum --no-names "$work/share-$source/$name")
        # Wait until the source has published it (its rescan runs every second).
        local listed=0 tries=0
        while [ $listed = 0 ] && [ $tries -lt 40 ]; do
          tries=$((tries + 1))
          in_ns "$downloader" "$canopy" search "$name" --json $sn \
            --data-dir "$work/search-$downloader" 2>/dev/null | grep -q "$hash" && listed=1 || sleep 0.5
        done
        local out="$work/got-$name" line
        line=$(in_ns "$downloader" timeout 60 "$canopy" get "$hash" $sn --json -o "$out" \
          --data-dir "$work/get-$downloader-$run-$source" 2>>"$work/get.err" | tail -n 1 || true)
        if [[ $line == *'"event":"done"'* ]] && [ "$(b3sum --no-names "$out")" = "$hash" ]; then
          ok=$((ok + 1))
          paths+=" $(grep -o '"path":"[a-z]*","peer"' <<<"$line" | head -1 | cut -d'"' -f4)"
          firsts+=("$(grep -o '"first_block_seconds":[0-9.e-]*' <<<"$line" | cut -d: -f2)")
          totals+=("$(grep -o '"seconds":[0-9.e-]*' <<<"$line" | cut -d: -f2)")
        fi
        rm -f "$out"
      done
      local path median_first median_total
      path=$(tr ' ' '\n' <<<"$paths" | grep . | sort | uniq -c | awk '{printf "%s%s ×%s", sep, $2, $1; sep=", "}')
      median_first=$(printf '%s\n' "${firsts[@]:-}" | grep . | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.2f s", a[int((NR+1)/2)]; else print "-"}')
      median_total=$(printf '%s\n' "${totals[@]:-}" | grep . | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%.2f s", a[int((NR+1)/2)]; else print "-"}')
      local rate="-"
      [ "$median_total" != "-" ] && rate=$(awk -v kib="$size_kib" -v s="${median_total% s}" \
        'BEGIN { if (s > 0) printf "%.1f Mbit/s", kib * 1024 * 8 / s / 1e6; else print "-" }')
      echo "| ${kind[$downloader]} → ${kind[$source]} | $ok of $runs | ${path:--} | $median_first | $median_total | $rate |"
    done
  done
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  list) ip netns list | grep "^$P" || true ;;
  matrix) shift; matrix "$@" ;;
  *) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
