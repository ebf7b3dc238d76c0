package join

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// Addresses of a 2-node cluster: the client pod and node on node1, the
// endpoint pod on node2.
const (
	node1    = "svctrace-node"
	node2    = "svctrace-node2"
	node1IP  = "10.199.0.2"
	node2IP  = "10.199.0.3"
	clientIP = "10.244.0.7"
	epIP     = "10.244.1.5"
	svcAddr  = "10.96.208.170:80"
)

func nodeOf(host string) string {
	return map[string]string{node1IP: node1, node2IP: node2, clientIP: node1, epIP: node2}[host]
}

// clientLeg is node1's record of a SYN to the Service, DNATed to the
// endpoint on node2 and, when masq, masqueraded to node1's address.
func clientLeg(ipid, seq uint32, masq bool) *record.Packet {
	p := &record.Packet{
		Type: record.TypePacket, Node: node1, Family: "ipv4", Proto: "tcp",
		Src: clientIP + ":41512", Dst: svcAddr, Flags: "SYN", IPID: ipid, TCPSeq: seq,
		TracedBy: record.TracedService, Service: "default/myapp", Endpoint: epIP + ":80",
		Hops: []record.Hop{
			{Table: "raw", Chain: "PREROUTING", Kind: "rule", Rule: 1, In: "cni0"},
			{Table: "nat", Chain: "KUBE-SEP-X", Kind: "rule", Rule: 2, Verdict: "DNAT", Target: epIP + ":80"},
			{Table: "filter", Chain: "FORWARD", Kind: "policy", Verdict: "ACCEPT", Dst: epIP + ":80", In: "cni0", Out: "eth0"},
			{Table: "nat", Chain: "POSTROUTING", Kind: "policy", Verdict: "ACCEPT", In: "cni0", Out: "eth0"},
		},
		NAT:        []record.NAT{{Kind: "DNAT", Chain: "KUBE-SEP-X", Table: "nat", Rule: 2, To: epIP + ":80"}},
		Verdict:    record.VerdictAccept,
		VerdictHop: 3,
		Egress:     &record.Egress{Out: "eth0", Dst: epIP, Via: node2IP, Route: "10.244.1.0/24 via 10.199.0.3 dev eth0 proto 17"},
		Explain:    &record.Explain{Summary: "Service default/myapp; ACCEPT", SourceSeenByEndpoint: clientIP},
	}
	if masq {
		p.NAT = append(p.NAT, record.NAT{Kind: "MASQUERADE", Chain: "KUBE-POSTROUTING", Table: "nat", Rule: 3, To: node1IP})
		p.Explain.SourceSeenByEndpoint = node1IP
	}
	return p
}

// endpointLeg is node2's record of the same packet arriving for the
// endpoint, from src.
func endpointLeg(ipid, seq uint32, src string) *record.Packet {
	return &record.Packet{
		Type: record.TypePacket, Node: node2, Family: "ipv4", Proto: "tcp",
		Src: src + ":41512", Dst: epIP + ":80", Flags: "SYN", IPID: ipid, TCPSeq: seq,
		TracedBy: record.TracedEndpoint,
		Hops: []record.Hop{
			{Table: "raw", Chain: "PREROUTING", Kind: "rule", Rule: 1, In: "eth0"},
			{Table: "filter", Chain: "FORWARD", Kind: "policy", Verdict: "ACCEPT", In: "eth0", Out: "cni0"},
		},
		NAT:        []record.NAT{},
		Verdict:    record.VerdictAccept,
		VerdictHop: 1,
		Explain:    &record.Explain{Summary: "ACCEPT", Notes: []string{"node2 note"}},
	}
}

func newJoiner(traced ...string) *Joiner {
	set := map[string]bool{}
	for _, n := range traced {
		set[n] = true
	}
	return New(Options{Window: time.Second, NodeOf: nodeOf, Traced: func(n string) bool { return set[n] }})
}

// summary is what the tests compare: enough to see what was joined.
type summary struct {
	Nodes            []string
	HopNodes         []string
	Verdict          string
	VerdictHop       int
	Crossings        []record.Crossing
	Direct           bool
	SecondHopSrc     string
	NATs             int
	Reason           string
	PredictedSrcLeft string
}

func summarize(p *record.Packet) summary {
	s := summary{Nodes: p.Nodes, Verdict: p.Verdict, VerdictHop: p.VerdictHop, Crossings: p.Crossings, Direct: p.DirectToEndpoint, NATs: len(p.NAT)}
	for i, h := range p.Hops {
		s.HopNodes = append(s.HopNodes, h.Node)
		if i > 0 && h.Node != p.Hops[i-1].Node {
			s.SecondHopSrc = h.Src
		}
	}
	if p.Explain != nil {
		s.Reason = p.Explain.Reason
		s.PredictedSrcLeft = p.Explain.SourceSeenByEndpoint
	}
	return s
}

var arrived = record.Crossing{From: node1, To: node2, Out: "eth0", Via: node2IP, Route: "10.244.1.0/24 via 10.199.0.3 dev eth0 proto 17", Dst: epIP + ":80", In: "eth0", Arrived: true, Traced: true, Hop: 4}

type step struct {
	leg *record.Packet
	at  time.Duration // arrival, from the test's start
	// tick, when set, ticks the joiner at `at` instead of adding leg.
	tick bool
}

func TestJoin(t *testing.T) {
	joined := summary{
		Nodes:    []string{node1, node2},
		HopNodes: []string{node1, node1, node1, node1, node2, node2},
		Verdict:  record.VerdictAccept, VerdictHop: 5,
		Crossings: []record.Crossing{arrived}, NATs: 1,
		PredictedSrcLeft: clientIP,
	}
	masqJoined := joined
	masqJoined.NATs = 2
	masqJoined.SecondHopSrc = node1IP + ":41512"
	masqJoined.PredictedSrcLeft = node1IP

	tests := []struct {
		name   string
		traced []string
		steps  []step
		// want is per Add/Tick call: the packets it returned.
		want [][]summary
	}{
		{
			name:   "client leg first, endpoint leg joins it",
			traced: []string{node1, node2},
			steps:  []step{{leg: clientLeg(7, 100, false)}, {leg: endpointLeg(7, 100, clientIP), at: 200 * time.Millisecond}},
			want:   [][]summary{nil, {joined}},
		},
		{
			name:   "endpoint leg first (its log stream was faster)",
			traced: []string{node1, node2},
			steps:  []step{{leg: endpointLeg(7, 100, clientIP)}, {leg: clientLeg(7, 100, false), at: 10 * time.Millisecond}},
			want:   [][]summary{nil, {joined}},
		},
		{
			name:   "masqueraded on node1: joined on identity and the DNATed destination, the source changed",
			traced: []string{node1, node2},
			steps:  []step{{leg: clientLeg(9, 5, true)}, {leg: endpointLeg(9, 5, node1IP)}},
			want:   [][]summary{nil, {masqJoined}},
		},
		{
			name:   "another packet's identity is not joined: both released at the window's end",
			traced: []string{node1, node2},
			steps: []step{
				{leg: clientLeg(7, 100, false)},
				{leg: endpointLeg(8, 100, clientIP), at: 100 * time.Millisecond},
				{tick: true, at: 999 * time.Millisecond},
				{tick: true, at: 1100 * time.Millisecond},
			},
			want: [][]summary{nil, nil, nil, {
				{
					Nodes: []string{node1}, HopNodes: []string{node1, node1, node1, node1},
					Verdict: record.VerdictUnknown, VerdictHop: -1, NATs: 1, PredictedSrcLeft: clientIP,
					Crossings: []record.Crossing{{From: node1, To: node2, Out: "eth0", Via: node2IP, Route: arrived.Route, Dst: epIP + ":80", Traced: true, Hop: -1}},
				},
				{
					Nodes: []string{node2}, HopNodes: []string{node2, node2},
					Verdict: record.VerdictAccept, VerdictHop: 1, Direct: true,
				},
			}},
		},
		{
			name:   "the endpoint's node has no agent: no wait, the crossing says so",
			traced: []string{node1},
			steps:  []step{{leg: clientLeg(7, 100, false)}},
			want: [][]summary{{{
				Nodes: []string{node1}, HopNodes: []string{node1, node1, node1, node1},
				Verdict: record.VerdictAccept, VerdictHop: 3, NATs: 1, PredictedSrcLeft: clientIP,
				Crossings: []record.Crossing{{From: node1, To: node2, Out: "eth0", Via: node2IP, Route: arrived.Route, Dst: epIP + ":80", Hop: -1}},
			}}},
		},
		{
			name:   "a dropped packet never left: emitted at once",
			traced: []string{node1, node2},
			steps: []step{{leg: func() *record.Packet {
				p := clientLeg(7, 100, false)
				p.Verdict = record.VerdictDrop
				return p
			}()}},
			want: [][]summary{{{
				Nodes: []string{node1}, HopNodes: []string{node1, node1, node1, node1},
				Verdict: record.VerdictDrop, VerdictHop: 3, NATs: 1, PredictedSrcLeft: clientIP,
			}}},
		},
		{
			name:   "same identity but another destination after DNAT is another packet",
			traced: []string{node1, node2},
			steps: []step{
				{leg: clientLeg(7, 100, false)},
				{leg: func() *record.Packet { p := endpointLeg(7, 100, clientIP); p.Dst = epIP + ":81"; return p }()},
			},
			want: [][]summary{nil, nil},
		},
	}
	start := time.Unix(1000, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := newJoiner(tc.traced...)
			for i, s := range tc.steps {
				var got []*record.Packet
				if s.tick {
					got = j.Tick(start.Add(s.at))
				} else {
					got = j.Add(s.leg, start.Add(s.at))
				}
				var sums []summary
				for _, p := range got {
					sums = append(sums, summarize(p))
				}
				if diff := cmp.Diff(tc.want[i], sums); diff != "" {
					t.Errorf("step %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestJoinMergesFacts(t *testing.T) {
	j := newJoiner(node1, node2)
	if got := j.Add(endpointLeg(7, 100, node1IP), time.Unix(0, 0)); got != nil {
		t.Fatalf("endpoint leg emitted alone: %v", got)
	}
	got := j.Add(clientLeg(7, 100, true), time.Unix(0, 0))
	if len(got) != 1 {
		t.Fatalf("got %d packets, want 1", len(got))
	}
	p := got[0]
	if p.Endpoint != epIP+":80" || p.Service != "default/myapp" || p.Src != clientIP+":41512" || p.Dst != svcAddr {
		t.Errorf("joined packet lost the first leg's facts: %+v", p)
	}
	if p.Egress != nil {
		t.Errorf("egress = %+v, want the second leg's (none)", p.Egress)
	}
	if diff := cmp.Diff([]string{"node2 note"}, p.Explain.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if j.Pending() != 0 {
		t.Errorf("%d legs still pending", j.Pending())
	}
}

// TestJoinKeepsPolicyChecks: the endpoint node's NetworkPolicy refusal
// decides the joined packet, its hop shifted past the client leg's hops.
func TestJoinKeepsPolicyChecks(t *testing.T) {
	j := newJoiner(node1, node2)
	client := clientLeg(8, 200, false)
	client.Explain = &record.Explain{Summary: "ACCEPT", Policies: []record.PolicyCheck{{CNI: "kube-router", Direction: "egress", Effect: record.PolicyNone, Hop: 2}}}
	client.Explain.Policy = &client.Explain.Policies[0]
	ep := endpointLeg(8, 200, clientIP)
	refusal := record.PolicyCheck{CNI: "kube-router", Direction: "ingress", Pod: "default/web", Effect: record.PolicyRefused, Name: "allow", Hop: 1}
	ep.Explain.Policies = []record.PolicyCheck{refusal}
	ep.Explain.Policy = &refusal
	ep.Verdict, ep.Explain.Reason = record.VerdictReject, "refused by NetworkPolicy default/allow"
	j.Add(client, time.Unix(0, 0))
	got := j.Add(ep, time.Unix(0, 0))
	if len(got) != 1 {
		t.Fatalf("got %d packets, want 1", len(got))
	}
	ex := got[0].Explain
	n := len(client.Hops)
	want := []record.PolicyCheck{client.Explain.Policies[0], refusal}
	want[1].Hop += n
	if diff := cmp.Diff(want, ex.Policies); diff != "" {
		t.Errorf("policies (-want +got):\n%s", diff)
	}
	if ex.Policy == nil || ex.Policy.Effect != record.PolicyRefused || ex.Policy.Hop != 1+n {
		t.Errorf("decisive check %+v, want the endpoint's refusal at hop %d", ex.Policy, 1+n)
	}
	if ex.Reason != "refused by NetworkPolicy default/allow" {
		t.Errorf("reason %q", ex.Reason)
	}
}

func TestMaxPending(t *testing.T) {
	j := New(Options{Window: time.Hour, MaxPending: 2, NodeOf: nodeOf, Traced: func(string) bool { return true }})
	now := time.Unix(0, 0)
	for i := uint32(1); i <= 2; i++ {
		if got := j.Add(clientLeg(i, 1, false), now); got != nil {
			t.Fatalf("leg %d emitted early", i)
		}
	}
	got := j.Add(clientLeg(3, 1, false), now)
	if len(got) != 1 || got[0].IPID != 1 || got[0].Crossings[0].Arrived {
		t.Fatalf("the oldest leg is released, not arrived; got %+v", got)
	}
	if rest := j.Flush(); len(rest) != 2 || j.Pending() != 0 {
		t.Fatalf("flush released %d, %d pending", len(rest), j.Pending())
	}
}

// BenchmarkJoin joins a client leg and its endpoint leg per iteration.
func BenchmarkJoin(b *testing.B) {
	j := newJoiner(node1, node2)
	now := time.Unix(0, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		id := uint32(i)
		j.Add(clientLeg(id, 1, true), now)
		if got := j.Add(endpointLeg(id, 1, node1IP), now); len(got) != 1 {
			b.Fatalf("not joined: %d", len(got))
		}
	}
}

// TestJoinRealLegs joins the two records real agents wrote for one packet
// on one kernel (test/testdata/captures/two-agents-one-kernel.legacy.ndjson):
// n1's probe to the ClusterIP and n2 catching it arriving for the endpoint.
func TestJoinRealLegs(t *testing.T) {
	data, err := os.ReadFile("../../test/testdata/captures/two-agents-one-kernel.legacy.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	var legs []*record.Packet
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var p record.Packet
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatal(err)
		}
		legs = append(legs, &p)
	}
	if len(legs) != 2 {
		t.Fatalf("%d legs, want 2", len(legs))
	}
	nodeOf := map[string]string{"198.19.11.2": "n2", "198.20.11.1": "n1", "198.20.11.2": "n2"}
	for _, order := range [][2]int{{0, 1}, {1, 0}} {
		j := New(Options{NodeOf: func(h string) string { return nodeOf[h] }, Traced: func(string) bool { return true }})
		a, b := *legs[order[0]], *legs[order[1]]
		a.Hops, b.Hops = append([]record.Hop(nil), a.Hops...), append([]record.Hop(nil), b.Hops...)
		if got := j.Add(&a, time.Unix(0, 0)); len(got) != 0 {
			t.Fatalf("order %v: the first leg came out alone", order)
		}
		got := j.Add(&b, time.Unix(0, 0))
		if len(got) != 1 {
			t.Fatalf("order %v: %d packets, want 1 joined", order, len(got))
		}
		p := got[0]
		n1 := len(legs[0].Hops)
		want := summary{
			Nodes: []string{"n1", "n2"}, Verdict: record.VerdictAccept, VerdictHop: n1 + legs[1].VerdictHop,
			NATs: len(legs[0].NAT) + len(legs[1].NAT), SecondHopSrc: "", PredictedSrcLeft: "198.20.11.1",
			Crossings: []record.Crossing{{From: "n1", To: "n2", Out: "eth0", Via: "198.20.11.2", Route: legs[0].Egress.Route,
				Dst: "198.19.11.2:8080", In: "eth0", Arrived: true, Traced: true, Hop: n1}},
		}
		for range legs[0].Hops {
			want.HopNodes = append(want.HopNodes, "n1")
		}
		for range legs[1].Hops {
			want.HopNodes = append(want.HopNodes, "n2")
		}
		// n1 masqueraded it to its own address: n2's first hop shows the
		// source it arrived with (the port may change under --random-fully).
		want.SecondHopSrc = legs[1].Src
		if legs[1].Src == legs[0].Src {
			want.SecondHopSrc = ""
		}
		if diff := cmp.Diff(want, summarize(p)); diff != "" {
			t.Errorf("order %v (-want +got):\n%s", order, diff)
		}
	}
}
