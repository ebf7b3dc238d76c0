// Package trace owns the netfilter trace event model, the parsers that turn
// raw trace output (kernel log records in their kmsg, dmesg, syslog and bare
// containers; xtables-monitor --trace; nft monitor trace) into Events, and
// the Grouper that assembles Events into one Packet per packet traversal.
//
// It knows nothing about Kubernetes or rulesets: see package rules for what a
// rule means and package explain for turning a Packet into a record.
package trace
