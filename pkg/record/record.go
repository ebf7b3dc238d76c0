package record

// Record types: the value of every record's "type" field.
const (
	TypePacket  = "packet"
	TypeLost    = "lost"
	TypeReady   = "ready"
	TypeWarning = "warning"
	TypeBye     = "bye"
	TypeSummary = "summary"
	// TypeAttached is the agent's answer to the plugin's first stdin line.
	TypeAttached = "attached"
)

// The words the plugin writes to an agent's stdin, one per line.
const (
	// WordHello is the plugin's first line: the agent answers it with an
	// Attached record.
	WordHello = "hello"
	// WordProbe releases a probe held back until every agent is ready.
	WordProbe = "probe"
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

	// What NAT leaves alone, from the packet as first seen: the plugin joins
	// the legs one packet leaves on several nodes on them. IPID is the IPv4
	// identification or the IPv6 flow label.
	IPID    uint32 `json:"ip_id,omitempty"`
	TCPSeq  uint32 `json:"tcp_seq,omitempty"`
	ICMPID  uint16 `json:"icmp_id,omitempty"`
	ICMPSeq uint16 `json:"icmp_seq,omitempty"`
	// TracedBy says which of the agent's TRACE rules caught the packet:
	// TracedService (a Service address or NodePort) or TracedEndpoint (an
	// endpoint's own address, on the endpoint's node: packets DNATed on
	// another node, or sent straight to the pod).
	TracedBy string `json:"traced_by,omitempty"`
	// Egress is where the packet left the node, when it did (live): the
	// outgoing interface and the route the agent looked up for it.
	Egress *Egress `json:"egress,omitempty"`
	// Nodes are the nodes the packet was traced on, in the order it
	// crossed them (live).
	Nodes []string `json:"nodes,omitempty"`
	// EndpointNode is the node of Endpoint (live).
	EndpointNode string `json:"endpoint_node,omitempty"`
	// Crossings are the packet's moves from one traced node to the next
	// (live, joined by the plugin), including one that never arrived.
	Crossings []Crossing `json:"crossings,omitempty"`
	// DirectToEndpoint is set on a packet caught only by an endpoint rule
	// whose other half no traced node reported: it was addressed to the
	// endpoint itself, not to the Service (or came from an untraced node).
	DirectToEndpoint bool `json:"direct_to_endpoint,omitempty"`
	// Live is what the node's kernel said about the packet besides its
	// trace (live mode, when there is something to say).
	Live *Live `json:"live,omitempty"`
}

// Which TRACE rule caught a packet (Packet.TracedBy).
const (
	TracedService  = "service"
	TracedEndpoint = "endpoint"
)

// Egress is where a packet left its node: the facts of the route that sent
// it there, as the node's kernel answers `ip route get`.
type Egress struct {
	// Out is the outgoing interface.
	Out string `json:"out"`
	// Dst is the address the route was looked up for (after DNAT).
	Dst string `json:"dst"`
	// Via is the next hop (gateway), "" when Dst is on the link.
	Via string `json:"via,omitempty"`
	// Route is the matching route, as ip route prints it ("10.244.1.0/24
	// via 10.199.0.3 dev eth0 proto 17").
	Route string `json:"route,omitempty"`
	// Src is the packet's source when it left (after SNAT), when known.
	Src string `json:"src,omitempty"`
}

// Crossing is a packet's move from one node to another.
type Crossing struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Out, Via and Route say how it left From (see Egress).
	Out   string `json:"out,omitempty"`
	Via   string `json:"via,omitempty"`
	Route string `json:"route,omitempty"`
	// Dst is the address it was sent to.
	Dst string `json:"dst"`
	// In is the interface it arrived on at To.
	In string `json:"in,omitempty"`
	// Arrived is false when To's agent never reported the packet within
	// the join window.
	Arrived bool `json:"arrived"`
	// Traced is false when To has no agent (following is off or capped):
	// nothing could be seen there.
	Traced bool `json:"traced"`
	// Hop is the index in Packet.Hops of the first hop on To (-1 when it
	// did not arrive).
	Hop int `json:"hop"`
}

// Live holds the facts the agent reads from the node's kernel for one
// packet; package explain words them.
type Live struct {
	// Route is the kernel's routing decision for a packet whose trace
	// stops after PREROUTING.
	Route *RouteCheck `json:"route,omitempty"`
	// RouteError says why that route could not be looked up.
	RouteError string `json:"route_error,omitempty"`
	// MasqueradeIface is the interface a MASQUERADE took the packet's new
	// source from; MasqueradeSource is that address, or MasqueradeError
	// says why it could not be read.
	MasqueradeIface  string `json:"masquerade_iface,omitempty"`
	MasqueradeSource string `json:"masquerade_source,omitempty"`
	MasqueradeError  string `json:"masquerade_error,omitempty"`
}

// RouteLookup is one route lookup asked of the node's kernel (rtnetlink
// RTM_GETROUTE, what `ip route get` asks) and its answer.
type RouteLookup struct {
	// The lookup: source and destination addresses, the interface the
	// packet came in on (a lookup for a received packet) and its mark in
	// hex.
	Src  string `json:"src,omitempty"`
	Dst  string `json:"dst"`
	In   string `json:"in,omitempty"`
	Mark string `json:"mark,omitempty"`
	// Route is the route found, as `ip route get` prints it
	// ("10.0.1.12 via 10.0.0.1 dev eth0", "local 10.0.1.12 dev lo"); Dev
	// is the interface it leaves through.
	Route string `json:"route,omitempty"`
	Dev   string `json:"dev,omitempty"`
	// Error is the kernel's refusal in its own words ("invalid
	// cross-device link", "network is unreachable"), Errno its name
	// (EXDEV, EINVAL, ENETUNREACH, ...); both empty when a route was found.
	Error string `json:"error,omitempty"`
	Errno string `json:"errno,omitempty"`
}

// RouteCheck is the routing decision for a received packet, with what
// tells the reverse-path filter from other refusals.
type RouteCheck struct {
	RouteLookup
	// RPFilter holds net.ipv4.conf.{all,IN}.rp_filter as read on the node
	// (the kernel applies the larger).
	RPFilter map[string]int `json:"rp_filter,omitempty"`
	// Back is the route back to the source, looked up when the kernel
	// refused an IPv4 packet with EXDEV or EINVAL (what the reverse-path
	// filter answers).
	Back *RouteLookup `json:"back,omitempty"`
}

// Hop is one step of a packet's path through the rules.
type Hop struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	Kind  string `json:"kind"` // "rule" | "return" | "policy"
	// Rule is the 1-based position of the rule in its chain, when known.
	Rule int `json:"rule,omitempty"`
	// Node is the node the hop was traced on (live).
	Node string `json:"node,omitempty"`
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
	// Hook is the netfilter hook the hop ran in (PREROUTING, INPUT,
	// FORWARD, OUTPUT, POSTROUTING), when known.
	Hook string `json:"hook,omitempty"`
	// Role says what the hop decided for the packet (Role* constants);
	// empty for hops that only passed it on.
	Role string `json:"role,omitempty"`
	// Share is, for the hop that chose the endpoint, the part of the
	// Service's new connections the rules send to that endpoint (1/3 for
	// each of three endpoints), when the ruleset tells.
	Share float64 `json:"share,omitempty"`
}

// Hop roles (Hop.Role): what a hop decided.
const (
	// RoleService: the Service port matched (cluster IP, NodePort,
	// external or load-balancer IP).
	RoleService = "service"
	// RoleMasqueradeMark: the packet was marked to be masqueraded later.
	RoleMasqueradeMark = "masquerade-mark"
	// RoleEndpoint: the rule chose the endpoint.
	RoleEndpoint = "endpoint"
	// RoleDNAT: the destination was translated.
	RoleDNAT = "dnat"
	// RoleSNAT: the source was translated (SNAT or MASQUERADE).
	RoleSNAT = "snat"
	// RoleAccept: a rule accepted the packet in its table.
	RoleAccept = "accept"
)

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
	// Retransmit: a TCP SYN of a connection conntrack already tracked,
	// sent again because the first SYN or its answer was lost or late.
	Retransmit bool `json:"retransmit,omitempty"`
	// SourceSeenByEndpoint is the source address the endpoint sees.
	// It is what the endpoint's node observed when that node was traced,
	// else what the rules on the way predict.
	SourceSeenByEndpoint string `json:"source_seen_by_endpoint,omitempty"`
	// SourcePredicted is what the earlier node's rules predicted the
	// endpoint would see, when the endpoint's node observed another source.
	SourcePredicted string   `json:"source_predicted,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	// Policy is the NetworkPolicy check that decided the packet: the one
	// that refused it (DROP/REJECT), else the last one that admitted it.
	Policy *PolicyCheck `json:"policy,omitempty"`
	// Policies are all the NetworkPolicy checks the packet went through,
	// in path order (a client's egress, then the endpoint's ingress).
	Policies []PolicyCheck `json:"policies,omitempty"`
}

// Policy check effects (PolicyCheck.Effect).
const (
	PolicyAdmitted = "admitted"  // a policy rule (or the node-local exception) let it through
	PolicyRefused  = "refused"   // policies select the pod and none admitted it
	PolicyNone     = "no-policy" // no policy selects the pod in this direction: allowed
	PolicyNotReady = "not-ready" // the pod's firewall was not programmed yet (kube-router default deny)
)

// PolicyCheck is one NetworkPolicy decision in a packet's path: a network
// plugin's firewall for one pod and one direction.
type PolicyCheck struct {
	// CNI is the plugin that enforces it: kube-router, calico, cilium.
	CNI string `json:"cni"`
	// Direction is ingress (the pod receives the packet) or egress (the
	// pod sends it).
	Direction string `json:"direction,omitempty"`
	// Pod is "ns/name" of the pod the policies select, when known.
	Pod string `json:"pod,omitempty"`
	// Iface is the pod's interface when only that is known (Calico).
	Iface string `json:"iface,omitempty"`
	// Effect is admitted, refused, no-policy or not-ready.
	Effect string `json:"effect"`
	// Namespace and Name are the deciding policy: the one that admitted
	// the packet, or the first of Policies for a refusal.
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	// Policies are every policy ("ns/name") selecting Pod in Direction.
	Policies []string `json:"policies,omitempty"`
	// Match is what the admitting rule matched the peer on: pods, any,
	// cidr (kube-router), local-node.
	Match string `json:"match,omitempty"`
	// Rule is the 1-based index of the admitting rule in the policy's
	// ingress (or egress) list, when the plugin could tell (live, with the
	// cluster's NetworkPolicies).
	Rule int `json:"rule,omitempty"`
	// Chain is the pod's firewall chain.
	Chain string `json:"chain,omitempty"`
	// Hop is the index in the packet's hops of the deciding hop.
	Hop int `json:"hop"`
	// Peer is the other side as the policies see it: the source address
	// for ingress, the destination for egress.
	Peer string `json:"peer,omitempty"`
	// PeerPod is "ns/name" of the peer pod, when known (live).
	PeerPod string `json:"peer_pod,omitempty"`
	// Why says, for a refusal, why no rule of each policy matched the
	// peer (live, from the cluster's NetworkPolicies).
	Why []string `json:"why,omitempty"`
	// Missing names the permission the plugin lacked to read the
	// policies ("list networking.k8s.io/networkpolicies in ns").
	Missing string `json:"missing_permission,omitempty"`
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

// Attached says the agent read its first line on stdin: the plugin's
// pods/attach stream reaches the container, so when the plugin goes away
// the container's stdin closes (stdinOnce) and the agent cleans up. An
// attach the client sees established proves less: the API server upgrades
// the client's connection before it dials the kubelet.
type Attached struct {
	Type string `json:"type"`
	Node string `json:"node,omitempty"`
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
	RulesRemoved int `json:"rules_removed"`
	// ForeignRecords counts kernel log records the agent left out as
	// another node's (nodes sharing one kernel, see the README).
	ForeignRecords uint64 `json:"foreign_records,omitempty"`
	Reason         string `json:"reason,omitempty"` // duration | count | signal | stdin | error
	Error          string `json:"error,omitempty"`
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
	// Nodes is the same spread per endpoint node (live, when the
	// endpoints' nodes are known).
	Nodes []NodeShare `json:"nodes,omitempty"`
	// SNAT counts packets whose source was rewritten (SNAT or MASQUERADE).
	SNAT int `json:"snat"`
	// Retransmits counts SYN retransmissions (Explain.Retransmit): not new
	// connections, but a sign that packets are lost on the way.
	Retransmits int `json:"retransmits,omitempty"`
	// Drops counts dropped and rejected packets by reason.
	Drops []Count `json:"drops"`
	// PolicyDrops counts refused packets by the policies that selected
	// the refusing pod.
	PolicyDrops []PolicyDrop `json:"policy_drops,omitempty"`
	Lost        uint64       `json:"lost"`
}

// PolicyDrop is how many packets one pod's policies refused in one direction.
type PolicyDrop struct {
	// Policies are the policies ("ns/name") that selected the pod.
	Policies  []string `json:"policies"`
	Direction string   `json:"direction,omitempty"`
	Pod       string   `json:"pod,omitempty"`
	Count     int      `json:"count"`
}

// EndpointShare is how many packets one endpoint of a Service received.
type EndpointShare struct {
	Service  string `json:"service,omitempty"`
	Endpoint string `json:"endpoint"`
	Pod      string `json:"pod,omitempty"`
	// Node is the endpoint's node (live).
	Node  string `json:"node,omitempty"`
	Count int    `json:"count"`
	// Share is Count over the Service's packets; Expected is the share the
	// rules give it (from the endpoint choice's Hop.Share, else 1/n for n
	// endpoints), when known.
	Share    float64 `json:"share"`
	Expected float64 `json:"expected,omitempty"`
}

// Count is a reason and how many packets it applied to.
type Count struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// NodeShare is how many new connections the endpoints on one node received.
type NodeShare struct {
	Service string `json:"service,omitempty"`
	Node    string `json:"node"`
	// Endpoints is how many of the Service's endpoints the node hosts.
	Endpoints int `json:"endpoints"`
	Count     int `json:"count"`
	// Share is Count over the Service's packets; Expected is Endpoints over
	// the Service's endpoints (kube-proxy balances over endpoints, not nodes).
	Share    float64 `json:"share"`
	Expected float64 `json:"expected,omitempty"`
}
