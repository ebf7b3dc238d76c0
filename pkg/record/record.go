package record

// Record types: the value of every record's "type" field.
const (
	TypePacket  = "packet"
	TypeLost    = "lost"
	TypeReady   = "ready"
	TypeWarning = "warning"
	TypeBye     = "bye"
	TypeSummary = "summary"
)

// Verdicts of a packet (Packet.Verdict).
const (
	VerdictAccept  = "ACCEPT"
	VerdictDrop    = "DROP"
	VerdictReject  = "REJECT"
	VerdictUnknown = "UNKNOWN"
)

// NAT kinds (NAT.Kind).
const (
	NATDNAT       = "DNAT"
	NATSNAT       = "SNAT"
	NATMasquerade = "MASQUERADE"
)

// Packet is one traced packet with its annotated path.
type Packet struct {
	Type string `json:"type"`
	// Node is the node the packet was traced on (live mode).
	Node string `json:"node,omitempty"`
	// Time is the wall-clock time of the first hop (RFC 3339, live mode).
	Time string `json:"time,omitempty"`
	// TraceID is the nftables trace id in hex, when the trace had one.
	TraceID string `json:"trace_id,omitempty"`
	Family  string `json:"family"` // "ipv4" | "ipv6"
	Proto   string `json:"proto"`  // "tcp" | "udp" | "icmp" | "icmpv6" | "sctp" | number
	// Src and Dst are the packet's addresses as first seen: "ip:port" or "ip".
	Src string `json:"src"`
	Dst string `json:"dst"`
	// Flags are the TCP flags as the kernel prints them ("SYN", "ACK PSH").
	Flags string `json:"flags,omitempty"`
	Hops  []Hop  `json:"hops"`
	NAT   []NAT  `json:"nat"`
	// Service is "ns/name" or "ns/name:port" when a kube-proxy chain names it.
	Service string `json:"service,omitempty"`
	// Endpoint is the "ip:port" the packet was DNATed to.
	Endpoint string `json:"endpoint,omitempty"`
	// EndpointPod is "ns/pod" of the endpoint (live mode, from the cluster).
	EndpointPod string `json:"endpoint_pod,omitempty"`
	// Verdict is ACCEPT, DROP, REJECT or UNKNOWN.
	Verdict string `json:"verdict"`
	// VerdictHop is the index in Hops of the hop that decided the verdict, or -1.
	VerdictHop int `json:"verdict_hop"`
	// Explain holds the plain-words analysis of the path.
	Explain *Explain `json:"explain,omitempty"`
}

// Hop is one step of a packet's path through the rules.
type Hop struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	Kind  string `json:"kind"` // "rule" | "return" | "policy"
	// Rule is the 1-based position of the rule in its chain, when known.
	Rule int `json:"rule,omitempty"`
	// Handle is the nftables rule handle, when known.
	Handle uint64 `json:"handle,omitempty"`
	// Text is the rule as iptables -S or nft prints it, when known.
	Text string `json:"text,omitempty"`
	// Verdict is what the hop did to the packet: ACCEPT, DROP, REJECT,
	// JUMP, GOTO, RETURN, CONTINUE, DNAT, SNAT, MASQUERADE, ..., when known.
	Verdict string `json:"verdict,omitempty"`
	// Target is the chain jumped to, or the NAT destination, when known.
	Target string `json:"target,omitempty"`
	// Meaning says what a kube-proxy (or other known) chain or rule means.
	Meaning string `json:"meaning,omitempty"`
	// Src and Dst are the packet's addresses at this hop, when they differ
	// from the previous hop's (after NAT).
	Src string `json:"src,omitempty"`
	Dst string `json:"dst,omitempty"`
	In  string `json:"in,omitempty"`
	Out string `json:"out,omitempty"`
	// Mark is the packet mark at this hop in hex, when non-zero.
	Mark string `json:"mark,omitempty"`
}

// NAT is one address translation applied to the packet.
type NAT struct {
	Kind  string `json:"kind"` // DNAT | SNAT | MASQUERADE
	Chain string `json:"chain,omitempty"`
	Table string `json:"table,omitempty"`
	Rule  int    `json:"rule,omitempty"`
	// To is the new address: "ip[:port]" when known.
	To string `json:"to,omitempty"`
	// Inferred is true when the translation was deduced from address changes
	// rather than read from a rule.
	Inferred bool `json:"inferred,omitempty"`
}

// Explain is the plain-words analysis of one packet's path.
type Explain struct {
	Summary string `json:"summary"`
	// Reason says why the packet ended as it did (drops, rejects, routing).
	Reason string `json:"reason,omitempty"`
	// SourceSeenByEndpoint is the source address the endpoint sees.
	SourceSeenByEndpoint string   `json:"source_seen_by_endpoint,omitempty"`
	Notes                []string `json:"notes,omitempty"`
}

// Lost reports records the kernel or the reader dropped.
type Lost struct {
	Type  string `json:"type"`
	Node  string `json:"node,omitempty"`
	Count uint64 `json:"count"`
	// Where says which source lost them ("kmsg", "netlink", "input").
	Where string `json:"where,omitempty"`
}

// Ready is sent by the agent once its TRACE rules are in place.
type Ready struct {
	Type    string   `json:"type"`
	Node    string   `json:"node,omitempty"`
	Session string   `json:"session"`
	Version string   `json:"version,omitempty"`
	Backend string   `json:"backend"` // legacy | nft | both
	Mode    string   `json:"mode"`    // kube-proxy mode: iptables | nftables | ipvs | none
	Source  string   `json:"source"`  // kmsg | kern.log | nftrace
	Rules   []string `json:"rules"`   // the TRACE rules added, as iptables -S prints them
}

// Warning is a non-fatal problem worth telling the user.
type Warning struct {
	Type    string `json:"type"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}

// Bye is the agent's last record, sent after cleanup.
type Bye struct {
	Type    string `json:"type"`
	Node    string `json:"node,omitempty"`
	Session string `json:"session,omitempty"`
	Packets int    `json:"packets"`
	Lost    uint64 `json:"lost"`
	// RulesRemoved counts the TRACE rules removed at cleanup.
	RulesRemoved int    `json:"rules_removed"`
	Reason       string `json:"reason,omitempty"` // duration | count | signal | stdin | error
	Error        string `json:"error,omitempty"`
}

// Summary aggregates a session (or an analyzed input): what the packets did.
type Summary struct {
	Type    string `json:"type"`
	Node    string `json:"node,omitempty"`
	Packets int    `json:"packets"`
	// Verdicts counts packets by verdict.
	Verdicts map[string]int `json:"verdicts"`
	// Endpoints is the spread of new connections over each Service's endpoints.
	Endpoints []EndpointShare `json:"endpoints"`
	// SNAT counts packets whose source was rewritten (SNAT or MASQUERADE).
	SNAT int `json:"snat"`
	// Drops counts dropped and rejected packets by reason.
	Drops []Count `json:"drops"`
	Lost  uint64  `json:"lost"`
}

// EndpointShare is how many packets one endpoint of a Service received.
type EndpointShare struct {
	Service  string `json:"service,omitempty"`
	Endpoint string `json:"endpoint"`
	Pod      string `json:"pod,omitempty"`
	Count    int    `json:"count"`
	// Share is Count over the Service's packets; Expected is the share the
	// rules give it (1/n for n endpoints), when known.
	Share    float64 `json:"share"`
	Expected float64 `json:"expected,omitempty"`
}

// Count is a reason and how many packets it applied to.
type Count struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}
