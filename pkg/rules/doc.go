// Package rules owns ruleset snapshots and what kube-proxy's rules mean: it
// indexes iptables-save / ip6tables-save output (legacy or nft backend) and
// nft -a list ruleset output by (family, table, chain, position | handle),
// and classifies kube-proxy chains (KUBE-SVC-*, KUBE-SEP-*, service-*, ...)
// from rule comments and from chain-name hashes.
//
// An Index keeps one copy of each input and makes every Rule string a
// substring of it: a 100k-rule kube-proxy ruleset costs about 2.5 times its
// text. Malformed input is rejected whole with an error naming the line
// (a structure the parser cannot follow: a rule outside a table, unbalanced
// braces, a truncated listing); options and statements it does not know are
// not errors, they are simply not extracted.
//
// It also reads what network plugins' NetworkPolicy rules say
// (PolicyRuleFact, FirewallPolicies): kube-router's KUBE-ROUTER-*,
// KUBE-POD-FW-* and KUBE-NWPLCY-* chains and their comments, the ipset names
// kube-router hashes from a policy's rules (KubeRouterPolicySet), Calico's
// cali-* chains, tiers and policy comments (and its workload interface
// names), Cilium's CILIUM_* chains.
//
// The package states facts about rules (target, jump, comment, NAT address,
// Service, endpoint, endpoint share, policy role); pkg/explain turns them
// into words. Index.Hop answers everything about one hop's rule in one
// lookup, from facts computed once per chain.
package rules
