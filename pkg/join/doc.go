// Package join turns the legs one packet leaves on several nodes into one
// packet record: the client node's hops (Service lookup, DNAT, masquerade)
// followed by the endpoint node's hops (the packet arriving for the
// endpoint), with a Crossing saying how it moved between them.
//
// It is its own package, not part of explain, because joining is about
// identity, not about stories: it decides which records are the same
// packet and merges their facts (hops, NAT, nodes, crossings); the
// sentences about what that means are explain's (explain.WithCluster).
// It is pure: no clocks of its own, no I/O, no client-go.
//
// Legs are matched on what NAT does not change (IPv4 ID or IPv6 flow label,
// TCP sequence number, ICMP id and sequence, the protocol) together with
// the destination after DNAT, which is the address the second node sees
// the packet arrive for. Never on wall-clock time: nodes' clocks differ.
// Time only bounds how long a leg waits for its other half (Options.Window,
// on the caller's clock of arrival); a leg whose other half never arrives
// is reported with the Crossing marked as not arrived, never dropped.
package join
