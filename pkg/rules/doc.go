// Package rules owns ruleset snapshots and what kube-proxy's rules mean: it
// indexes iptables-save / ip6tables-save output (legacy or nft backend) and
// nft -a list ruleset output by (family, table, chain, position | handle),
// and classifies kube-proxy chains (KUBE-SVC-*, KUBE-SEP-*, service-*, ...)
// from rule comments and from chain-name hashes.
package rules
