package rules

// Rule is one rule of a ruleset snapshot.
type Rule struct {
	// Text is the rule as iptables -S prints it ("-A CHAIN ...") or as nft
	// lists it (without the "# handle N" suffix).
	Text string
	// Target is the iptables target ("KUBE-SVC-...", "DNAT", "ACCEPT", "MARK",
	// ...) or the nft terminal statement's verdict ("jump", "goto", "accept",
	// "dnat", "masquerade", ...) with Jump holding the chain for jump/goto.
	Target string
	// Jump is the chain a jump/goto (or an iptables user-chain target) enters.
	Jump string
	// Goto reports an iptables -g / nft goto.
	Goto bool
	// Comment is the rule's comment, if any.
	Comment string
	// ToDestination / ToSource hold DNAT --to-destination / SNAT --to-source
	// ("ip:port") or nft "dnat to" / "snat to" arguments.
	ToDestination string
	ToSource      string
	// Probability is the statistic match's --probability, or 1/N for an
	// nft "numgen random mod N" choice (0 when absent).
	Probability float64
	// Handle is the nft handle (0 for iptables-save input).
	Handle uint64
	// Pos is the rule's 1-based position in its chain.
	Pos int
}

// ChainKind is what a chain is, as far as kube-proxy (or a known owner) is concerned.
type ChainKind string

const (
	ChainUnknown          ChainKind = ""
	ChainBuiltin          ChainKind = "builtin"           // PREROUTING, OUTPUT, ... and other base chains (hooked)
	ChainServices         ChainKind = "services"          // KUBE-SERVICES / services
	ChainNodePorts        ChainKind = "nodeports"         // KUBE-NODEPORTS / nodeports
	ChainService          ChainKind = "service"           // KUBE-SVC-* / service-*
	ChainServiceLocal     ChainKind = "service-local"     // KUBE-SVL-* / local-*
	ChainExternal         ChainKind = "external"          // KUBE-EXT-* / external-*
	ChainFirewall         ChainKind = "lb-firewall"       // KUBE-FW-* / firewall-*
	ChainEndpoint         ChainKind = "endpoint"          // KUBE-SEP-* / endpoint-*
	ChainMarkMasq         ChainKind = "mark-masq"         // KUBE-MARK-MASQ / mark-for-masquerade
	ChainPostrouting      ChainKind = "postrouting"       // KUBE-POSTROUTING / masquerading
	ChainForward          ChainKind = "forward"           // KUBE-FORWARD
	ChainProxyFirewall    ChainKind = "proxy-firewall"    // KUBE-PROXY-FIREWALL / firewall-check
	ChainExternalServices ChainKind = "external-services" // KUBE-EXTERNAL-SERVICES
	ChainKubeletFirewall  ChainKind = "kubelet-firewall"  // KUBE-FIREWALL
	ChainEndpointsCheck   ChainKind = "endpoints-check"   // service-endpoints-check / nodeport-endpoints-check (nftables mode)
	ChainClusterIPsCheck  ChainKind = "cluster-ips-check" // cluster-ips-check (nftables mode)
	ChainReject           ChainKind = "reject"            // reject-chain (nftables mode)
	ChainKubeProxyOther   ChainKind = "kube-proxy"        // other kube-proxy chains (canaries, hints, IPVS mode)
	ChainKubeRouter       ChainKind = "kube-router"       // KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-* (NetworkPolicy firewall)
	ChainCalico           ChainKind = "calico"            // cali-*
	ChainCilium           ChainKind = "cilium"            // CILIUM_*
	ChainSvctrace         ChainKind = "svctrace"          // svctrace's own TRACE rules/chains
)

// ChainInfo is what is known about a chain.
type ChainInfo struct {
	Kind ChainKind
	// Service is "ns/name:port" (or "ns/name" for an unnamed port) when the
	// chain belongs to one Service port.
	Service string
	// Proto is "tcp", "udp" or "sctp" when known.
	Proto string
	// Endpoint is "ip:port" ("[ip6]:port" for IPv6) for endpoint chains.
	Endpoint string
	// Hook is the netfilter hook a base chain hangs off ("prerouting",
	// "input", "forward", "output", "postrouting", "ingress", ...), empty for
	// chains only reachable by jump/goto. Set by Index.Chain from the ruleset.
	Hook string
}

// Family codes: 4 and 6 are what the rest of svctrace calls IPv4 and IPv6
// (ip / ip6 tables, iptables / ip6tables). nft tables of the other families
// are indexed under their NFPROTO numbers, which never collide with 4 or 6.
const (
	FamilyIPv4   uint8 = 4
	FamilyIPv6   uint8 = 6
	FamilyInet   uint8 = 1 // NFPROTO_INET: nft "inet" tables (both IPv4 and IPv6)
	FamilyARP    uint8 = 3 // NFPROTO_ARP
	FamilyNetdev uint8 = 5 // NFPROTO_NETDEV
	FamilyBridge uint8 = 7 // NFPROTO_BRIDGE
)
