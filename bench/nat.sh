#!/usr/bin/env bash
# The NAT test bed: a small internet of network namespaces on this machine,
# with home routers that behave as home routers do (issue 19).
#
#   wan 10.77.0.0/24, a bridge (in namespace ${P}wan); no default routes
#     ${P}sn   10.77.0.2    a public supernode's machine
#     ${P}pub  10.77.0.3    a public peer's machine
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
# (masquerade random: a new port per peer, "symmetric"). Both filter by the
# exact peer address and port, like most home routers.
#
# Usage: bench/nat.sh up [KIND...]   homes 1, 2, … of these kinds (default: cone sym)
#        bench/nat.sh down
#        bench/nat.sh list
# CANOPY_NETNS_PREFIX sets P (default "cn-"), to run beside another bed.
# Needs root, iproute2 and nftables (installed if missing).
set -euo pipefail
P=${CANOPY_NETNS_PREFIX:-cn-}

ns() { echo "$P$1"; }
in_ns() { local name=$1; shift; ip netns exec "$(ns "$name")" "$@"; }

down() {
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
  in_ns "$name" ip link set wan0 up
}

# Home K: router rK on the wan at 10.77.0.1K, machine hK behind it.
home() {
  local k=$1 kind=$2 router="r$1" host="h$1"
  local random=""
  case $kind in
    cone) ;;
    sym) random=" random" ;;
    *) echo "unknown router kind $kind (cone or sym)" >&2; exit 2 ;;
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
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
}
NFT
  echo "home $k: $kind router $(ns "$router") at 10.77.0.1$k, machine $(ns "$host") at 192.168.1.2"
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
  echo "wan: $(ns sn) at 10.77.0.2, $(ns pub) at 10.77.0.3"
  local k=1
  for kind in "${kinds[@]}"; do
    home "$k" "$kind"
    k=$((k + 1))
  done
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  list) ip netns list | grep "^$P" || true ;;
  *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
