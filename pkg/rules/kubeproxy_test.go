package rules

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The expected names are the ones real kube-proxy v1.36.3 created in the
// captures.
func TestServiceChainName(t *testing.T) {
	tests := []struct {
		prefix, ns, name, port, proto string
		want                          string
	}{
		{"KUBE-SVC-", "default", "myapp", "", "tcp", "KUBE-SVC-XJWXQFJLXSXKRMSG"},
		{"KUBE-SVC-", "default", "kubernetes", "https", "tcp", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		{"KUBE-SVC-", "default", "myapp-np", "", "tcp", "KUBE-SVC-Q3IGRLXQYQRXDATI"},
		{"KUBE-EXT-", "default", "myapp-np", "", "tcp", "KUBE-EXT-Q3IGRLXQYQRXDATI"},
		{"KUBE-SVC-", "default", "s0294", "http", "tcp", "KUBE-SVC-ZLKK5SCXWDM3X43Z"},
		{"KUBE-SVC-", "default", "s3374", "http", "tcp", "KUBE-SVC-22GGCTR5VPQZV5MU"},
		// CoreDNS's chains, the same in every cluster (the protocol is part
		// of the hash).
		{"KUBE-SVC-", "kube-system", "kube-dns", "dns", "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU"},
		{"KUBE-SVC-", "kube-system", "kube-dns", "dns-tcp", "tcp", "KUBE-SVC-ERIFXISQEP7F7OF4"},
		{"KUBE-SVC-", "kube-system", "kube-dns", "metrics", "tcp", "KUBE-SVC-JD5MR3NA4I4DYORP"},
	}
	for _, tt := range tests {
		spn := ServicePortName(tt.ns, tt.name, tt.port)
		if got := ServiceChainName(tt.prefix, spn, tt.proto); got != tt.want {
			t.Errorf("ServiceChainName(%q, %q, %q) = %q, want %q", tt.prefix, spn, tt.proto, got, tt.want)
		}
	}
}

func TestEndpointChainName(t *testing.T) {
	tests := []struct {
		spn, proto, endpoint string
		want                 string
	}{
		{"default/myapp", "tcp", "10.244.0.23:80", "KUBE-SEP-TJXBIUI2E22QKLD4"},
		{"default/myapp", "tcp", "10.244.0.24:80", "KUBE-SEP-4VYPMJP5OIECG6XZ"},
		{"default/myapp", "tcp", "10.244.0.25:80", "KUBE-SEP-CDTZ4LIGVJRJUPAW"},
		{"default/myapp-np", "tcp", "10.244.0.23:80", "KUBE-SEP-QGD65GNZYJWNXFTN"},
		{"default/kubernetes:https", "tcp", "10.199.0.2:6443", "KUBE-SEP-4UC2PMYWTATREZAU"},
	}
	for _, tt := range tests {
		if got := EndpointChainName(tt.spn, tt.proto, tt.endpoint); got != tt.want {
			t.Errorf("EndpointChainName(%q, %q, %q) = %q, want %q", tt.spn, tt.proto, tt.endpoint, got, tt.want)
		}
	}
}

func TestClassifyName(t *testing.T) {
	tests := []struct {
		chain string
		want  ChainInfo
	}{
		{"PREROUTING", ChainInfo{Kind: ChainBuiltin}},
		{"POSTROUTING", ChainInfo{Kind: ChainBuiltin}},
		{"KUBE-SERVICES", ChainInfo{Kind: ChainServices}},
		{"KUBE-NODEPORTS", ChainInfo{Kind: ChainNodePorts}},
		{"KUBE-SVC-XJWXQFJLXSXKRMSG", ChainInfo{Kind: ChainService}},
		{"KUBE-SVL-XJWXQFJLXSXKRMSG", ChainInfo{Kind: ChainServiceLocal}},
		{"KUBE-EXT-Q3IGRLXQYQRXDATI", ChainInfo{Kind: ChainExternal}},
		{"KUBE-FW-Q3IGRLXQYQRXDATI", ChainInfo{Kind: ChainFirewall}},
		{"KUBE-SEP-TJXBIUI2E22QKLD4", ChainInfo{Kind: ChainEndpoint}},
		{"KUBE-MARK-MASQ", ChainInfo{Kind: ChainMarkMasq}},
		{"KUBE-POSTROUTING", ChainInfo{Kind: ChainPostrouting}},
		{"KUBE-FORWARD", ChainInfo{Kind: ChainForward}},
		{"KUBE-PROXY-FIREWALL", ChainInfo{Kind: ChainProxyFirewall}},
		{"KUBE-EXTERNAL-SERVICES", ChainInfo{Kind: ChainExternalServices}},
		{"KUBE-FIREWALL", ChainInfo{Kind: ChainKubeletFirewall}},
		{"KUBE-PROXY-CANARY", ChainInfo{Kind: ChainKubeProxyOther}},
		{"KUBE-KUBELET-CANARY", ChainInfo{Kind: ChainKubeProxyOther}},
		{"KUBE-IPTABLES-HINT", ChainInfo{Kind: ChainKubeProxyOther}},
		{"KUBE-SVC-", ChainInfo{Kind: ChainKubeProxyOther}}, // no hash: not a Service chain
		{"services", ChainInfo{Kind: ChainServices}},
		{"nodeports", ChainInfo{Kind: ChainNodePorts}},
		{"mark-for-masquerade", ChainInfo{Kind: ChainMarkMasq}},
		{"masquerading", ChainInfo{Kind: ChainPostrouting}},
		{"firewall-check", ChainInfo{Kind: ChainProxyFirewall}},
		{"cluster-ips-check", ChainInfo{Kind: ChainClusterIPsCheck}},
		{"service-endpoints-check", ChainInfo{Kind: ChainEndpointsCheck}},
		{"nodeport-endpoints-check", ChainInfo{Kind: ChainEndpointsCheck}},
		{"reject-chain", ChainInfo{Kind: ChainReject}},
		{"filter-output-post-dnat", ChainInfo{Kind: ChainBuiltin}}, // v1.33 name
		{"filter-prerouting", ChainInfo{Kind: ChainBuiltin}},       // v1.33 name
		{"filter-prerouting-pre-dnat", ChainInfo{Kind: ChainBuiltin}},
		{"nat-postrouting", ChainInfo{Kind: ChainBuiltin}},
		{"service-6QYGQ5L4-default/myapp/tcp/", ChainInfo{Kind: ChainService, Service: "default/myapp", Proto: "tcp"}},
		{"service-2QRHZV4L-default/kubernetes/tcp/https", ChainInfo{Kind: ChainService, Service: "default/kubernetes:https", Proto: "tcp"}},
		{"local-6QYGQ5L4-default/myapp/udp/dns", ChainInfo{Kind: ChainServiceLocal, Service: "default/myapp:dns", Proto: "udp"}},
		{"external-BDXHFROF-default/myapp-np/tcp/", ChainInfo{Kind: ChainExternal, Service: "default/myapp-np", Proto: "tcp"}},
		{"firewall-BDXHFROF-default/myapp-np/tcp/", ChainInfo{Kind: ChainFirewall, Service: "default/myapp-np", Proto: "tcp"}},
		{"endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80", ChainInfo{Kind: ChainEndpoint, Service: "ns1/svc1:p80", Proto: "tcp", Endpoint: "10.180.0.1:80"}},
		{"endpoint-ABCDEFGH-ns1/svc1/sctp/__fd00.10.180..1/8080", ChainInfo{Kind: ChainEndpoint, Service: "ns1/svc1", Proto: "sctp", Endpoint: "[fd00:10:180::1]:8080"}},
		{"endpoint-5OJB2KTY-ns1/svc1/tcp/p80", ChainInfo{}},                  // no endpoint part
		{"endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/http", ChainInfo{}}, // port not a number
		{"service-lowercase-default/myapp/tcp/", ChainInfo{}},                // not a hash
		{"service-6QYGQ5L4-default/myapp", ChainInfo{}},                      // too few parts
		{"cali-INPUT", ChainInfo{Kind: ChainCalico}},
		{"cali-fw-cali1234", ChainInfo{Kind: ChainCalico}},
		{"CILIUM_OUTPUT_nat", ChainInfo{Kind: ChainCilium}},
		{"SVCTRACE-PRE", ChainInfo{Kind: ChainSvctrace}},
		{"svctrace-output", ChainInfo{Kind: ChainSvctrace}},
		{"DOCKER", ChainInfo{}},
		{"", ChainInfo{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ClassifyName(tt.chain)); diff != "" {
			t.Errorf("ClassifyName(%q) mismatch (-want +got):\n%s", tt.chain, diff)
		}
	}
}

func TestServiceFromComment(t *testing.T) {
	tests := []struct{ comment, want string }{
		{"default/myapp cluster IP", "default/myapp"},
		{"default/myapp -> 10.244.0.23:80", "default/myapp"},
		{"default/kubernetes:https", "default/kubernetes:https"},
		{"default/noep:web has no endpoints", "default/noep:web"},
		{"default/noep:web has no local endpoints", "default/noep:web"},
		{"masquerade traffic for default/myapp-np external destinations", "default/myapp-np"},
		{"other traffic to kube-system/lb:p-443 will be dropped by KUBE-PROXY-FIREWALL", "kube-system/lb:p-443"},
		{"ns1/svc1:p80 loadbalancer IP", "ns1/svc1:p80"},
		{"kubernetes service portals", ""},
		{"block incoming localnet connections", ""},
		{"kubernetes service nodeports; NOTE: this must be the last rule in this chain", ""},
		{"10.0.0.0/8 is private", ""},     // a CIDR, not a Service
		{"default/1abc cluster IP", ""},   // a Service name starts with a letter
		{"Default/myapp", ""},             // upper case
		{"default/myapp: cluster IP", ""}, // empty port name
		{"default/-myapp", ""},            // label starts with '-'
		{"svctrace-cap", ""},              // no slash
		{"1-ns/a-b:c-d", "1-ns/a-b:c-d"},  // namespaces may start with a digit
		{"", ""},
	}
	for _, tt := range tests {
		if got := ServiceFromComment(tt.comment); got != tt.want {
			t.Errorf("ServiceFromComment(%q) = %q, want %q", tt.comment, got, tt.want)
		}
	}
}

func TestLearnServicesWithoutRules(t *testing.T) {
	ix := NewIndex()
	ix.LearnServices([]ServicePort{{
		Namespace: "default", Name: "myapp", Proto: "TCP",
		Endpoints: []string{"10.244.0.23:80"},
	}})
	// The index knows no rules yet: the answer comes from the hash alone.
	tests := []struct {
		chain string
		want  ChainInfo
	}{
		{myappSVC, ChainInfo{Kind: ChainService, Service: "default/myapp", Proto: "tcp"}},
		{"KUBE-SVL-XJWXQFJLXSXKRMSG", ChainInfo{Kind: ChainServiceLocal, Service: "default/myapp", Proto: "tcp"}},
		{"KUBE-FW-XJWXQFJLXSXKRMSG", ChainInfo{Kind: ChainFirewall, Service: "default/myapp", Proto: "tcp"}},
		{myappSEP23, ChainInfo{Kind: ChainEndpoint, Service: "default/myapp", Proto: "tcp", Endpoint: "10.244.0.23:80"}},
		{"KUBE-SEP-4VYPMJP5OIECG6XZ", ChainInfo{Kind: ChainEndpoint}}, // .24 was not learned
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ix.Chain(4, "nat", tt.chain)); diff != "" {
			t.Errorf("Chain(%q) mismatch (-want +got):\n%s", tt.chain, diff)
		}
	}
}

func TestNftServiceChainName(t *testing.T) {
	// Names from kube-proxy's own nftables-mode test rulesets and the capture.
	for _, tt := range []struct{ prefix, ns, name, proto, port, want string }{
		{NftPrefixService, "ns1", "svc1", "tcp", "p80", "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{NftPrefixExternal, "ns2", "svc2", "tcp", "p80", "external-42NFTM6N-ns2/svc2/tcp/p80"},
		{NftPrefixFirewall, "ns5", "svc5", "tcp", "p80", "firewall-HVFWP5L3-ns5/svc5/tcp/p80"},
		{NftPrefixService, "default", "myapp", "tcp", "", "service-6QYGQ5L4-default/myapp/tcp/"},
	} {
		if got := NftServiceChainName(tt.prefix, tt.ns, tt.name, tt.proto, tt.port); got != tt.want {
			t.Errorf("NftServiceChainName(%q, %q, %q, %q, %q) = %q, want %q", tt.prefix, tt.ns, tt.name, tt.proto, tt.port, got, tt.want)
		}
	}
}
