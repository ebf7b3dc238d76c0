// Package explain turns an engine Packet into a record.Packet: it annotates
// each hop with the rule from a ruleset snapshot and what the rule means,
// derives the NAT applied, the Service and endpoint, the verdict and which
// hop decided it, what each hop decided (Hop.Role) and the endpoint's share
// of new connections, and says in plain words why the packet ended as it
// did. Parallel annotates a file's packets on every core, in order.
// It derives the NetworkPolicy checks a packet went through (which plugin,
// pod, direction, policies, admitted or refused) and words them, also from
// the cluster's policy objects pkg/kube matched (WithPolicyMatches).
// It also aggregates packets into a session summary.
package explain
