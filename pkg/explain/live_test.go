package explain

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

func lookup(src, dst, in, mark string) record.RouteLookup {
	return record.RouteLookup{Src: src, Dst: dst, In: in, Mark: mark}
}

// explainLive applies live facts and explains rec, as AnnotateLive does
// after the path is annotated.
func explainLive(rec *record.Packet, l *record.Live) {
	withLive(rec, l)
	a := annotator{rec: rec, p: &trace.Packet{}}
	rec.Explain = a.explain()
}

func TestWithLiveRoute(t *testing.T) {
	refused := func(l record.RouteLookup, err, errno string) record.RouteLookup {
		l.Error, l.Errno = err, errno
		return l
	}
	cases := []struct {
		name        string
		rc          record.RouteCheck
		wantVerdict string
		wantIn      []string
		wantNotes   []string
	}{
		{name: "reverse-path filter (EXDEV)", rc: record.RouteCheck{RouteLookup: refused(lookup("192.168.235.13", "10.0.1.12", "enp5s0", ""), "invalid cross-device link", "EXDEV"),
			RPFilter: map[string]int{"all": 1, "enp5s0": 0}}, wantVerdict: "DROP",
			wantIn: []string{"dropped by the reverse-path filter on enp5s0", "rp_filter=1 (strict; all=1 enp5s0=0)", "ip route get from 192.168.235.13"}},
		{name: "reverse-path filter (EINVAL), the route back leaves elsewhere", rc: record.RouteCheck{RouteLookup: refused(lookup("198.22.5.9", "198.21.5.1", "l1", "0x4000"), "invalid argument", "EINVAL"),
			RPFilter: map[string]int{"all": 1, "l1": 0},
			Back:     &record.RouteLookup{Dst: "198.22.5.9", Mark: "0x4000", Route: "198.22.5.9 dev l2 src 198.22.5.1", Dev: "l2"}}, wantVerdict: "DROP",
			wantIn:    []string{"dropped by the reverse-path filter on l1", `the kernel says "invalid argument" for: ip route get from 198.22.5.9 to 198.21.5.1 iif l1 mark 0x4000`},
			wantNotes: []string{"the route back to 198.22.5.9 leaves through l2, not l1: 198.22.5.9 dev l2 src 198.22.5.1 (ip route get to 198.22.5.9 mark 0x4000)"}},
		{name: "no route back", rc: record.RouteCheck{RouteLookup: refused(lookup("198.22.5.9", "198.21.5.1", "l1", ""), "invalid cross-device link", "EXDEV"),
			RPFilter: map[string]int{"all": 2},
			Back:     &record.RouteLookup{Dst: "198.22.5.9", Error: "network is unreachable", Errno: "ENETUNREACH"}}, wantVerdict: "DROP",
			wantIn:    []string{"dropped by the reverse-path filter on l1", "rp_filter=2 (loose; all=2)"},
			wantNotes: []string{"the node has no route back to 198.22.5.9 (network is unreachable; ip route get to 198.22.5.9)"}},
		{name: "martian: EINVAL with the reverse path fine", rc: record.RouteCheck{RouteLookup: refused(lookup("127.0.0.5", "198.21.5.1", "l1", ""), "invalid argument", "EINVAL"),
			RPFilter: map[string]int{"all": 0},
			Back:     &record.RouteLookup{Dst: "127.0.0.5", Route: "local 127.0.0.5 dev lo", Dev: "lo"}}, wantVerdict: "DROP",
			wantIn:    []string{"dropped by the routing decision: invalid argument (ip route get from 127.0.0.5 to 198.21.5.1 iif l1)"},
			wantNotes: []string{"not the reverse-path filter (rp_filter=0; ip route get to 127.0.0.5): the kernel refused the packet as a martian, an address it never accepts from l1"}},
		{name: "no route", rc: record.RouteCheck{RouteLookup: refused(lookup("1.2.3.4", "10.9.9.9", "eth0", ""), "network is unreachable", "ENETUNREACH")}, wantVerdict: "DROP",
			wantIn: []string{"dropped by the routing decision: network is unreachable", "rp_filter unknown"}},
		{name: "route exists now", rc: record.RouteCheck{RouteLookup: record.RouteLookup{Src: "1.2.3.4", Dst: "10.0.0.5", In: "eth0", Route: "10.0.0.5 dev cni0", Dev: "cni0"}, RPFilter: map[string]int{"all": 2}}, wantVerdict: "UNKNOWN",
			wantIn: []string{"finds a route now", "ip route get from 1.2.3.4 to 10.0.0.5 iif eth0: 10.0.0.5 dev cni0", "rp_filter=2 (loose; all=2)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := record.Packet{Service: "a/b", Verdict: record.VerdictUnknown, VerdictHop: -1}
			rc := c.rc
			explainLive(&rec, &record.Live{Route: &rc})
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
			if diff := cmp.Diff(c.wantNotes, rec.Explain.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
			if rec.Live == nil || rec.Live.Route == nil || rec.Live.Route.Errno != c.rc.Errno {
				t.Errorf("live facts not kept on the record: %+v", rec.Live)
			}
		})
	}
}

func TestWithLiveMasqueradeSource(t *testing.T) {
	nat := func(masqTo string) []record.NAT {
		return []record.NAT{{Kind: "DNAT", Chain: "KUBE-SEP-X", To: "10.244.0.5:80"}, {Kind: "MASQUERADE", Chain: "KUBE-POSTROUTING", To: masqTo}}
	}
	rec := record.Packet{Src: "10.199.0.1:5000", Dst: "10.96.0.10:80", Verdict: record.VerdictAccept, VerdictHop: -1, NAT: nat(""),
		Hops: []record.Hop{{Table: "nat", Chain: "POSTROUTING", Out: "cni0"}},
	}
	explainLive(&rec, &record.Live{MasqueradeIface: "cni0", MasqueradeSource: "10.244.0.1"})
	want := record.Packet{Src: "10.199.0.1:5000", Dst: "10.96.0.10:80", Verdict: record.VerdictAccept, VerdictHop: -1, NAT: nat("10.244.0.1"),
		Hops: []record.Hop{{Table: "nat", Chain: "POSTROUTING", Out: "cni0"}},
		Explain: &record.Explain{
			Summary:              "DNAT 10.96.0.10:80 -> 10.244.0.5:80 in KUBE-SEP-X; source masqueraded at POSTROUTING; ACCEPT",
			SourceSeenByEndpoint: "10.244.0.1",
		},
		Live: &record.Live{MasqueradeIface: "cni0", MasqueradeSource: "10.244.0.1"}}
	if diff := cmp.Diff(want, rec); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	t.Run("address unreadable: the offline note stays, the failure is said", func(t *testing.T) {
		rec := record.Packet{Src: "10.199.0.1:5000", Dst: "10.96.0.10:80", Verdict: record.VerdictAccept, VerdictHop: -1, NAT: nat(""),
			Hops: []record.Hop{{Table: "nat", Chain: "POSTROUTING", Out: "cni0"}}}
		explainLive(&rec, &record.Live{MasqueradeIface: "cni0", MasqueradeError: "cni0 has no global IPv4 address"})
		want := []string{
			"the endpoint sees the node's address on cni0, not the client's 10.199.0.1",
			"could not read the masquerade address of cni0: cni0 has no global IPv4 address",
		}
		if diff := cmp.Diff(want, rec.Explain.Notes); diff != "" {
			t.Errorf("notes (-want +got):\n%s", diff)
		}
	})
}

func TestRouteCommand(t *testing.T) {
	tests := []struct {
		l    record.RouteLookup
		want string
	}{
		{lookup("192.168.235.13", "10.0.1.12", "enp5s0", ""), "ip route get from 192.168.235.13 to 10.0.1.12 iif enp5s0"},
		{lookup("10.199.0.1", "10.244.0.7", "eth0", "0x4000"), "ip route get from 10.199.0.1 to 10.244.0.7 iif eth0 mark 0x4000"},
		{lookup("fd00::1", "fd00::2", "eth0", ""), "ip -6 route get from fd00::1 to fd00::2 iif eth0"},
		{record.RouteLookup{Dst: "10.244.0.7", Mark: "0x4000"}, "ip route get to 10.244.0.7 mark 0x4000"},
	}
	for _, tt := range tests {
		if got := routeCommand(&tt.l); got != tt.want {
			t.Errorf("routeCommand(%+v) = %q, want %q", tt.l, got, tt.want)
		}
	}
}
