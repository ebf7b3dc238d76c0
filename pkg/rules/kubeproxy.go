package rules

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strings"
)

// kube-proxy iptables-mode per-Service chain prefixes.
const (
	prefixSVC = "KUBE-SVC-"
	prefixSVL = "KUBE-SVL-"
	prefixEXT = "KUBE-EXT-"
	prefixFW  = "KUBE-FW-"
	prefixSEP = "KUBE-SEP-"
)

// servicePrefixes are the chains kube-proxy names by hashing the Service
// port name and protocol alone (KUBE-SEP- also hashes the endpoint).
var servicePrefixes = [...]string{prefixSVC, prefixSVL, prefixEXT, prefixFW}

// SvctraceName starts the names of svctrace's own tables, chains and rule
// comments; ClassifyName reports ChainSvctrace for them.
const SvctraceName = "svctrace"

// KubeProxyTable is the nft table kube-proxy's nftables mode owns (in the ip
// and ip6 families).
const KubeProxyTable = "kube-proxy"

// ServicePort is one port of a Service, as the plugin knows it from the
// cluster, so the Index can name kube-proxy chains whose comments are gone.
type ServicePort struct {
	Namespace, Name string
	// Port is the port's name ("" for an unnamed port), not its number.
	Port string
	// Proto is "tcp", "udp" or "sctp" (any case).
	Proto string
	// Endpoints are the ready endpoints as "ip:port" ("[ip6]:port" for IPv6,
	// as net.JoinHostPort writes them).
	Endpoints []string
}

// ServicePortName returns kube-proxy's name for a Service port:
// "ns/name:port", or "ns/name" when the port has no name.
func ServicePortName(namespace, name, port string) string {
	if port == "" {
		return namespace + "/" + name
	}
	return namespace + "/" + name + ":" + port
}

// ServiceChainName returns the iptables-mode chain kube-proxy creates for a
// Service port: prefix ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-" or "KUBE-FW-")
// plus the first 16 characters of base32(sha256(servicePortName + proto)).
// servicePortName is what ServicePortName returns; proto is "tcp", "udp" or
// "sctp".
func ServiceChainName(prefix, servicePortName, proto string) string {
	return prefix + hash16(servicePortName+proto)
}

// EndpointChainName returns the KUBE-SEP- chain kube-proxy creates for one
// endpoint ("ip:port", "[ip6]:port") of a Service port.
func EndpointChainName(servicePortName, proto, endpoint string) string {
	return prefixSEP + hash16(servicePortName+proto+endpoint)
}

// nftables-mode chain prefixes kube-proxy names per Service port.
const (
	NftPrefixService  = "service-"
	NftPrefixLocal    = "local-"
	NftPrefixExternal = "external-"
	NftPrefixFirewall = "firewall-"
)

// NftServiceChainName returns the nftables-mode chain kube-proxy creates
// for a Service port: prefix (NftPrefixService, ...) plus
// "HASH-ns/name/proto/port", HASH the first 8 characters of
// base32(sha256("ns/name/proto/port")); port is the port's name ("" for an
// unnamed port), proto "tcp", "udp" or "sctp".
func NftServiceChainName(prefix, namespace, name, proto, port string) string {
	base := namespace + "/" + name + "/" + proto + "/" + port
	sum := sha256.Sum256([]byte(base))
	var enc [56]byte
	base32.StdEncoding.Encode(enc[:], sum[:])
	return prefix + string(enc[:8]) + "-" + base
}

func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	var enc [56]byte // base32 of 32 bytes, padded
	base32.StdEncoding.Encode(enc[:], sum[:])
	return string(enc[:16])
}

// iptablesServicePrefix returns the per-Service prefix chain starts with, or "".
func iptablesServicePrefix(chain string) string {
	for _, p := range [...]string{prefixSVC, prefixSVL, prefixEXT, prefixFW, prefixSEP} {
		if len(chain) > len(p) && strings.HasPrefix(chain, p) {
			return p
		}
	}
	return ""
}

// ClassifyName says what a chain is from its name alone: kube-proxy's
// iptables-mode chains (KUBE-*), its nftables-mode chains (services,
// service-HASH-ns/name/proto/port, endpoint-..., ...: Service, Proto and
// Endpoint come from the name), the base chains, Calico's cali-*, Cilium's
// CILIUM_* and svctrace's own. KUBE-SVC-* and friends only hash their
// Service: Index.Chain resolves it.
func ClassifyName(chain string) ChainInfo {
	if info, ok := classifyIptables(chain); ok {
		return info
	}
	if info, ok := classifyNftMode(chain); ok {
		return info
	}
	return ChainInfo{}
}

// classifyIn classifies a chain of a given table: kube-proxy's nftables-mode
// names mean something only inside its own table, where every chain is
// kube-proxy's.
func classifyIn(table, chain string) ChainInfo {
	if hasSvctracePrefix(table) {
		return ChainInfo{Kind: ChainSvctrace}
	}
	if table == KubeProxyTable {
		if info, ok := classifyNftMode(chain); ok {
			return info
		}
		return ChainInfo{Kind: ChainKubeProxyOther}
	}
	info, _ := classifyIptables(chain)
	return info
}

func hasSvctracePrefix(s string) bool {
	return len(s) >= len(SvctraceName) && strings.EqualFold(s[:len(SvctraceName)], SvctraceName)
}

func classifyIptables(chain string) (ChainInfo, bool) {
	kind := ChainUnknown
	switch chain {
	case "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING":
		kind = ChainBuiltin
	case "KUBE-SERVICES":
		kind = ChainServices
	case "KUBE-NODEPORTS":
		kind = ChainNodePorts
	case "KUBE-MARK-MASQ":
		kind = ChainMarkMasq
	case "KUBE-POSTROUTING":
		kind = ChainPostrouting
	case "KUBE-FORWARD":
		kind = ChainForward
	case "KUBE-PROXY-FIREWALL":
		kind = ChainProxyFirewall
	case "KUBE-EXTERNAL-SERVICES":
		kind = ChainExternalServices
	case "KUBE-FIREWALL":
		kind = ChainKubeletFirewall
	default:
		switch iptablesServicePrefix(chain) {
		case prefixSVC:
			kind = ChainService
		case prefixSVL:
			kind = ChainServiceLocal
		case prefixEXT:
			kind = ChainExternal
		case prefixFW:
			kind = ChainFirewall
		case prefixSEP:
			kind = ChainEndpoint
		default:
			switch {
			case isKubeRouterChain(chain):
				kind = ChainKubeRouter
			case strings.HasPrefix(chain, "KUBE-"):
				// Canaries, KUBE-IPTABLES-HINT, KUBE-MARK-DROP, IPVS-mode chains.
				kind = ChainKubeProxyOther
			case strings.HasPrefix(chain, "cali-"):
				kind = ChainCalico
			case strings.HasPrefix(chain, "CILIUM_"):
				kind = ChainCilium
			case hasSvctracePrefix(chain):
				kind = ChainSvctrace
			}
		}
	}
	return ChainInfo{Kind: kind}, kind != ChainUnknown
}

// nftables-mode per-Service chain prefixes, each followed by an 8-character
// hash, "-", and "ns/name/proto/port" (endpoints add "__ip/port").
var nftServicePrefixes = [...]struct {
	prefix string
	kind   ChainKind
}{
	{NftPrefixService, ChainService},
	{NftPrefixLocal, ChainServiceLocal},
	{NftPrefixExternal, ChainExternal},
	{NftPrefixFirewall, ChainFirewall},
	{"endpoint-", ChainEndpoint},
}

func classifyNftMode(chain string) (ChainInfo, bool) {
	switch chain {
	case "services":
		return ChainInfo{Kind: ChainServices}, true
	case "nodeports":
		return ChainInfo{Kind: ChainNodePorts}, true
	case "mark-for-masquerade":
		return ChainInfo{Kind: ChainMarkMasq}, true
	case "masquerading":
		return ChainInfo{Kind: ChainPostrouting}, true
	case "firewall-check":
		return ChainInfo{Kind: ChainProxyFirewall}, true
	case "service-endpoints-check", "nodeport-endpoints-check", "endpoints-check":
		return ChainInfo{Kind: ChainEndpointsCheck}, true
	case "cluster-ips-check":
		return ChainInfo{Kind: ChainClusterIPsCheck}, true
	case "reject-chain":
		return ChainInfo{Kind: ChainReject}, true
	}
	if strings.IndexByte(chain, '/') >= 0 {
		for _, p := range nftServicePrefixes {
			if strings.HasPrefix(chain, p.prefix) {
				if info, ok := parseNftServiceChain(chain[len(p.prefix):], p.kind); ok {
					return info, true
				}
			}
		}
	}
	// kube-proxy's base chains are named after the table family they
	// emulate and the hook: filter-input, nat-output, filter-output-post-dnat...
	if strings.HasPrefix(chain, "filter-") || strings.HasPrefix(chain, "nat-") {
		return ChainInfo{Kind: ChainBuiltin}, true
	}
	return ChainInfo{}, false
}

// parseNftServiceChain parses "HASH8-ns/name/proto/port[__ip/port]".
func parseNftServiceChain(s string, kind ChainKind) (ChainInfo, bool) {
	if len(s) < 10 || s[8] != '-' || !isBase32(s[:8]) {
		return ChainInfo{}, false
	}
	s = s[9:]
	var ep string
	if kind == ChainEndpoint {
		i := strings.Index(s, "__")
		if i < 0 {
			return ChainInfo{}, false
		}
		s, ep = s[:i], s[i+2:]
	}
	parts := strings.Split(s, "/")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return ChainInfo{}, false
	}
	info := ChainInfo{
		Kind:    kind,
		Service: ServicePortName(parts[0], parts[1], parts[3]),
		Proto:   parts[2],
	}
	if kind == ChainEndpoint {
		// kube-proxy writes "ip/port", IPv6 colons turned into dots.
		i := strings.LastIndexByte(ep, '/')
		if i <= 0 {
			return ChainInfo{}, false
		}
		ip, port := ep[:i], ep[i+1:]
		addr, err := netip.ParseAddr(ip)
		if err != nil || !addr.Is4() {
			addr, err = netip.ParseAddr(strings.ReplaceAll(ip, ".", ":"))
			if err != nil {
				return ChainInfo{}, false
			}
		}
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return ChainInfo{}, false
		}
		if addr.Is6() {
			info.Endpoint = "[" + addr.String() + "]:" + port
		} else {
			info.Endpoint = addr.String() + ":" + port
		}
	}
	return info, true
}

func isBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// ServiceFromComment returns the Service port ("ns/name" or "ns/name:port") a
// kube-proxy rule comment names: "default/myapp cluster IP", "default/myapp
// -> 10.244.0.23:80", "default/kubernetes:https", "default/noep:web has no
// endpoints", "masquerade traffic for default/myapp-np external
// destinations", ... "" when the comment names none.
func ServiceFromComment(comment string) string {
	for comment != "" {
		var tok string
		if i := strings.IndexByte(comment, ' '); i >= 0 {
			tok, comment = comment[:i], comment[i+1:]
		} else {
			tok, comment = comment, ""
		}
		if isServicePortName(tok) {
			return tok
		}
	}
	return ""
}

// isServicePortName matches "ns/name" and "ns/name:port": a namespace is a
// DNS-1123 label, a Service name a DNS-1035 label, a port name lower-case
// alphanumerics and '-'.
func isServicePortName(s string) bool {
	slash := strings.IndexByte(s, '/')
	if slash <= 0 {
		return false
	}
	ns, rest := s[:slash], s[slash+1:]
	name, port := rest, ""
	if c := strings.IndexByte(rest, ':'); c >= 0 {
		name, port = rest[:c], rest[c+1:]
		if port == "" || len(port) > 63 || !allLowerAlnumDash(port) {
			return false
		}
	}
	return isLabel(ns) && isLabel(name) && name[0] >= 'a' && name[0] <= 'z'
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 || !allLowerAlnumDash(s) {
		return false
	}
	return s[0] != '-' && s[len(s)-1] != '-'
}

func allLowerAlnumDash(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// isHostPort reports whether s is "ip:port" or "[ip6]:port".
func isHostPort(s string) bool {
	_, err := netip.ParseAddrPort(s)
	return err == nil
}
