// Package agent is the node side of svctrace: it runs as root in a
// privileged hostNetwork pod (the hidden `agent` subcommand), finds which
// iptables backend and kube-proxy mode the node uses, inserts raw-table TRACE
// rules that match only the traced Service addresses, reads the trace output,
// groups it into packets with package trace, annotates them with a ruleset
// snapshot (packages rules and explain) and streams NDJSON records (package
// record) on stdout: ready, then packet/lost/warning, then bye. Its log
// lines go to stderr, or with --log-stdout (the plugin's agents) to stdout
// between the records: pods/log merges the two streams, and the container
// runtime splits a line beyond its limit (16 KiB in containerd), so a stderr
// line written meanwhile would land inside a long record.
//
// Backends and sources. kube-proxy's chains are looked for in both
// iptables backends and both families (its canary in mangle, KUBE-SERVICES in
// nat; nftables mode: table ip|ip6 kube-proxy; ipvs: the kube-ipvs0 link).
// TRACE rules go into the raw table of every backend that holds them. Legacy
// TRACE output is read from /dev/kmsg (or a syslog file with --source
// kern.log); iptables-nft TRACE output exists only as nftables trace events,
// read from netlink group NFNLGRP_NFTRACE (package kernel's TraceSocket)
// and decoded by package trace. When both
// backends hold kube-proxy rules, both sources run and a packet is reported
// once per backend.
//
// A packet the Grouper cannot see end completes after a quiet window of
// 100 ms without records. The window starts at the record's arrival
// (GroupOptions.Clock), and it is only measured while the source has read
// everything queued (kernel.ReadGate): on a node short of CPU the agent
// may be held up for longer than the window, and the rest of a packet's
// records then wait in the kernel's queue. A packet whose last record
// leaves it inside a chain waits 1 s (GroupOptions.StallQuiet): the kernel
// goes on with the chain at once, so only a stalled CPU on the sender's
// side (a vCPU its host descheduled) makes that pause.
//
// Losses are never silent. /dev/kmsg numbers its records: a sequence gap is
// an exact count of records lost, counted from the last record logged
// before the session (read at open), so a ring overwritten before the
// agent's first read is counted too. Netlink reports only that its buffer
// overflowed (ENOBUFS); the number of traced packets whose trace never
// arrived is then counted at the end from the TRACE rules' packet counters
// (every traced packet starts at one of them).
//
// Cleanup. Every rule carries the comment "svctrace:<session>[:flags]" and is
// removed on every way out: end of --duration or --max-packets,
// SIGINT/SIGTERM, stdin EOF (--stdin-watch), errors; iptables-nft rules by
// handle in one nf_tables transaction per family (each handle checked to
// still hold the session's rule), the rest by their exact spec. The bye
// record says how many were removed and whether cleanup failed. Flags
// record what the session created besides its rules (an iptables-nft raw
// table or base chain, a bound nf_log logger) so whoever removes the rules
// can undo that too. A session id is BOOT.PIDNS.PID.START.DEADLINE: a new
// session sweeps the rules of sessions it can prove dead (another boot, past
// their deadline, or their process gone: the pid namespace is visible from
// a hostPID agent), and leaves, with a warning, those it cannot see.
// `agent --cleanup` removes every svctrace rule regardless. A legacy raw
// table the session had to create stays (the kernel cannot remove legacy
// tables), empty.
//
// Live explanations. Each packet record is annotated by package explain;
// the agent adds, as facts (record.Live) that package explain then words,
// what only the node can tell (rtnetlink in its own network namespace
// through package kernel, no ip(8)): the address a MASQUERADE gave the packet (the
// outgoing interface's primary address), and for a packet whose trace stops
// after PREROUTING the kernel's routing decision for it (RTM_GETROUTE with
// the input interface, source, mark and DNATed destination) and the
// rp_filter settings, with the route back to the source to tell the
// reverse-path filter from other refusals. With --probe-from-ip the probe
// connects from inside the network namespace that has that address, found
// among the node's processes (hostPID), from an OS thread locked into it.
//
// Across nodes. With --endpoint the raw PREROUTING chain also gets TRACE
// rules for this node's endpoints (IP and target port): a packet DNATed on
// another node arrives addressed to one of them, and its record says so
// (traced_by). A packet that leaves the node carries its egress: the
// outgoing interface and the kernel's route for its destination. Where the
// agent's network namespace is not the machine's first (several nodes on
// one kernel, whose log carries every namespace's TRACE lines), only this
// node's kernel log records are kept (ownership.go); the bye record counts
// the others.
//
// Reading the ruleset. The snapshot is taken after ready: every
// iptables-nft table at once, each whole (`iptables-nft -t T -S` and its
// `nft -a list table`), a big nat table chain by chain along the walk from
// the traced destinations (snapshot.go); legacy tables are streamed from
// iptables-legacy-save.
//
// Rewritten rules. kube-proxy's resyncs
// and CNIs rewrite rules under it (kube-router renames its policy chains at
// every sync, and syncs when the agent pods themselves start). An nft
// handle is never reused, so a trace event naming an iptables-nft rule the
// index lacks makes the agent read that table (nat: that chain) at once
// (chainfetch.go); every chain read stays in a session-long store
// (chainstore.go), and the writer builds the index again before writing a
// packet whose hops it lacked, re-reading the whole ruleset if that is not
// enough (refresh.go). --probe waits for the ruleset to settle first
// (watch.go). Why
// our own: no library turns iptables-nft's rules into iptables text but
// iptables-nft itself.
//
// Kernel I/O (netlink, nf_tables listings, setns, IPT_SO_GET_INFO) is
// package kernel's; this package orchestrates. It builds on Linux only.
//
// All host commands (iptables-*, ip6tables-*, nft) run from this package
// only, through its runner and go-iptables (which always passes --wait, so
// kube-proxy's iptables-restore is never raced); it never imports client-go.
package agent
