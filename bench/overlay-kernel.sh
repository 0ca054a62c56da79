#!/usr/bin/env bash
# The kernel's own VXLAN between two namespaced hosts, with nothing of
# Berth's or Docker's in the path: the same shape as bench/overlay.py's
# harness (hosts linked to this machine by veth pairs, a bridge per host
# for the subnet, tasks as namespaces on it, a /32 route through the
# tunnel to the remote task). bench/overlay.py measures it side by side
# with Berth's tunnel as the floor this machine allows.
#   overlay-kernel.sh up TAG MTU   -> prints the three namespaces and the server's address
#   overlay-kernel.sh down TAG
set -euo pipefail
cmd=$1 tag=$2
h() { echo "bk$tag-h$1"; }
t() { echo "bk$tag-$1"; }
down() {
  for n in $(h 0) $(h 1) $(t c) $(t s) $(t l); do ip netns del "$n" 2>/dev/null || true; done
  for i in 0 1; do
    iptables -D DOCKER-USER -i "bk${tag}o$i" -j ACCEPT 2>/dev/null || true
    iptables -D DOCKER-USER -o "bk${tag}o$i" -j ACCEPT 2>/dev/null || true
    ip link del "bk${tag}o$i" 2>/dev/null || true
  done
}
if [ "$cmd" = down ]; then down; exit 0; fi
mtu=$3 inner=$(($3 - 50))
down
# Two /30s and a subnet out of the ranges Berth and its tests use.
net=$((RANDOM % 60 + 64))
for i in 0 1; do
  o="bk${tag}o$i" in="bk${tag}i$i" ns=$(h $i)
  ip netns add "$ns"
  ip link add "$o" mtu "$mtu" type veth peer name "$in" mtu "$mtu"
  ip link set "$in" netns "$ns"
  ip addr add "10.237.$net.$((i * 4 + 1))/30" dev "$o"; ip link set "$o" up
  iptables -I DOCKER-USER -i "$o" -j ACCEPT; iptables -I DOCKER-USER -o "$o" -j ACCEPT
  x="ip netns exec $ns"
  $x ip addr add "10.237.$net.$((i * 4 + 2))/30" dev "$in"; $x ip link set "$in" up; $x ip link set lo up
  $x ip route add default via "10.237.$net.$((i * 4 + 1))"
  $x sysctl -qw net.ipv4.ip_forward=1
  $x ip link add br0 mtu "$inner" type bridge
  $x ip addr add "10.251.$net.$((1 + i * 100))/24" dev br0; $x ip link set br0 up
  $x sysctl -qw net.ipv4.conf.br0.proxy_arp=1
  $x ip link add vx type vxlan id 42 local "10.237.$net.$((i * 4 + 2))" dstport 4789 nolearning
  $x ip link set vx mtu "$inner" up
done
task() { # name host last-octet
  local ns=$(t "$1") v="bk${tag}v$1"
  ip netns add "$ns"
  ip link add "$v" mtu "$inner" type veth peer name eth0 mtu "$inner" netns "$ns"
  ip link set "$v" netns "$(h "$2")"
  ip netns exec "$(h "$2")" ip link set "$v" master br0 up
  ip netns exec "$ns" ip addr add "10.251.$net.$3/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up; ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip route add default via "10.251.$net.$((1 + $2 * 100))"
}
task c 0 10; task s 1 20; task l 1 21
mac() { ip netns exec "$(h "$1")" cat /sys/class/net/vx/address; }
for i in 0 1; do
  j=$((1 - i)) peer=$([ $i = 0 ] && echo 20 || echo 10)
  x="ip netns exec $(h $i)"
  $x ip neigh add "10.251.$net.$peer" lladdr "$(mac $j)" dev vx nud permanent
  $x bridge fdb add "$(mac $j)" dev vx dst "10.237.$net.$((j * 4 + 2))" self permanent
  $x ip route add "10.251.$net.$peer/32" dev vx
done
echo "$(t c) $(t s) $(t l) 10.251.$net.20"
