#!/usr/bin/env bash
# capture NAME NODE DST PORT -- traffic command...   (run from the repo root, cluster up, lock held)
set -euo pipefail
OUT=${OUT:-/tmp/nftm/cap}
mkdir -p "$OUT"
C=hack/local-cluster.sh
name=$1 node=$2 dst=$3 port=$4; shift 5
ex() { $C exec --node "$node" -- "$@"; }
ex nft -f - <<NFT
table ip svctrace-cap {
	chain pre { type filter hook prerouting priority raw; policy accept; ip daddr $dst tcp dport $port tcp flags syn / fin,syn,rst,ack meta nftrace set 1 comment "svctrace-cap"; }
	chain out { type filter hook output priority raw; policy accept; ip daddr $dst tcp dport $port tcp flags syn / fin,syn,rst,ack meta nftrace set 1 comment "svctrace-cap"; }
}
NFT
ex timeout 8 nft monitor trace >"$OUT/$name.nftmon.txt" &
mon=$!
sleep 1
"$@" || true
sleep 1
ex nft -a list ruleset >"$OUT/$name.ruleset.txt" 2>"$OUT/$name.ruleset.stderr" || true
wait $mon || true
ex nft delete table ip svctrace-cap
echo "captured $name: $(grep -c . "$OUT/$name.nftmon.txt") trace lines"
