package explain

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

func TestWithRoute(t *testing.T) {
	cases := []struct {
		name        string
		rc          RouteCheck
		wantVerdict string
		wantIn      []string
	}{
		{"reverse-path filter", RouteCheck{Command: "ip route get from 192.168.235.13 to 10.0.1.12 iif enp5s0", Err: "invalid cross-device link", Errno: "EXDEV", InIface: "enp5s0",
			RPFilter: map[string]int{"all": 1, "enp5s0": 0}}, "DROP",
			[]string{"dropped by the reverse-path filter on enp5s0", "rp_filter=1 (strict; all=1 enp5s0=0)", "ip route get from 192.168.235.13"}},
		{"no route", RouteCheck{Command: "ip route get from 1.2.3.4 to 10.9.9.9 iif eth0", Err: "network is unreachable", Errno: "ENETUNREACH"}, "DROP",
			[]string{"dropped by the routing decision: network is unreachable", "rp_filter unknown"}},
		{"route exists now", RouteCheck{Command: "ip route get from 1.2.3.4 to 10.0.0.5 iif eth0", Route: "10.0.0.5 dev cni0", RPFilter: map[string]int{"all": 2}}, "UNKNOWN",
			[]string{"finds a route now", "10.0.0.5 dev cni0", "rp_filter=2 (loose; all=2)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := record.Packet{Verdict: record.VerdictUnknown, Explain: &record.Explain{Summary: "Service a/b; UNKNOWN"}}
			WithRoute(&rec, c.rc)
			if rec.Verdict != c.wantVerdict {
				t.Errorf("verdict %q, want %q", rec.Verdict, c.wantVerdict)
			}
			if want := "Service a/b; " + c.wantVerdict; rec.Explain.Summary != want {
				t.Errorf("summary %q, want %q", rec.Explain.Summary, want)
			}
			for _, w := range c.wantIn {
				if !strings.Contains(rec.Explain.Reason, w) {
					t.Errorf("reason %q lacks %q", rec.Explain.Reason, w)
				}
			}
		})
	}
}

func TestWithMasqueradeSource(t *testing.T) {
	rec := record.Packet{Src: "10.199.0.1:5000", NAT: []record.NAT{{Kind: "DNAT", To: "10.244.0.5:80"}, {Kind: "MASQUERADE", Chain: "KUBE-POSTROUTING"}},
		Explain: &record.Explain{Notes: []string{"the endpoint sees the node's address on cni0, not the client's 10.199.0.1"}}}
	WithMasqueradeSource(&rec, "10.244.0.1")
	want := record.Packet{Src: "10.199.0.1:5000", NAT: []record.NAT{{Kind: "DNAT", To: "10.244.0.5:80"}, {Kind: "MASQUERADE", Chain: "KUBE-POSTROUTING", To: "10.244.0.1"}},
		Explain: &record.Explain{SourceSeenByEndpoint: "10.244.0.1", Notes: []string{}}}
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
