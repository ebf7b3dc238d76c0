//go:build linux

package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// routerNS is a namespace with two links and addresses on both, for route
// lookups and masquerade addresses asked of the real kernel:
//
//	l1: 198.21.X.1/24 (primary), 198.21.X.50/24 (secondary), 198.23.X.1/24, fd21:X::1/64
//	l2: 198.22.X.1/24
//
// net.ipv4.conf.all.rp_filter=1, l1's own rp_filter 0; forwarding on; no
// default route.
type routerNS struct {
	ns *netns
	x  int
}

func newRouterNS(t *testing.T) *routerNS {
	t.Helper()
	requireRoot(t)
	r := &routerNS{ns: newNetns(t, "router"), x: 10 + int(topoSeq.Add(1))%200}
	x := r.x
	for _, c := range [][]string{
		{"ip", "link", "add", "l1", "type", "veth", "peer", "name", "l1p"},
		{"ip", "link", "add", "l2", "type", "veth", "peer", "name", "l2p"},
		{"ip", "addr", "add", fmt.Sprintf("198.21.%d.1/24", x), "dev", "l1"},
		{"ip", "addr", "add", fmt.Sprintf("198.21.%d.50/24", x), "dev", "l1"},
		{"ip", "addr", "add", fmt.Sprintf("198.23.%d.1/24", x), "dev", "l1"},
		{"ip", "addr", "add", fmt.Sprintf("fd21:%d::1/64", x), "dev", "l1", "nodad"},
		{"ip", "addr", "add", fmt.Sprintf("198.22.%d.1/24", x), "dev", "l2"},
		{"ip", "link", "set", "l1", "up"},
		{"ip", "link", "set", "l1p", "up"},
		{"ip", "link", "set", "l2", "up"},
		{"ip", "link", "set", "l2p", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"},
		{"sysctl", "-qw", "net.ipv4.conf.l1.rp_filter=0"},
	} {
		r.ns.mustRun(t, c...)
	}
	return r
}

func (r *routerNS) ip(format string) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf(format, r.x))
}

// rpFilterErrs are what kernels answer a route lookup the reverse-path
// filter refuses: EXDEV in older ones, EINVAL (as for martians) in recent
// ones, which report every input refusal as a drop reason.
var rpFilterErrs = []string{"invalid cross-device link", "invalid argument"}

// TestLiveRouteCheck asks the kernel of a test namespace the routing
// decision for packets arriving on l1, as the agent does for a packet whose
// trace stops after PREROUTING, and checks the facts read (the answer, the
// rp_filter values, the route back) and what package explain makes of them.
func TestLiveRouteCheck(t *testing.T) {
	r := newRouterNS(t)
	rp := map[string]int{"all": 1, "l1": 0}
	lk := func(src, dst, mark string) record.RouteLookup {
		return record.RouteLookup{Src: fmt.Sprintf(src, r.x), Dst: fmt.Sprintf(dst, r.x), In: "l1", Mark: mark}
	}
	tests := []struct {
		name string
		q    kernel.RouteQuery
		want record.RouteCheck
		// The explanation: the reason starts with reason and holds the
		// ip(8) command; notes are the notes.
		reason, command string
		notes           []string
	}{
		{
			name: "reverse path through another interface: strict rp_filter drops",
			q:    kernel.RouteQuery{Src: r.ip("198.22.%d.9"), Dst: r.ip("198.21.%d.1"), IIf: "l1"},
			want: record.RouteCheck{
				RouteLookup: lk("198.22.%d.9", "198.21.%d.1", ""), RPFilter: rp,
				Back: &record.RouteLookup{Dst: r.ip("198.22.%d.9").String(), Route: fmt.Sprintf("198.22.%d.9 dev l2 src 198.22.%d.1", r.x, r.x), Dev: "l2"},
			},
			reason:  "dropped by the reverse-path filter on l1: rp_filter=1 (strict; all=1 l1=0)",
			command: fmt.Sprintf("ip route get from 198.22.%d.9 to 198.21.%d.1 iif l1", r.x, r.x),
			notes:   []string{fmt.Sprintf("the route back to 198.22.%d.9 leaves through l2, not l1: 198.22.%d.9 dev l2 src 198.22.%d.1 (ip route get to 198.22.%d.9)", r.x, r.x, r.x, r.x)},
		},
		{
			name: "local destination, source on the input link",
			q:    kernel.RouteQuery{Src: r.ip("198.21.%d.9"), Dst: r.ip("198.21.%d.1"), IIf: "l1", Mark: 0x4000},
			want: func() record.RouteCheck {
				rc := record.RouteCheck{RouteLookup: lk("198.21.%d.9", "198.21.%d.1", "0x4000"), RPFilter: rp}
				rc.Route, rc.Dev = fmt.Sprintf("local 198.21.%d.1 dev lo", r.x), "lo"
				return rc
			}(),
			reason:  "the routing decision finds a route now",
			command: fmt.Sprintf("ip route get from 198.21.%d.9 to 198.21.%d.1 iif l1 mark 0x4000", r.x, r.x),
		},
		{
			name: "forwarded to the other link",
			q:    kernel.RouteQuery{Src: r.ip("198.21.%d.9"), Dst: r.ip("198.22.%d.7"), IIf: "l1"},
			want: func() record.RouteCheck {
				rc := record.RouteCheck{RouteLookup: lk("198.21.%d.9", "198.22.%d.7", ""), RPFilter: rp}
				rc.Route, rc.Dev = fmt.Sprintf("198.22.%d.7 dev l2", r.x), "l2"
				return rc
			}(),
			reason:  "the routing decision finds a route now",
			command: fmt.Sprintf("ip route get from 198.21.%d.9 to 198.22.%d.7 iif l1", r.x, r.x),
		},
		{
			name: "no route to the destination",
			q:    kernel.RouteQuery{Src: r.ip("198.21.%d.9"), Dst: netip.MustParseAddr("203.0.113.9"), IIf: "l1"},
			want: func() record.RouteCheck {
				rc := record.RouteCheck{RouteLookup: record.RouteLookup{Src: r.ip("198.21.%d.9").String(), Dst: "203.0.113.9", In: "l1"}, RPFilter: rp}
				rc.Error, rc.Errno = "network is unreachable", "ENETUNREACH"
				return rc
			}(),
			reason:  "dropped by the routing decision: network is unreachable",
			command: fmt.Sprintf("ip route get from 198.21.%d.9 to 203.0.113.9 iif l1", r.x),
		},
	}
	for i := range tests {
		tt := &tests[i]
		t.Run(tt.name, func(t *testing.T) {
			var got record.RouteCheck
			var err error
			// In the namespace's thread: the socket and /proc/sys/net
			// are the namespace's.
			r.ns.do(t, func() {
				l := newLiveExplainer("/proc")
				defer l.Close()
				got, err = l.routeCheck(tt.q)
			})
			if err != nil {
				t.Fatalf("routeCheck: %v", err)
			}
			if tt.want.Back != nil {
				// The reverse-path filter's refusal: EXDEV in older
				// kernels, EINVAL in recent ones, in the kernel's words.
				i := slices.Index(rpFilterErrs, got.Error)
				if i < 0 {
					t.Fatalf("kernel error %q, want one of %q", got.Error, rpFilterErrs)
				}
				tt.want.Error, tt.want.Errno = got.Error, []string{"EXDEV", "EINVAL"}[i]
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("route check (-want +got):\n%s", diff)
			}
			// The packet the lookup was for: its trace stops in nat PREROUTING.
			p := trace.Packet{First: trace.Header{Family: 4, Src: tt.q.Src, Dst: tt.q.Dst, In: tt.q.IIf}}
			p.Hops = []trace.Hop{{Table: "nat", Chain: "PREROUTING", Kind: trace.KindPolicy, Hook: "PREROUTING", Header: p.First}}
			rec := explain.AnnotateLive(&p, nil, func(*record.Packet) *record.Live { return &record.Live{Route: &got} })
			if !strings.HasPrefix(rec.Explain.Reason, tt.reason) || !strings.Contains(rec.Explain.Reason, tt.command) {
				t.Errorf("reason %q, want it to start with %q and hold %q", rec.Explain.Reason, tt.reason, tt.command)
			}
			if diff := cmp.Diff(tt.notes, rec.Explain.Notes); diff != "" {
				t.Errorf("notes (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("input interface gone", func(t *testing.T) {
		var err error
		r.ns.do(t, func() {
			l := newLiveExplainer("/proc")
			defer l.Close()
			_, err = l.routeCheck(kernel.RouteQuery{Src: r.ip("198.21.%d.9"), Dst: r.ip("198.21.%d.1"), IIf: "nosuchlink"})
		})
		if err == nil {
			t.Fatal("routeCheck with an unknown interface: no error, want one (it is no answer of the routing code)")
		}
	})
}

// TestLiveMasqueradeSource checks the address the agent reports for a
// MASQUERADE against what the kernel really gives a masqueraded connection.
func TestLiveMasqueradeSource(t *testing.T) {
	r := newRouterNS(t)
	tests := []struct {
		name string
		dst  netip.Addr
		want netip.Addr
	}{
		{name: "destination in the primary subnet", dst: r.ip("198.21.%d.9"), want: r.ip("198.21.%d.1")},
		{name: "destination in the second primary subnet", dst: r.ip("198.23.%d.9"), want: r.ip("198.23.%d.1")},
		{name: "IPv6: the global address, not the link-local one", dst: r.ip("fd21:%d::9"), want: r.ip("fd21:%d::1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got netip.Addr
			var err error
			r.ns.do(t, func() {
				l := newLiveExplainer("/proc")
				defer l.Close()
				got, err = l.masqueradeSource("l1", tt.dst)
			})
			if err != nil {
				t.Fatalf("masqueradeSource: %v", err)
			}
			if got != tt.want {
				t.Errorf("masqueradeSource(l1, %s) = %s, want %s", tt.dst, got, tt.want)
			}
		})
	}
	t.Run("interface without a global address", func(t *testing.T) {
		var err error
		r.ns.do(t, func() {
			l := newLiveExplainer("/proc")
			defer l.Close()
			_, err = l.masqueradeSource("l1p", r.ip("198.21.%d.9"))
		})
		if err == nil {
			t.Fatal("no error for an interface without addresses")
		}
	})
}

// rpTopo adds to a topo what makes the node's reverse path for the client
// leave through another link: the client sends from 198.20.X.2 (a second
// address on its link), and the node routes 198.20.X.0/24 out of svoX (a
// veth pair whose both ends are in the node namespace).
func rpTopo(t *testing.T, tp *topo, rpFilter int) (client netip.Addr, other string) {
	t.Helper()
	other = fmt.Sprintf("svo%d", tp.x)
	client = netip.MustParseAddr(fmt.Sprintf("198.20.%d.2", tp.x))
	for _, c := range [][]string{
		{"ip", "link", "add", other, "type", "veth", "peer", "name", other + "p"},
		{"ip", "link", "set", other, "up"},
		{"ip", "link", "set", other + "p", "up"},
		{"ip", "route", "add", fmt.Sprintf("198.20.%d.0/24", tp.x), "dev", other},
		{"sysctl", "-qw", fmt.Sprintf("net.ipv4.conf.all.rp_filter=%d", rpFilter)},
		{"sysctl", "-qw", fmt.Sprintf("net.ipv4.conf.svn%d.rp_filter=0", tp.x)},
	} {
		tp.node.mustRun(t, c...)
	}
	sve := fmt.Sprintf("sve%d", tp.x)
	tp.ep.mustRun(t, "ip", "addr", "add", client.String()+"/32", "dev", sve)
	// ARP from the client's own link address: the node checks an ARP
	// request's sender against the reverse path too, and would never
	// answer one from 198.20.X.2 (the SYN would never leave).
	tp.ep.mustRun(t, "sysctl", "-qw", "net.ipv4.conf."+sve+".arp_announce=2")
	return client, other
}

// dialFrom connects from the endpoint namespace with source address src.
func (tp *topo) dialFrom(t testing.TB, src netip.Addr, to netip.AddrPort) error {
	t.Helper()
	var err error
	tp.ep.do(t, func() {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var c net.Conn
		c, err = d.Dial("tcp", to.String())
		if err == nil {
			c.Close()
		}
	})
	return err
}

// TestAgentExplainsReversePathDrop reproduces a reverse-path filter drop for
// real: a client's SYN to a NodePort arrives on the node's svnX while the
// node's route back to the client's address leaves through svoX. With
// rp_filter=1 the routing decision drops it right after nat PREROUTING; the
// agent must say so from the kernel's own route lookup. With rp_filter=2
// (loose) the same packet goes on, and its masquerade address is the one
// the endpoint really sees.
func TestAgentExplainsReversePathDrop(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		for _, rpf := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/rp_filter=%d", b, rpf), func(t *testing.T) {
				requireAgent(t, b)
				tp := newTopo(t, b)
				client, other := rpTopo(t, tp, rpf)
				a := startAgent(t, tp.node, "--nodeport", fmt.Sprint(testNodePort), "--max-packets", "1", "--duration", "30s")
				a.waitReady(10 * time.Second)
				nodePort := netip.AddrPortFrom(tp.nodeIP4(), testNodePort)
				err := tp.dialFrom(t, client, nodePort)
				if err == nil {
					t.Fatalf("connecting from %s succeeded; want it to fail (no way back to the client)", client)
				}
				if code := a.wait(30 * time.Second); code != 0 {
					t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
				}
				pkts := recordsOf[record.Packet](a, record.TypePacket)
				if len(pkts) != 1 {
					t.Fatalf("got %d packets, want 1\nstderr:\n%s", len(pkts), a.stderr.String())
				}
				p := pkts[0]
				ep := netip.AddrPortFrom(tp.epIP4(), 8080)
				if h, _ := hostAddr(p.Src); h != client || p.Endpoint != ep.String() {
					t.Errorf("packet src %s endpoint %s, want from %s to %s", p.Src, p.Endpoint, client, ep)
				}
				svn := fmt.Sprintf("svn%d", tp.x)
				t.Logf("verdict %s; explain: %+v", p.Verdict, *p.Explain)
				if rpf == 1 {
					mark := ""
					if m := p.Hops[len(p.Hops)-1].Mark; m != "" {
						mark = " mark " + m
					}
					kernelSays := rpFilterErrs[0]
					for _, e := range rpFilterErrs {
						if strings.Contains(p.Explain.Reason, fmt.Sprintf("%q", e)) {
							kernelSays = e
						}
					}
					want := &record.Explain{
						Summary: p.Explain.Summary,
						Reason: fmt.Sprintf(`dropped by the reverse-path filter on %s: rp_filter=1 (strict; all=1 %s=0) (the route back to the source does not leave through %s); the kernel says %q for: ip route get from %s to %s iif %s%s`,
							svn, svn, svn, kernelSays, client, ep.Addr(), svn, mark),
						Notes: []string{fmt.Sprintf("the route back to %s leaves through %s, not %s: %s dev %s src %s (ip route get to %s%s)", client, other, svn, client, other, tp.nodeIP4(), client, mark)},
					}
					if diff := cmp.Diff(want, p.Explain); diff != "" {
						t.Errorf("explain (-want +got):\n%s", diff)
					}
					if p.Verdict != record.VerdictDrop {
						t.Errorf("verdict %s, want DROP", p.Verdict)
					}
					if last := p.Hops[len(p.Hops)-1]; last.Table != "nat" {
						t.Errorf("last hop %s:%s, want the nat table (PREROUTING)", last.Table, last.Chain)
					}
					return
				}
				if p.Verdict != record.VerdictAccept {
					t.Errorf("verdict %s, want ACCEPT (loose rp_filter lets it through); explain %+v", p.Verdict, p.Explain)
				}
				if got := p.Explain.SourceSeenByEndpoint; got != tp.nodeIP4().String() {
					t.Errorf("source seen by the endpoint %q, want %s (the node's address on %s, where MASQUERADE sends it)", got, tp.nodeIP4(), svn)
				}
				wantNAT := record.NAT{Kind: record.NATMasquerade, Chain: "KUBE-POSTROUTING", Table: "nat", Rule: 3, To: tp.nodeIP4().String()}
				if got := p.NAT[len(p.NAT)-1]; got != wantNAT {
					t.Errorf("last NAT %+v, want %+v", got, wantNAT)
				}
			})
		}
	}
}

// TestAgentProbeFromPod opens the probe connection from inside another
// network namespace found by its address, the way --from pod/NAME does: the
// packet must enter the node through PREROUTING from the pod's address,
// not leave the node's own stack through OUTPUT.
func TestAgentProbeFromPod(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopo(t, b)
			// The "pod": the endpoint namespace, with a route to the
			// Service range and a process living in it, as a pod's
			// sandbox does (the agent finds namespaces by process).
			tp.ep.mustRun(t, "ip", "route", "add", fmt.Sprintf("198.18.%d.0/24", tp.x), "via", tp.nodeIP4().String())
			sandbox := tp.ep.command(t.Context(), "sleep", "300")
			if err := sandbox.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sandbox.Process.Kill(); _ = sandbox.Wait() })
			before := tp.accepted.Load()
			pod := tp.epIP4()
			a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe-from-ip", pod.String(), "--src", pod.String(), "--max-packets", "1", "--duration", "30s")
			a.waitReady(10 * time.Second)
			if code := a.wait(30 * time.Second); code != 0 {
				t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
			}
			pkts := recordsOf[record.Packet](a, record.TypePacket)
			if len(pkts) != 1 {
				t.Fatalf("got %d packets, want 1\nstderr:\n%s", len(pkts), a.stderr.String())
			}
			p := pkts[0]
			if h, _ := hostAddr(p.Src); h != pod || p.Dst != tp.svc4().String() || p.Verdict != record.VerdictAccept {
				t.Errorf("packet %s -> %s %s, want from the pod %s to %s, ACCEPT", p.Src, p.Dst, p.Verdict, pod, tp.svc4())
			}
			if p.Hops[0].In != fmt.Sprintf("svn%d", tp.x) {
				t.Errorf("first hop in %q, want svn%d: the connection must come in from the pod's link", p.Hops[0].In, tp.x)
			}
			for _, h := range p.Hops {
				if h.Chain == "OUTPUT" {
					t.Errorf("hop %s:%s: the probe came from the node's own stack, not the pod's namespace", h.Table, h.Chain)
				}
			}
			if tp.accepted.Load() == before {
				t.Error("the endpoint accepted no connection: the probe did not get through")
			}
		})
	}

	t.Run("no namespace has the address", func(t *testing.T) {
		requireAgentBin(t)
		tp := newTopo(t, backendNft)
		a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe-from-ip", "198.19.255.254", "--duration", "30s")
		if code := a.wait(30 * time.Second); code == 0 {
			t.Fatalf("exit code 0, want a failure\nstderr:\n%s", a.stderr.String())
		}
		bye := a.bye()
		want := "--probe-from-ip: no network namespace on this node has address 198.19.255.254"
		if len(bye.Error) < len(want) || bye.Error[:len(want)] != want {
			t.Errorf("bye error %q, want it to start with %q", bye.Error, want)
		}
		if rules := svctraceRules(t, tp.node); len(rules) != 0 {
			t.Errorf("rules left: %v", rules)
		}
	})
}
