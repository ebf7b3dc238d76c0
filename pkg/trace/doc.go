// Package trace owns the netfilter trace event model, the parsers that turn
// raw trace output (kernel log records in their kmsg, dmesg, syslog and bare
// containers; xtables-monitor --trace; nft monitor trace) into Events, and
// the Grouper that assembles Events into one Packet per packet traversal.
//
// It knows nothing about Kubernetes or rulesets: see package rules for what a
// rule means and package explain for turning a Packet into a record.
//
// # Decoding
//
// A Decoder turns one line into an Event (NewDecoder, Decoder.Decode). The
// Format is given (ParseFormat for a --format flag) or detected from the
// first recognisable line (FormatAuto, DetectFormat). Lines that are not
// trace records are skipped, records that do not parse are counted as
// malformed; kmsg sequence gaps are counted as lost records (Decoder.Gap,
// Decoder.Lost). xtables-monitor and nft monitor print a packet header once
// per base chain: the Decoder keeps it per trace id and copies it into the
// id's records. Strings are interned, so decoding allocates nothing once the
// names were seen.
//
// On Linux, NetlinkDecoder decodes the binary nftables trace events
// (NFT_MSG_TRACE) the agent reads from netlink, the same way, and
// EndFolder turns their end-of-chain events into the returns and policies
// the text formats show (told which chains are base chains, it never takes
// a base chain's end for a return because its policy event was not queued
// yet).
//
// # Grouping
//
// A Grouper (NewGrouper, Grouper.Add) assembles Events into Packets: by trace
// id for nft input, else by what NAT leaves alone (IPv4 ID or IPv6 flow
// label, TCP sequence or ICMP id and sequence, length) while following DNAT
// and SNAT address changes. The kernel can give a bridged packet a new nft
// trace id between hooks: a record with an id no packet in flight has joins
// the packet of another id that it shows (same identity, addresses as NAT
// left them) at a later hook. The Grouper tracks each packet's hook and
// table (see hooks.go) to tell a new traversal from the same one, reports
// each hop's hook (Hop.Hook), and emits a packet
// as soon as it can produce no more records (a drop, or the end of the last
// table of the last hook it can reach), after a quiet window on the kernel
// clock or on the clock given to Grouper.Tick, or at Grouper.Flush. Records
// stamped when they were read (GroupOptions.ReadTimes) count on Tick's clock
// alone, so a reader held up mid-packet does not cut the packet in two; a
// packet whose trace leaves it inside a chain can get a longer window
// (GroupOptions.StallQuiet), so a sender held up mid-packet does not either.
// Memory is bounded (GroupOptions.MaxInFlight, MaxHops, MaxHopsInFlight).
//
// Legacy traces do not say which target a matched rule ran: without help the
// Grouper treats policies as ACCEPT and rules as non-terminating, and a
// packet whose last record is, say, a MASQUERADE rule completes on the quiet
// window. GroupOptions.Ending lets a ruleset-aware caller say what a rule
// does.
//
// ReadAll ties a Decoder and a Grouper to an io.Reader for finished input;
// Follow does the same for live input, ticking the Grouper on the monotonic
// clock and stopping when its context ends.
package trace
