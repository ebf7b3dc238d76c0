package explain

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

func TestWithCluster(t *testing.T) {
	cluster := Cluster{
		NodeByIP:      map[string]string{"10.199.0.2": "node1", "10.199.0.3": "node2"},
		EndpointNodes: []string{"node2"},
		ClusterIPs:    []string{"10.96.0.10"},
	}
	local := cluster
	local.ExternalLocal = true
	crossed := []record.Crossing{{From: "node1", To: "node2", Out: "eth0", Via: "10.199.0.3", Route: "10.244.1.0/24 via 10.199.0.3 dev eth0", Dst: "10.244.1.5:80", In: "eth0", Arrived: true, Traced: true, Hop: 2}}
	hops := func(secondSrc string) []record.Hop {
		return []record.Hop{
			{Table: "nat", Chain: "KUBE-SVC-X", Node: "node1", Role: record.RoleMasqueradeMark, Meaning: "source outside the cluster CIDR: mark for masquerade"},
			{Table: "nat", Chain: "KUBE-SEP-X", Node: "node1", Dst: "10.244.1.5:80"},
			{Table: "raw", Chain: "PREROUTING", Node: "node2", Src: secondSrc},
			{Table: "filter", Chain: "FORWARD", Node: "node2"},
		}
	}
	tests := []struct {
		name string
		c    Cluster
		rec  record.Packet
		want record.Explain
	}{
		{
			name: "--probe from node1: masqueraded, node2 observes node1's address",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1", "node2"}, Src: "10.199.0.2:5000", Dst: "10.96.0.10:80", Endpoint: "10.244.1.5:80", EndpointNode: "node2",
				Verdict: "ACCEPT", Hops: hops(""), Crossings: crossed, NAT: []record.NAT{{Kind: "MASQUERADE", To: "10.199.0.2"}},
				Explain: &record.Explain{Summary: "Service default/x; source masqueraded at POSTROUTING; ACCEPT", SourceSeenByEndpoint: "10.199.0.2"}},
			want: record.Explain{
				Summary:              "Service default/x; source masqueraded at POSTROUTING; left node1 via eth0 for 10.199.0.3 (route 10.244.1.0/24 via 10.199.0.3 dev eth0) and arrived at node2 on eth0; ACCEPT on node2",
				SourceSeenByEndpoint: "10.199.0.2",
				Notes:                []string{"masqueraded on node1 (source outside the cluster CIDR): replies must come back through node1, so the endpoint on node2 sees 10.199.0.2, the address the node sent it from"},
			},
		},
		{
			name: "pod on node1: not masqueraded, node2 observes the pod",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1", "node2"}, Src: "10.244.0.7:5000", Dst: "10.96.0.10:80", Endpoint: "10.244.1.5:80", EndpointNode: "node2",
				Verdict: "ACCEPT", Hops: hops(""), Crossings: crossed, NAT: []record.NAT{{Kind: "DNAT"}},
				Explain: &record.Explain{Summary: "DNAT; ACCEPT", SourceSeenByEndpoint: "10.244.0.7"}},
			want: record.Explain{
				Summary:              "DNAT; left node1 via eth0 for 10.199.0.3 (route 10.244.1.0/24 via 10.199.0.3 dev eth0) and arrived at node2 on eth0; ACCEPT on node2",
				SourceSeenByEndpoint: "10.244.0.7",
				Notes:                []string{"not masqueraded on node1: nothing marked the connection for SNAT (a pod source, inside the cluster CIDR, reaching a ClusterIP needs none), so the endpoint on node2 sees the client 10.244.0.7 itself"},
			},
		},
		{
			name: "a SYN retransmission from node1: its NAT is conntrack's, the rules say nothing of its source",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1", "node2"}, Src: "10.199.0.2:5000", Dst: "10.96.0.10:80", Flags: "SYN", Endpoint: "10.244.1.5:80", EndpointNode: "node2",
				Verdict: "ACCEPT", Hops: append([]record.Hop{{Table: "raw", Chain: "OUTPUT", Node: "node1"}, {Table: "filter", Chain: "OUTPUT", Node: "node1", Dst: "10.244.1.5:80"}}, hops("10.199.0.2:5000")[2:]...),
				Crossings: crossed,
				NAT:       []record.NAT{{Kind: "DNAT", To: "10.244.1.5:80", Inferred: true}},
				Explain:   &record.Explain{Summary: "SYN retransmission: translated 10.96.0.10:80 -> 10.244.1.5:80 by conntrack (the nat table saw the connection's first SYN); ACCEPT", Retransmit: true}},
			want: record.Explain{
				Summary:              "SYN retransmission: translated 10.96.0.10:80 -> 10.244.1.5:80 by conntrack (the nat table saw the connection's first SYN); left node1 via eth0 for 10.199.0.3 (route 10.244.1.0/24 via 10.199.0.3 dev eth0) and arrived at node2 on eth0; ACCEPT on node2",
				Retransmit:           true,
				SourceSeenByEndpoint: "10.199.0.2",
				Notes:                []string{"conntrack gave this retransmission the first SYN's translation, so the endpoint on node2 sees 10.199.0.2"},
			},
		},
		{
			name: "observed and predicted differ",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1", "node2"}, Src: "10.244.0.7:5000", Dst: "10.96.0.10:80", Endpoint: "10.244.1.5:80", EndpointNode: "node2",
				Verdict: "ACCEPT", Hops: hops("10.199.0.9:7"), Crossings: crossed,
				Explain: &record.Explain{Summary: "ACCEPT", SourceSeenByEndpoint: "10.244.0.7"}},
			want: record.Explain{
				Summary:              "left node1 via eth0 for 10.199.0.3 (route 10.244.1.0/24 via 10.199.0.3 dev eth0) and arrived at node2 on eth0; ACCEPT on node2",
				SourceSeenByEndpoint: "10.199.0.9",
				SourcePredicted:      "10.244.0.7",
				Notes:                []string{"node1's rules predicted the endpoint would see 10.244.0.7, but node2 observed 10.199.0.9: something on the way rewrote the source"},
			},
		},
		{
			name: "NodePort on node1, externalTrafficPolicy Cluster, forwarded to node2 and SNATed",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1", "node2"}, Src: "10.199.0.1:5000", Dst: "10.199.0.2:30080", Endpoint: "10.244.1.5:80", EndpointNode: "node2",
				Verdict: "ACCEPT", Hops: hops("10.199.0.2:5000"), Crossings: crossed, NAT: []record.NAT{{Kind: "MASQUERADE", To: "10.199.0.2"}},
				Explain: &record.Explain{Summary: "ACCEPT", SourceSeenByEndpoint: "10.199.0.2"}},
			want: record.Explain{
				Summary:              "left node1 via eth0 for 10.199.0.3 (route 10.244.1.0/24 via 10.199.0.3 dev eth0) and arrived at node2 on eth0; ACCEPT on node2",
				SourceSeenByEndpoint: "10.199.0.2",
				Notes:                []string{"external traffic entering node1 was forwarded to the endpoint on node2 (externalTrafficPolicy: Cluster) and source-NATed to node1's address 10.199.0.2, so the reply returns through node1: the endpoint sees 10.199.0.2, not the client 10.199.0.1; externalTrafficPolicy: Local would keep the client's address but serve only on node2"},
			},
		},
		{
			name: "NodePort on node1, externalTrafficPolicy Local, no endpoint there: dropped, says where the endpoints are",
			c:    local,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1"}, Src: "10.199.0.1:5000", Dst: "10.199.0.2:30081", Verdict: "DROP",
				Explain: &record.Explain{Summary: "DROP", Reason: "filter:KUBE-EXTERNAL-SERVICES: default/x has no local endpoints"}},
			want: record.Explain{
				Summary: "DROP",
				Reason:  "filter:KUBE-EXTERNAL-SERVICES: default/x has no local endpoints (externalTrafficPolicy: Local: node1 has no local endpoint, so kube-proxy drops external traffic there; nodes with one: node2: send the traffic to one of them, or use externalTrafficPolicy: Cluster at the cost of the client's address)",
			},
		},
		{
			name: "NodePort on node2, externalTrafficPolicy Local: served there, client kept",
			c:    local,
			rec: record.Packet{Node: "node2", Nodes: []string{"node2"}, Src: "10.199.0.1:5000", Dst: "10.199.0.3:30081", Verdict: "ACCEPT",
				Explain: &record.Explain{Summary: "ACCEPT", SourceSeenByEndpoint: "10.199.0.1"}},
			want: record.Explain{
				Summary: "ACCEPT", SourceSeenByEndpoint: "10.199.0.1",
				Notes: []string{"externalTrafficPolicy: Local: node2 serves this traffic with its own endpoint and keeps the client's address"},
			},
		},
		{
			name: "hairpin",
			c:    cluster,
			rec: record.Packet{Node: "node2", Src: "10.244.1.5:5000", Dst: "10.96.0.10:80", Endpoint: "10.244.1.5:80", EndpointPod: "default/x-1", Verdict: "ACCEPT",
				Explain: &record.Explain{Summary: "ACCEPT", SourceSeenByEndpoint: "10.244.1.1"}},
			want: record.Explain{
				Summary: "ACCEPT", SourceSeenByEndpoint: "10.244.1.1",
				Notes: []string{"hairpin: default/x-1 reached itself through its Service; kube-proxy masquerades such a connection (its KUBE-SEP chain marks source 10.244.1.5) so the reply goes back through the node, and the pod sees 10.244.1.1; the node's bridge must send the packet back out the port it came in on (hairpin mode)"},
			},
		},
		{
			name: "never reached the endpoint's node",
			c:    cluster,
			rec: record.Packet{Node: "node1", Nodes: []string{"node1"}, Src: "10.244.0.7:5000", Dst: "10.96.0.10:80", Endpoint: "10.244.1.5:80", EndpointNode: "node2", Verdict: "UNKNOWN",
				Crossings: []record.Crossing{{From: "node1", To: "node2", Out: "eth0", Via: "10.199.0.3", Dst: "10.244.1.5:80", Traced: true, Hop: -1}},
				Explain:   &record.Explain{Summary: "ACCEPT"}},
			want: record.Explain{
				Summary: "ACCEPT",
				Reason:  "left node1 via eth0 for 10.199.0.3 and never reached node2: the agent there saw no packet for 10.244.1.5:80 within the join window; check the route to it, the MTU and any firewall between the nodes",
			},
		},
		{
			name: "straight to the pod",
			c:    cluster,
			rec: record.Packet{Node: "node2", Nodes: []string{"node2"}, Src: "10.244.0.7:5000", Dst: "10.244.1.5:80", TracedBy: record.TracedEndpoint, DirectToEndpoint: true, Verdict: "ACCEPT",
				Explain: &record.Explain{Summary: "ACCEPT"}},
			want: record.Explain{
				Summary: "ACCEPT",
				Notes:   []string{"caught on node2 by the rule for the endpoint's own address, and no traced node sent it through the Service: it was addressed to 10.244.1.5:80 directly (a connection straight to the pod's address, or from a node svctrace does not trace), so no Service rule chose this endpoint"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			WithCluster(&rec, tc.c)
			if diff := cmp.Diff(tc.want, *rec.Explain); diff != "" {
				t.Errorf("explain (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSummaryPerNode: seed 002's spread of new connections over the
// endpoints, per pod and per node (kube-proxy balances over endpoints, so
// a node with two of three endpoints should get two thirds).
func TestSummaryPerNode(t *testing.T) {
	s := NewSummarizer("")
	eps := []string{"10.244.0.5:80", "10.244.1.5:80", "10.244.1.6:80"}
	s.SetEndpoints("default/myapp", eps, map[string]string{"10.244.0.5:80": "default/a", "10.244.1.5:80": "default/b", "10.244.1.6:80": "default/c"})
	s.SetNodes(map[string]string{"10.244.0.5": "node1", "10.244.1.5": "node2", "10.244.1.6": "node2"})
	for _, ep := range []string{"10.244.0.5:80", "10.244.1.5:80", "10.244.1.5:80", "10.244.1.6:80"} {
		s.Add(&record.Packet{Service: "default/myapp", Endpoint: ep, Verdict: "ACCEPT", NAT: []record.NAT{{Kind: "DNAT", Chain: "KUBE-SEP-X"}}})
	}
	sum := s.Summary()
	want := []record.NodeShare{
		{Service: "default/myapp", Node: "node1", Endpoints: 1, Count: 1, Share: 0.25, Expected: 1.0 / 3},
		{Service: "default/myapp", Node: "node2", Endpoints: 2, Count: 3, Share: 0.75, Expected: 2.0 / 3},
	}
	if diff := cmp.Diff(want, sum.Nodes); diff != "" {
		t.Errorf("per-node spread (-want +got):\n%s", diff)
	}
	for _, e := range sum.Endpoints {
		if e.Node == "" {
			t.Errorf("endpoint %s has no node", e.Endpoint)
		}
	}
}
