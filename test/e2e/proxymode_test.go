//go:build e2e

package e2e

import (
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// The same scenarios run against kube-proxy in iptables mode and in
// nftables mode (SVCTRACE_PROXY_MODE). Only the names differ: iptables mode
// DNATs in the nat table's KUBE-SERVICES -> KUBE-SVC-HASH chains, nftables
// mode in its own "kube-proxy" table, where the services chain's verdict
// maps go to service-HASH-ns/name/proto/port chains. What svctrace says
// about the packet (Service, endpoint, masquerade, verdict, reason) is the
// same in both; these helpers give each test the names of the mode under test.

func nftablesMode() bool { return env.ProxyMode == "nftables" }

// proxyNATTable is the table kube-proxy's DNAT chains are in.
func proxyNATTable() string {
	if nftablesMode() {
		return rules.KubeProxyTable
	}
	return "nat"
}

// servicesChain is kube-proxy's Service dispatch chain.
func servicesChain() string {
	if nftablesMode() {
		return "services"
	}
	return "KUBE-SERVICES"
}

// preroutingChain is the nat base chain at PREROUTING that kube-proxy hooks
// (in nftables mode its own; v1.36 names it nat-prerouting).
func preroutingChain() string {
	if nftablesMode() {
		return "nat-prerouting"
	}
	return "PREROUTING"
}

// splitServicePort splits "ns/name[:port]".
func splitServicePort(servicePort string) (ns, name, port string) {
	ns, rest, _ := strings.Cut(servicePort, "/")
	name, port, _ = strings.Cut(rest, ":")
	return ns, name, port
}

// svcChain is the chain that chooses an endpoint of a Service port
// ("ns/name" or "ns/name:port") for Cluster traffic policy.
func svcChain(servicePort, proto string) string {
	if nftablesMode() {
		ns, name, port := splitServicePort(servicePort)
		return rules.NftServiceChainName(rules.NftPrefixService, ns, name, proto, port)
	}
	return rules.ServiceChainName("KUBE-SVC-", servicePort, proto)
}

// extChain is a Service port's chain for external (NodePort, load-balancer)
// traffic.
func extChain(servicePort, proto string) string {
	if nftablesMode() {
		ns, name, port := splitServicePort(servicePort)
		return rules.NftServiceChainName(rules.NftPrefixExternal, ns, name, proto, port)
	}
	return rules.ServiceChainName("KUBE-EXT-", servicePort, proto)
}

// clusterIPChains are the chains a connection to a cluster IP crosses, in
// order, in proxyNATTable.
func clusterIPChains(servicePort, proto string) []string {
	return []string{servicesChain(), svcChain(servicePort, proto)}
}

// nodePortChains are the chains a NodePort connection (externalTrafficPolicy:
// Cluster) crosses: iptables mode goes through KUBE-NODEPORTS, nftables mode
// finds the NodePort in the services chain's @service-nodeports map.
func nodePortChains(servicePort, proto string) []string {
	if nftablesMode() {
		return []string{servicesChain(), extChain(servicePort, proto), svcChain(servicePort, proto)}
	}
	return []string{servicesChain(), "KUBE-NODEPORTS", extChain(servicePort, proto), svcChain(servicePort, proto)}
}

// loadBalancerChains are the chains a connection to a load-balancer IP
// (externalTrafficPolicy: Cluster) crosses: the IP is matched in the
// services chain (nftables mode: its @service-ips map) and goes to the
// external chain.
func loadBalancerChains(servicePort, proto string) []string {
	return []string{servicesChain(), extChain(servicePort, proto), svcChain(servicePort, proto)}
}

// noEndpointsRejectIn is the table:chain whose rule rejects a connection to
// a Service without endpoints: iptables mode's filter KUBE-SERVICES rule
// (with the Service in its comment), nftables mode's reject-chain (the
// @no-endpoint-services element, with the Service in its comment, sent the
// packet there).
func noEndpointsRejectIn() string {
	if nftablesMode() {
		return rules.KubeProxyTable + ":reject-chain"
	}
	return "filter:KUBE-SERVICES"
}
