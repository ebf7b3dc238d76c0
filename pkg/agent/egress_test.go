//go:build linux

package agent

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

func TestEgress(t *testing.T) {
	a := netip.MustParseAddr
	hop := func(in, out, src, dst string) trace.Hop {
		return trace.Hop{Header: trace.Header{In: in, Out: out, Src: a(src), Dst: a(dst), Mark: 0x4000}}
	}
	leftForNode2 := &trace.Packet{Hops: []trace.Hop{
		hop("cni0", "", "10.244.0.7", "10.96.0.10"),
		hop("cni0", "eth0", "10.244.0.7", "10.244.1.5"),
	}}
	toLocalPod := &trace.Packet{Hops: []trace.Hop{hop("", "cni0", "10.199.0.2", "10.244.0.5")}}
	delivered := &trace.Packet{Hops: []trace.Hop{hop("eth0", "", "10.199.0.1", "10.199.0.2")}}
	viaLo := &trace.Packet{Hops: []trace.Hop{hop("", "lo", "127.0.0.1", "127.0.0.1")}}
	routes := map[netip.Addr]kernel.Route{
		a("10.244.1.5"): {Dst: a("10.244.1.5"), Gateway: a("10.199.0.3"), Dev: "eth0", PrefSrc: a("10.199.0.2")},
		a("10.244.0.5"): {Dst: a("10.244.0.5"), Dev: "cni0", PrefSrc: a("10.244.0.1")},
	}
	var asked []kernel.RouteQuery
	e := &egress{now: func() time.Time { return time.Unix(0, 0) }, lookup: func(q kernel.RouteQuery) (kernel.Route, error) {
		asked = append(asked, q)
		if rt, ok := routes[q.Dst]; ok {
			return rt, nil
		}
		return kernel.Route{}, errors.New("network is unreachable")
	}}
	tests := []struct {
		name string
		p    *trace.Packet
		rec  record.Packet
		want *record.Egress
	}{
		{
			name: "forwarded to another node: next hop and route",
			p:    leftForNode2, rec: record.Packet{Verdict: record.VerdictAccept},
			want: &record.Egress{Out: "eth0", Dst: "10.244.1.5", Via: "10.199.0.3", Route: "10.244.1.5 via 10.199.0.3 dev eth0 src 10.199.0.2", Src: "10.244.0.7"},
		},
		{
			name: "masqueraded: the source it left with",
			p:    leftForNode2, rec: record.Packet{Verdict: record.VerdictAccept, NAT: []record.NAT{{Kind: "MASQUERADE", To: "10.199.0.2"}}},
			want: &record.Egress{Out: "eth0", Dst: "10.244.1.5", Via: "10.199.0.3", Route: "10.244.1.5 via 10.199.0.3 dev eth0 src 10.199.0.2", Src: "10.199.0.2"},
		},
		{
			name: "to a local pod: on the link",
			p:    toLocalPod, rec: record.Packet{Verdict: record.VerdictAccept, NAT: []record.NAT{{Kind: "MASQUERADE"}}},
			want: &record.Egress{Out: "cni0", Dst: "10.244.0.5", Route: "10.244.0.5 dev cni0 src 10.244.0.1"},
		},
		{name: "delivered locally: did not leave", p: delivered, rec: record.Packet{Verdict: record.VerdictAccept}},
		{name: "through lo: did not leave", p: viaLo, rec: record.Packet{Verdict: record.VerdictAccept}},
		{name: "dropped: did not leave", p: leftForNode2, rec: record.Packet{Verdict: record.VerdictDrop}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			e.add(&rec, tc.p)
			if diff := cmp.Diff(tc.want, rec.Egress); diff != "" {
				t.Errorf("egress (-want +got):\n%s", diff)
			}
		})
	}
	if len(asked) != 2 || asked[0].Mark != 0x4000 {
		t.Errorf("route lookups %+v: want one per destination (cached), with the packet's mark", asked)
	}
}
