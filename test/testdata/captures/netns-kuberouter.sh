#!/usr/bin/env bash
# kube-router v2.1 NetworkPolicy rule shapes on a real kernel (iptables-nft), in private netns:
# client np-c1 10.244.7.11 (allowed, in the ipset) and np-c2 10.244.7.12 (not), server np-s 10.244.7.10,
# all routed through np-node (10.244.7.1 on three veths). Captures xtables-monitor and nft monitor traces.
set -euo pipefail
OUT=${1:?out dir}
cleanup() { for n in np-node np-s np-c1 np-c2; do ip netns del $n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in np-node np-s np-c1 np-c2; do ip netns add $n; ip -n $n link set lo up; done
i=0
for pair in "np-s 10.244.7.10" "np-c1 10.244.7.11" "np-c2 10.244.7.12"; do
  set -- $pair; i=$((i+1))
  ip link add veth$i netns np-node type veth peer name eth0 netns $1
  ip -n $1 addr add $2/32 dev eth0; ip -n $1 link set eth0 up
  ip -n $1 route add 10.244.7.1 dev eth0; ip -n $1 route add default via 10.244.7.1
  ip -n np-node link set veth$i up; ip -n np-node addr add 10.244.7.1/32 dev veth$i 2>/dev/null || true
  ip -n np-node route add $2/32 dev veth$i
done
ip netns exec np-node sysctl -qw net.ipv4.ip_forward=1
ip netns exec np-node sysctl -qw net.ipv4.conf.all.rp_filter=0
ip netns exec np-node ipset create KUBE-SRC-JFQOWIVBTBCOGMRV hash:ip timeout 0
ip netns exec np-node ipset add KUBE-SRC-JFQOWIVBTBCOGMRV 10.244.7.11 timeout 0
ip netns exec np-node ipset create KUBE-DST-BOKKDHC6AY6WEA23 hash:ip timeout 0
ip netns exec np-node ipset add KUBE-DST-BOKKDHC6AY6WEA23 10.244.7.10 timeout 0
W=KUBE-POD-FW-Q3VXZ6J2T4K7M2LA; A=KUBE-NWPLCY-5MQ2XK7RB3WT6YNC
ip netns exec np-node iptables-nft-restore <<R
*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d 10.244.7.10/32 -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment svctrace-cap -j TRACE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-ROUTER-FORWARD - [0:0]
:$W - [0:0]
:$A - [0:0]
-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD
-A KUBE-ROUTER-FORWARD -d 10.244.7.10/32 -m comment --comment "rule to jump traffic destined to POD name:np-web namespace: svctrace-np to chain $W" -j $W
-A KUBE-ROUTER-FORWARD -m comment --comment "rule to explicitly ACCEPT traffic that comply to network policies" -m mark --mark 0x20000/0x20000 -j ACCEPT
-A $W -m comment --comment "rule for stateful firewall for pod" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A $W -m comment --comment "rule to drop invalid state for pod" -m conntrack --ctstate INVALID -j DROP
-A $W -d 10.244.7.10/32 -m comment --comment "run through nw policy allow-frontend" -j $A
-A $W -m comment --comment "rule to log dropped traffic POD name:np-web namespace: svctrace-np" -m mark ! --mark 0x10000/0x10000 -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group 100
-A $W -m comment --comment "rule to REJECT traffic destined for POD name:np-web namespace: svctrace-np" -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable
-A $W -j MARK --set-xmark 0x0/0x10000
-A $W -m comment --comment "set mark to ACCEPT traffic that comply to network policies" -j MARK --set-xmark 0x20000/0x20000
-A $A -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-frontend namespace svctrace-np" -m set --match-set KUBE-SRC-JFQOWIVBTBCOGMRV src -m set --match-set KUBE-DST-BOKKDHC6AY6WEA23 dst -m tcp --dport 80 -j MARK --set-xmark 0x10000/0x10000
-A $A -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest pods selected by policy name allow-frontend namespace svctrace-np" -m set --match-set KUBE-SRC-JFQOWIVBTBCOGMRV src -m set --match-set KUBE-DST-BOKKDHC6AY6WEA23 dst -m tcp --dport 80 -m mark --mark 0x10000/0x10000 -j RETURN
COMMIT
R
ip netns exec np-node iptables-nft-save > "$OUT/rules.txt"
ip netns exec np-node nft -a list ruleset > "$OUT/ruleset.txt"
ip netns exec np-s python3 -c 'import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(("0.0.0.0",80));s.listen(5)
while 1: s.accept()[0].close()' >/dev/null 2>&1 &
SRV=$!
sleep 0.5
ip netns exec np-node timeout 6 xtables-monitor --trace > "$OUT/xtmon.txt" 2>&1 &
ip netns exec np-node timeout 6 nft monitor trace > "$OUT/nftmon.txt" 2>&1 &
sleep 1
ip netns exec np-c2 timeout 2 bash -c 'exec 3<>/dev/tcp/10.244.7.10/80' && echo "c2 connected" || echo "c2 refused"
ip netns exec np-c1 timeout 2 bash -c 'exec 3<>/dev/tcp/10.244.7.10/80' && echo "c1 connected" || echo "c1 refused"
sleep 5
kill $SRV 2>/dev/null || true
wait 2>/dev/null || true
