// Package agent is the node side of svctrace: it runs as root in a
// privileged hostNetwork pod (the hidden `agent` subcommand), finds which
// iptables backend and kube-proxy mode the node uses, inserts raw-table TRACE
// rules that match only the traced Service addresses, reads the trace output
// (the kernel log through /dev/kmsg or a syslog file for iptables-legacy;
// nftables trace events over netlink for iptables-nft), groups it into
// packets with package trace, annotates them with a ruleset snapshot
// (packages rules and explain) and streams NDJSON records (package record)
// on stdout.
//
// Every rule it adds carries the comment "svctrace:<session>[:flags]" and is
// removed by its exact spec on every way out (end of duration, packet count,
// SIGINT/SIGTERM, stdin EOF, errors). A session id embeds the boot id, the
// pid namespace, pid and start time of the agent and its deadline, so a later
// session can prove an older one dead and sweep its rules (see cleanup.go).
//
// All host commands (iptables-*, ip6tables-*, nft) run from this package
// only, through the Runner interface; it never imports client-go.
package agent
