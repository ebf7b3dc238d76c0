#!/usr/bin/env bash
# Real kernel traces through kube-proxy v1.33-shaped nftables rules (three namespaces).
set -euo pipefail
N=svctrace-nfm-node G=svctrace-nfm-gw P=svctrace-nfm-pod
cleanup() { for n in $N $G $P; do ip netns del $n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in $N $G $P; do ip netns add $n; ip -n $n link set lo up; done
ip link add g0 netns $G type veth peer name n0 netns $N
ip link add p1 netns $P type veth peer name p0 netns $N
ip -n $G addr add 10.199.9.1/24 dev g0; ip -n $G link set g0 up
ip -n $N addr add 10.199.9.2/24 dev n0; ip -n $N link set n0 up
ip -n $N addr add 10.244.0.1/24 dev p0; ip -n $N link set p0 up
ip -n $P addr add 10.244.0.5/24 dev p1; ip -n $P link set p1 up
ip -n $P route add default via 10.244.0.1
ip -n $N route add default via 10.199.9.1
ip -n $G route add 10.244.0.0/16 via 10.199.9.2
ip -n $G route add 10.96.0.0/16 via 10.199.9.2
ip -n $G route add 192.168.99.0/24 via 10.199.9.2
ip netns exec $N sysctl -qw net.ipv4.ip_forward=1
ip netns exec $N nft -f netns-v133.kube-proxy.nft
ip netns exec $N nft -f - <<'NFT'
table ip svctrace-cap {
	chain pre { type filter hook prerouting priority raw; policy accept; ip daddr { 10.96.0.20, 192.168.99.10, 10.199.9.2 } tcp flags syn / fin,syn,rst,ack meta nftrace set 1 comment "svctrace-cap"; }
	chain out { type filter hook output priority raw; policy accept; ip daddr { 10.96.0.20, 192.168.99.10, 10.199.9.2 } tcp flags syn / fin,syn,rst,ack meta nftrace set 1 comment "svctrace-cap"; }
}
NFT
ip netns exec $P sh -c 'timeout 40 nc -lk -p 80 >/dev/null 2>&1 &' || true
sleep 0.5
ip netns exec $N timeout 12 nft monitor trace > netns-v133.nftmon.txt &
sleep 1
conn() { ip netns exec $1 timeout 2 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && echo "$1 -> $2:$3 connected" || echo "$1 -> $2:$3 failed"; sleep 0.5; }
conn $N 10.96.0.20 80      # node -> ClusterIP, sessionAffinity: first connection
conn $N 10.96.0.20 80      # second connection: the affinity set
conn $P 10.96.0.20 80      # the endpoint calls its own Service: hairpin
conn $G 10.199.9.2 30082   # NodePort, externalTrafficPolicy Cluster
conn $G 192.168.99.10 80   # LB IP from outside loadBalancerSourceRanges
conn $G 10.199.9.2 30083   # NodePort, externalTrafficPolicy Local, no local endpoint
sleep 1
ip netns exec $N nft -a list ruleset > netns-v133.ruleset.txt
wait
