//go:build linux

package agent

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// hopKey is what a test asserts of a hop.
type hopKey struct {
	Table, Chain, Kind, Verdict, Target string
}

func hopKeys(p record.Packet) []hopKey {
	out := make([]hopKey, 0, len(p.Hops))
	for _, h := range p.Hops {
		out = append(out, hopKey{h.Table, h.Chain, h.Kind, h.Verdict, h.Target})
	}
	return out
}

// natPath is the part of a Service packet's path kube-proxy decides: the
// nat hops from the Service portal to the endpoint's DNAT, and MASQUERADE.
func natPath(p record.Packet) []hopKey {
	var out []hopKey
	for _, k := range hopKeys(p) {
		if k.Table == "nat" && k.Kind == "rule" {
			out = append(out, k)
		}
	}
	return out
}

func TestAgentTracesClusterIP(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		for _, fam := range []uint8{4, 6} {
			t.Run(fmt.Sprintf("%s/IPv%d", b, fam), func(t *testing.T) {
				requireAgent(t, b)
				tp := newTopo(t, b)
				svc, ep := tp.svc4(), netip.AddrPortFrom(tp.epIP4(), 8080)
				if fam == 6 {
					svc, ep = tp.svc6(), netip.AddrPortFrom(tp.epIP6(), 8080)
				}
				before := tp.node.ruleset(t)
				a := startAgent(t, tp.node, "--dst", svc.String(), "--probe", "--max-packets", "1", "--duration", "30s", "--node", "n1", "--service", "default/myapp/tcp")
				ready := a.waitReady(10 * time.Second)
				wantSource := map[ipBackend]string{backendLegacy: "kmsg", backendNft: "nftrace"}[b]
				if ready["backend"] != string(b) || ready["mode"] != "iptables" || ready["source"] != wantSource {
					t.Errorf("ready = %v, want backend %s, mode iptables, source %s", ready, b, wantSource)
				}
				p := a.onePacket(30 * time.Second)
				nat := []hopKey{
					{"nat", "OUTPUT", "rule", "JUMP", "KUBE-SERVICES"},
					{"nat", "KUBE-SERVICES", "rule", "JUMP", tp.svcChain()},
					{"nat", tp.svcChain(), "rule", "JUMP", "KUBE-MARK-MASQ"},
					{"nat", "KUBE-MARK-MASQ", "rule", "CONTINUE", ""},
					{"nat", tp.svcChain(), "rule", "JUMP", tp.sepChain(ep)},
					{"nat", tp.sepChain(ep), "rule", "DNAT", ep.String()},
					{"nat", "POSTROUTING", "rule", "JUMP", "KUBE-POSTROUTING"},
					{"nat", "KUBE-POSTROUTING", "rule", "CONTINUE", ""},
					{"nat", "KUBE-POSTROUTING", "rule", "MASQUERADE", ""},
				}
				if diff := cmp.Diff(nat, natPath(p)); diff != "" {
					t.Errorf("nat path (-want +got):\n%s\nall hops: %v", diff, hopKeys(p))
				}
				if p.Dst != svc.String() || p.Endpoint != ep.String() || p.Service != "default/myapp" || p.Verdict != record.VerdictAccept || p.Node != "n1" {
					t.Errorf("packet dst %s endpoint %s service %q verdict %s node %q; want %s, %s, default/myapp, ACCEPT, n1", p.Dst, p.Endpoint, p.Service, p.Verdict, p.Node, svc, ep)
				}
				// MASQUERADE gives the node's address on the link to
				// the endpoint: the agent reads it from that interface.
				masq := tp.nodeIP4()
				if fam == 6 {
					masq = tp.nodeIP6()
				}
				wantNAT := []record.NAT{
					{Kind: record.NATDNAT, Chain: tp.sepChain(ep), Table: "nat", Rule: 2, To: ep.String()},
					{Kind: record.NATMasquerade, Chain: "KUBE-POSTROUTING", Table: "nat", Rule: 3, To: masq.String()},
				}
				if diff := cmp.Diff(wantNAT, p.NAT); diff != "" {
					t.Errorf("NAT (-want +got):\n%s", diff)
				}
				if p.Explain == nil || p.Explain.SourceSeenByEndpoint != masq.String() {
					t.Errorf("explain %+v, want the endpoint to see source %s", p.Explain, masq)
				}
				// The rule text comes from the snapshot, exactly as
				// iptables -S prints it.
				bits := "/32"
				if fam == 6 {
					bits = "/128"
				}
				wantText := fmt.Sprintf("-A KUBE-SERVICES -d %s%s -p tcp -m comment --comment \"default/myapp cluster IP\" -m tcp --dport 80 -j %s", svc.Addr(), bits, tp.svcChain())
				found := false
				for _, h := range p.Hops {
					if h.Chain == "KUBE-SERVICES" && h.Table == "nat" && h.Kind == "rule" {
						found = true
						if h.Text != wantText {
							t.Errorf("KUBE-SERVICES hop text\n got %q\nwant %q", h.Text, wantText)
						}
					}
				}
				if !found {
					t.Error("no nat KUBE-SERVICES hop")
				}
				bye := a.bye()
				if bye.Reason != "count" || bye.RulesRemoved != 2 || bye.Packets != 1 || bye.Lost != 0 {
					t.Errorf("bye = %+v, want reason count, 2 rules removed, 1 packet, 0 lost", bye)
				}
				if diff := cmp.Diff(before, tp.node.ruleset(t)); diff != "" {
					t.Errorf("ruleset after the session differs from before (-before +after):\n%s", diff)
				}
			})
		}
	}
}

func TestAgentTracesNodePortFromOutside(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopo(t, b)
			before := tp.node.ruleset(t)
			a := startAgent(t, tp.node, "--nodeport", fmt.Sprint(testNodePort), "--max-packets", "1", "--duration", "30s")
			a.waitReady(10 * time.Second)
			// An outside client (the endpoint's namespace) connects to
			// the node's NodePort: kube-proxy DNATs it back to the
			// endpoint and masquerades it.
			if err := tp.dialFromEndpoint(t, netip.AddrPortFrom(tp.nodeIP4(), testNodePort)); err != nil {
				t.Fatalf("connect to the NodePort: %v", err)
			}
			pkt := a.onePacket(30 * time.Second)
			ep := netip.AddrPortFrom(tp.epIP4(), 8080)
			want := []hopKey{
				{"nat", "PREROUTING", "rule", "JUMP", "KUBE-SERVICES"},
				{"nat", "KUBE-SERVICES", "rule", "JUMP", "KUBE-NODEPORTS"},
				{"nat", "KUBE-NODEPORTS", "rule", "JUMP", tp.extChain()},
				{"nat", tp.extChain(), "rule", "JUMP", "KUBE-MARK-MASQ"},
				{"nat", "KUBE-MARK-MASQ", "rule", "CONTINUE", ""},
				{"nat", tp.extChain(), "rule", "JUMP", tp.svcChain()},
				{"nat", tp.svcChain(), "rule", "JUMP", tp.sepChain(ep)},
				// The client is the endpoint itself (hairpin): the
				// endpoint chain's own masquerade rule matches too.
				{"nat", tp.sepChain(ep), "rule", "JUMP", "KUBE-MARK-MASQ"},
				{"nat", "KUBE-MARK-MASQ", "rule", "CONTINUE", ""},
				{"nat", tp.sepChain(ep), "rule", "DNAT", ep.String()},
				{"nat", "POSTROUTING", "rule", "JUMP", "KUBE-POSTROUTING"},
				{"nat", "KUBE-POSTROUTING", "rule", "CONTINUE", ""},
				{"nat", "KUBE-POSTROUTING", "rule", "MASQUERADE", ""},
			}
			if diff := cmp.Diff(want, natPath(pkt)); diff != "" {
				t.Errorf("nat path (-want +got):\n%s\nall hops: %v", diff, hopKeys(pkt))
			}
			if pkt.Endpoint != ep.String() {
				t.Errorf("endpoint %q, want %s", pkt.Endpoint, ep)
			}
			if got := tp.node.ruleset(t); got != before {
				t.Errorf("ruleset after the session differs from before:\n%s", cmp.Diff(before, got))
			}
		})
	}
}

// TestAgentStops ends sessions every way the plugin or the node can, and
// checks each one leaves the rules exactly as they were.
func TestAgentStops(t *testing.T) {
	type stopCase struct {
		name       string
		args       []string
		stop       func(a *agentProc)
		wantReason string
	}
	cases := []stopCase{
		{name: "SIGTERM", stop: func(a *agentProc) { a.signal(syscall.SIGTERM) }, wantReason: "signal"},
		{name: "SIGINT", stop: func(a *agentProc) { a.signal(syscall.SIGINT) }, wantReason: "signal"},
		{name: "stdin EOF", args: []string{"--stdin-watch"}, stop: func(a *agentProc) {
			// The plugin's first line is answered: its hold reaches the agent.
			if _, err := io.WriteString(a.stdin, record.WordHello+"\n"); err != nil {
				a.t.Fatal(err)
			}
			waitRecord(a, record.TypeAttached, 10*time.Second, func(record.Attached) bool { return true })
			a.stdin.Close()
		}, wantReason: "stdin"},
		{name: "duration", args: []string{"--duration", "2s"}, stop: func(*agentProc) {}, wantReason: "duration"},
	}
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		for _, c := range cases {
			t.Run(string(b)+"/"+c.name, func(t *testing.T) {
				requireAgent(t, b)
				tp := newTopo(t, b)
				before := tp.node.ruleset(t)
				args := append([]string{"--dst", tp.svc4().String() + "," + tp.svc6().String(), "--nodeport", fmt.Sprint(testNodePort)}, c.args...)
				if !slices.Contains(c.args, "--duration") {
					args = append(args, "--duration", "60s")
				}
				a := startAgent(t, tp.node, args...)
				a.waitReady(10 * time.Second)
				if n := len(svctraceRules(t, tp.node)); n != 8 {
					t.Fatalf("%d svctrace rules while tracing, want 8 (2 chains x (v4 dst, v6 dst, v4 and v6 NodePort))", n)
				}
				if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
					t.Fatalf("connect to the Service: %v", err)
				}
				waitRecord(a, record.TypePacket, 10*time.Second, func(record.Packet) bool { return true })
				c.stop(a)
				if code := a.wait(20 * time.Second); code != 0 {
					t.Fatalf("exit code %d, want 0\nstderr:\n%s", code, a.stderr.String())
				}
				bye := a.bye()
				if bye.Reason != c.wantReason || bye.RulesRemoved != 8 {
					t.Errorf("bye = %+v, want reason %s and 8 rules removed", bye, c.wantReason)
				}
				if diff := cmp.Diff(before, tp.node.ruleset(t)); diff != "" {
					t.Errorf("ruleset after the session differs from before (-before +after):\n%s", diff)
				}
			})
		}
	}
}

// TestAgentSurvivesRawRestore restores the raw table under a running session
// the two ways kube-proxy-like tools do: --noflush (adds, keeps ours) and a
// full restore (drops ours: the session must notice and insert them again).
func TestAgentSurvivesRawRestore(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopo(t, b)
			before := tp.node.ruleset(t)
			a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "60s", "--watch-interval", "200ms")
			a.waitReady(10 * time.Second)
			restore := b.Binary(4) + "-restore"

			// A --noflush restore that adds a rule of its own.
			other := "-A PREROUTING -d 192.0.2.99/32 -m comment --comment other-tool -j NOTRACK"
			tp.node.mustRestore(t, "*raw\n"+other+"\nCOMMIT\n", restore, "-w", "--noflush")
			if n := len(svctraceRules(t, tp.node)); n != 2 {
				t.Fatalf("after a --noflush restore: %d svctrace rules, want 2", n)
			}

			// A full restore of the raw table without our rules.
			tp.node.mustRestore(t, "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", restore, "-w")
			w := waitRecord(a, record.TypeWarning, 10*time.Second, func(w record.Warning) bool {
				return strings.Contains(w.Message, "inserted them again")
			})
			t.Logf("warning: %s", w.Message)
			if n := len(svctraceRules(t, tp.node)); n != 2 {
				t.Fatalf("after the session re-inserted its rules: %d svctrace rules, want 2", n)
			}
			// And it still traces.
			if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
				t.Fatal(err)
			}
			waitRecord(a, record.TypePacket, 10*time.Second, func(p record.Packet) bool { return p.Endpoint != "" })
			a.signal(syscall.SIGTERM)
			if code := a.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
			}
			if bye := a.bye(); bye.RulesRemoved != 2 {
				t.Errorf("bye = %+v, want 2 rules removed", bye)
			}
			// The full restore removed the other tool's rules too; what
			// is left must be what was there before.
			if diff := cmp.Diff(before, tp.node.ruleset(t)); diff != "" {
				t.Errorf("ruleset after the session differs from before (-before +after):\n%s", diff)
			}
		})
	}
}

// TestAgentSweepsKilledSession: a SIGKILLed agent cannot clean up; the next
// session (or `agent --cleanup`) must remove its rules and what it created.
func TestAgentSweepsKilledSession(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		for _, how := range []string{"next session", "agent --cleanup"} {
			t.Run(string(b)+"/"+how, func(t *testing.T) {
				requireAgent(t, b)
				tp := newTopo(t, b)
				before := tp.node.ruleset(t)
				// Two sessions running at once, then both killed: every
				// rule of both must go.
				var killed []*agentProc
				for i := 0; i < 2; i++ {
					a := startAgent(t, tp.node, "--dst", tp.svc4().String()+","+tp.svc6().String(), "--duration", "60s")
					a.waitReady(10 * time.Second)
					killed = append(killed, a)
				}
				for _, a := range killed {
					a.signal(syscall.SIGKILL)
					if code := a.wait(10 * time.Second); code != -int(syscall.SIGKILL) {
						t.Fatalf("exit code %d, want killed", code)
					}
				}
				if n := len(svctraceRules(t, tp.node)); n != 8 {
					t.Fatalf("%d svctrace rules left by the killed sessions, want 8", n)
				}
				switch how {
				case "next session":
					a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "1s")
					a.waitReady(10 * time.Second)
					if n := len(svctraceRules(t, tp.node)); n != 2 {
						t.Errorf("%d svctrace rules while the new session runs, want its own 2", n)
					}
					if code := a.wait(20 * time.Second); code != 0 {
						t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
					}
					if !strings.Contains(a.stderr.String(), "removed 8 TRACE rule(s) left by dead svctrace sessions") {
						t.Errorf("stderr does not report the sweep:\n%s", a.stderr.String())
					}
				case "agent --cleanup":
					a := startAgent(t, tp.node, "--cleanup")
					if code := a.wait(20 * time.Second); code != 0 {
						t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
					}
					if bye := a.bye(); bye.RulesRemoved != 8 || bye.Reason != "cleanup" {
						t.Errorf("bye = %+v, want 8 rules removed, reason cleanup", bye)
					}
				}
				if diff := cmp.Diff(before, tp.node.ruleset(t)); diff != "" {
					t.Errorf("ruleset differs from before the killed sessions (-before +after):\n%s", diff)
				}
			})
		}
	}
}

// TestAgentLeavesLiveSessionAlone: a second session must not sweep the rules
// of one that still runs.
func TestAgentLeavesLiveSessionAlone(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "60s")
	a.waitReady(10 * time.Second)
	b := startAgent(t, tp.node, "--dst", tp.svc6().String(), "--duration", "60s")
	b.waitReady(10 * time.Second)
	if n := len(svctraceRules(t, tp.node)); n != 4 {
		t.Fatalf("%d svctrace rules with two live sessions, want 4", n)
	}
	b.signal(syscall.SIGTERM)
	b.wait(20 * time.Second)
	if n := len(svctraceRules(t, tp.node)); n != 2 {
		t.Fatalf("%d svctrace rules after the second session ended, want the first's 2", n)
	}
	a.signal(syscall.SIGTERM)
	a.wait(20 * time.Second)
	if n := len(svctraceRules(t, tp.node)); n != 0 {
		t.Fatalf("%d svctrace rules after both ended, want 0", n)
	}
}

// TestAgentBindsLogger: a namespace whose IPv4 logger is unbound gets it
// bound for the session and unbound after.
func TestAgentBindsLogger(t *testing.T) {
	requireAgent(t, backendLegacy)
	tp := newTopo(t, backendLegacy)
	tp.node.mustRun(t, "sh", "-c", "echo NONE > /proc/sys/net/netfilter/nf_log/2")
	logger := func() string {
		return strings.TrimSpace(tp.node.mustRun(t, "cat", "/proc/sys/net/netfilter/nf_log/2"))
	}
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	if got := logger(); got != "nf_log_ipv4" {
		t.Errorf("logger while tracing = %q, want nf_log_ipv4", got)
	}
	// The traffic comes after the check (a --probe packet could end the
	// session, and restore the logger, before it).
	if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
		t.Fatal(err)
	}
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	if n := len(recordsOf[record.Packet](a, record.TypePacket)); n != 1 {
		t.Errorf("%d packets, want 1: the bound logger must carry the trace", n)
	}
	if got := logger(); got != "NONE" {
		t.Errorf("logger after the session = %q, want NONE again", got)
	}
}

// TestAgentRefusesNodeWithoutKubeProxy: nothing to trace must be an error
// that says why, not a silent empty trace.
func TestAgentRefusesNodeWithoutKubeProxy(t *testing.T) {
	requireAgentBin(t)
	ns := newNetns(t, "bare")
	before := ns.ruleset(t)
	a := startAgent(t, ns, "--dst", "198.18.200.10:80")
	if code := a.wait(20 * time.Second); code == 0 {
		t.Fatal("exit code 0 on a node without kube-proxy rules, want a failure")
	}
	if !strings.Contains(a.stderr.String(), "no kube-proxy rules on this node") || !strings.Contains(a.stderr.String(), "eBPF") {
		t.Errorf("stderr does not explain:\n%s", a.stderr.String())
	}
	if bye := a.bye(); bye.Reason != "error" || !strings.Contains(bye.Error, "no kube-proxy rules") {
		t.Errorf("bye = %+v, want reason error and the explanation", bye)
	}
	if got := ns.ruleset(t); got != before {
		t.Errorf("ruleset changed:\n%s", cmp.Diff(before, got))
	}
}

// TestAgentNftablesMode: kube-proxy in nftables mode keeps its rules in
// `table ip kube-proxy`; an iptables-nft raw TRACE rule follows the packet
// into it.
func TestAgentNftablesMode(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	// Replace the iptables-mode rules with a kube-proxy nftables-mode
	// table of the same shape as v1.36's.
	for _, fam := range []uint8{4, 6} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			tp.node.mustRun(t, "nft", "delete", "table", nftFamily(fam), table)
		}
	}
	svc, ep := tp.svc4(), netip.AddrPortFrom(tp.epIP4(), 8080)
	chain := "service-6QYGQ5L4-default/myapp/tcp/"
	epChain := "endpoint-AAAAAAAA-default/myapp/tcp/__" + ep.Addr().String() + "/8080"
	ruleset := fmt.Sprintf(`table ip kube-proxy {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { %s . tcp . %d : goto %s }
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump masquerading
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}
	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain %s {
		ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto %s }
	}
	chain %s {
		meta l4proto tcp dnat to %s
	}
}
`, svc.Addr(), svc.Port(), chain, chain, epChain, epChain, ep)
	tp.node.mustRestore(t, ruleset, "nft", "-f", "-")
	before := tp.node.ruleset(t)
	a := startAgent(t, tp.node, "--dst", svc.String(), "--probe", "--max-packets", "1", "--duration", "30s")
	ready := a.waitReady(10 * time.Second)
	if ready["mode"] != "nftables" || ready["backend"] != "nft" || ready["source"] != "nftrace" {
		t.Errorf("ready = %v, want mode nftables, backend nft, source nftrace", ready)
	}
	pkt := a.onePacket(30 * time.Second)
	var chains []string
	for _, h := range pkt.Hops {
		if h.Table == "kube-proxy" && h.Kind == "rule" {
			chains = append(chains, h.Chain)
		}
	}
	want := []string{"nat-output", "services", chain, "mark-for-masquerade", chain, epChain, "nat-postrouting", "masquerading", "masquerading"}
	if diff := cmp.Diff(want, chains); diff != "" {
		t.Errorf("kube-proxy table rule hops (-want +got):\n%s\nall: %v", diff, hopKeys(pkt))
	}
	for _, h := range pkt.Hops {
		if h.Chain == epChain && h.Text == "" {
			t.Errorf("endpoint hop has no rule text: the snapshot of table ip kube-proxy should give it")
		}
	}
	if got := tp.node.ruleset(t); got != before {
		t.Errorf("ruleset after the session differs:\n%s", cmp.Diff(before, got))
	}
}

func TestAgentTracesUDP(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopoProto(t, b, "udp")
			before := tp.node.ruleset(t)
			// --probe sends one datagram: UDP has no connection
			// opening, so every datagram is traced.
			a := startAgent(t, tp.node, "--proto", "udp", "--dst", tp.svc4().String(), "--probe", "--max-packets", "1", "--duration", "30s")
			a.waitReady(10 * time.Second)
			pkt := a.onePacket(30 * time.Second)
			ep := netip.AddrPortFrom(tp.epIP4(), 8080)
			p := pkt
			if p.Proto != "udp" || p.Endpoint != ep.String() || p.Verdict != record.VerdictAccept || p.Flags != "" {
				t.Errorf("packet proto %s endpoint %s verdict %s flags %q; want udp, %s, ACCEPT, no flags", p.Proto, p.Endpoint, p.Verdict, p.Flags, ep)
			}
			if got := natPath(p); len(got) < 6 || got[5] != (hopKey{"nat", tp.sepChain(ep), "rule", "DNAT", ep.String()}) {
				t.Errorf("nat path %v: want the UDP endpoint chain's DNAT as 6th nat hop", got)
			}
			if got := tp.node.ruleset(t); got != before {
				t.Errorf("ruleset changed:\n%s", cmp.Diff(before, got))
			}
		})
	}
}

// TestAgentProbesNodePort: --probe reaches a NodePort on the node's own
// address, through OUTPUT and KUBE-NODEPORTS.
func TestAgentProbesNodePort(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	a := startAgent(t, tp.node, "--nodeport", fmt.Sprint(testNodePort), "--probe", "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	pkt := a.onePacket(30 * time.Second)
	p := pkt
	if want := netip.AddrPortFrom(tp.nodeIP4(), testNodePort).String(); p.Dst != want {
		t.Errorf("probe went to %s, want the node's address %s", p.Dst, want)
	}
	want := []hopKey{
		{"nat", "OUTPUT", "rule", "JUMP", "KUBE-SERVICES"},
		{"nat", "KUBE-SERVICES", "rule", "JUMP", "KUBE-NODEPORTS"},
		{"nat", "KUBE-NODEPORTS", "rule", "JUMP", tp.extChain()},
	}
	if got := natPath(p); len(got) < 3 || cmp.Diff(want, got[:3]) != "" {
		t.Errorf("nat path %v, want it to start %v", got, want)
	}
}

// TestAgentProbeTo: with the cluster IP and the NodePort both traced,
// --probe-to makes the probe connect to the NodePort only (the plugin's
// --probe nodeport), which a cluster-IP-first probe would never reach with
// --max-packets 1.
func TestAgentProbeTo(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	np := netip.AddrPortFrom(tp.nodeIP4(), testNodePort)
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--nodeport", fmt.Sprint(testNodePort),
		"--probe", "--probe-to", np.String(), "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	ready := time.Now()
	waitRecord(a, record.TypePacket, 10*time.Second, func(record.Packet) bool { return true })
	answer := time.Now()
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	pkts := recordsOf[record.Packet](a, record.TypePacket)
	if len(pkts) != 1 || pkts[0].Dst != np.String() {
		t.Fatalf("packets %+v, want one to the NodePort %s\nstderr:\n%s", pkts, np, a.stderr.String())
	}
	// Where the agent's time goes, for the on-call timing (not asserted).
	t.Logf("ready -> packet record %.3fs, packet record -> exit %.3fs", answer.Sub(ready).Seconds(), time.Since(answer).Seconds())
	if !strings.Contains(a.stderr.String(), "probe tcp "+np.String()) || strings.Contains(a.stderr.String(), "probe tcp "+tp.svc4().String()) {
		t.Errorf("the agent probed other addresses than %s:\n%s", np, a.stderr.String())
	}
}

// TestAgentBothBackends: kube-proxy chains in iptables-legacy and in
// iptables-nft (a node mid-migration): both are traced, each through its
// own source.
func TestAgentBothBackends(t *testing.T) {
	requireAgent(t, backendLegacy)
	tp := newTopo(t, backendLegacy)
	tp.node.mustRestore(t, tp.kubeProxyRules(4), "iptables-nft-restore")
	before := tp.node.ruleset(t)
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe", "--duration", "30s")
	ready := a.waitReady(10 * time.Second)
	if ready["backend"] != "both" || ready["source"] != "kmsg,nftrace" {
		t.Errorf("ready = %v, want backend both, source kmsg,nftrace", ready)
	}
	if rs, _ := ready["rules"].([]any); len(rs) != 4 {
		t.Errorf("ready lists %d rules, want 4 (2 chains x 2 backends)", len(rs))
	}
	// One probe, seen by both sources: one packet without a trace id
	// (kernel log) and one with (netlink).
	waitRecord(a, record.TypePacket, 10*time.Second, func(p record.Packet) bool { return p.TraceID != "" })
	waitRecord(a, record.TypePacket, 10*time.Second, func(p record.Packet) bool { return p.TraceID == "" })
	a.signal(syscall.SIGTERM)
	if code := a.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	if bye := a.bye(); bye.RulesRemoved != 4 {
		t.Errorf("bye = %+v, want 4 rules removed", bye)
	}
	if got := tp.node.ruleset(t); got != before {
		t.Errorf("ruleset changed:\n%s", cmp.Diff(before, got))
	}
}

// TestAgentFollowsRulesetChange: kube-proxy (or the CNI) rewrites rules the
// traced packets cross. Legacy: a rule inserted above the traced Service's
// renumbers it; the watch re-reads the ruleset, says so, and later packets
// get the right number and text. nft: the packet crosses a rule made after
// the snapshot (a new handle, as every kube-proxy resync and kube-router
// sync makes); with the watch out of the way (--watch-interval 1h) the
// writer itself must re-read the ruleset to give that hop its text.
func TestAgentFollowsRulesetChange(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopo(t, b)
			before := tp.node.ruleset(t)
			watch := "200ms"
			if b == backendNft {
				watch = "1h"
			}
			a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "60s", "--watch-interval", watch)
			a.waitReady(10 * time.Second)
			if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
				t.Fatal(err)
			}
			waitRecord(a, record.TypePacket, 10*time.Second, func(record.Packet) bool { return true })
			extra := []string{"-w", "-t", "nat", "-I", "KUBE-SERVICES", "1", "-d", "192.0.2.1/32", "-p", "tcp", "-m", "tcp", "--dport", "9", "-j", "RETURN"}
			if b == backendNft {
				// A copy of the Service's rule, above it: the packet takes the new one.
				extra = []string{"-w", "-t", "nat", "-I", "KUBE-SERVICES", "1", "-d", tp.svc4().Addr().String() + "/32", "-p", "tcp", "-m", "comment", "--comment", "default/myapp cluster IP", "-m", "tcp", "--dport", "80", "-j", tp.svcChain()}
			}
			tp.node.mustRun(t, append([]string{b.Binary(4)}, extra...)...)
			if b == backendLegacy {
				waitRecord(a, record.TypeWarning, 10*time.Second, func(w record.Warning) bool {
					return strings.Contains(w.Message, "ruleset changed")
				})
			}
			if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(recordsOf[record.Packet](a, record.TypePacket)) < 2 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			pkts := recordsOf[record.Packet](a, record.TypePacket)
			last := pkts[len(pkts)-1]
			want := fmt.Sprintf("-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"default/myapp cluster IP\" -m tcp --dport 80 -j %s", tp.svc4().Addr(), tp.svcChain())
			wantRule := 2 // legacy: below the inserted rule
			if b == backendNft {
				wantRule = 1 // the new copy
			}
			found := false
			for _, h := range last.Hops {
				if h.Table == "nat" && h.Chain == "KUBE-SERVICES" && h.Kind == "rule" {
					found = true
					if h.Text != want {
						t.Errorf("KUBE-SERVICES hop text after the change\n got %q\nwant %q", h.Text, want)
					}
					if h.Rule != wantRule {
						t.Errorf("KUBE-SERVICES hop rule %d after the change, want %d", h.Rule, wantRule)
					}
				}
			}
			if !found {
				t.Errorf("no KUBE-SERVICES rule hop in %+v", last.Hops)
			}
			a.signal(syscall.SIGTERM)
			if code := a.wait(20 * time.Second); code != 0 {
				t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
			}
			del := append(append([]string{b.Binary(4)}, extra[:5]...), extra[6:]...)
			del[4] = "-D"
			tp.node.mustRun(t, del...)
			if got := tp.node.ruleset(t); got != before {
				t.Errorf("ruleset changed:\n%s", cmp.Diff(before, got))
			}
		})
	}
}

// TestAgentIncompatibleChain: a chain iptables-nft cannot print (written
// with nft alone, or caught mid-rewrite by its owner) costs only its own
// text: the snapshot still names every other hop.
func TestAgentIncompatibleChain(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	tp.node.mustRun(t, "nft", "add", "chain", "ip", "filter", "SVCTEST-NFT-ONLY")
	tp.node.mustRun(t, "nft", "add", "rule", "ip", "filter", "SVCTEST-NFT-ONLY", "meta", "mark", "set", "numgen", "inc", "mod", "2")
	t.Cleanup(func() { tp.node.mustRun(t, "nft", "delete", "chain", "ip", "filter", "SVCTEST-NFT-ONLY") })
	if out, err := tp.node.run(nil, "iptables-nft", "-t", "filter", "-S", "SVCTEST-NFT-ONLY"); err == nil || !strings.Contains(err.Error(), "incompatible") {
		t.Fatalf("want iptables-nft to refuse the chain, got %v: %s", err, out)
	}
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe", "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	for _, w := range recordsOf[record.Warning](a, record.TypeWarning) {
		if strings.Contains(w.Message, "no rule text") {
			t.Errorf("warning %q", w.Message)
		}
	}
	pkts := recordsOf[record.Packet](a, record.TypePacket)
	if len(pkts) != 1 {
		t.Fatalf("%d packets, want 1\nstderr:\n%s", len(pkts), a.stderr.String())
	}
	for _, h := range pkts[0].Hops {
		if h.Kind == "rule" && h.Text == "" {
			t.Errorf("hop %s:%s rule %d has no text", h.Table, h.Chain, h.Rule)
		}
	}
}

// TestAgentProbeWaitsForSettledRules: a NetworkPolicy plugin (here a
// stand-in for kube-router: its entry chain, and a per-pod chain renamed
// every 100 ms, as its syncs do when the agent pods start) is rewriting
// the chains the probe will cross. The probe waits until the ruleset
// settled, so its packet crosses the last generation, with rule text.
func TestAgentProbeWaitsForSettledRules(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	before := tp.node.ruleset(t)
	ipt := func(args ...string) {
		tp.node.mustRun(t, append([]string{"iptables-nft", "-w", "-t", "filter"}, args...)...)
	}
	ipt("-N", "KUBE-ROUTER-FORWARD")
	ipt("-A", "KUBE-ROUTER-FORWARD", "-j", "RETURN")
	gen := func(n int) string { return fmt.Sprintf("KUBE-POD-FW-GEN%d", n) }
	jump := func(n int) []string {
		// After the nat OUTPUT hook: the packet is DNATed by then.
		return []string{"OUTPUT", "-p", "tcp", "-m", "comment", "--comment", "svctest-generation", "-j", gen(n)}
	}
	ipt("-N", gen(0))
	ipt("-A", gen(0), "-j", "RETURN")
	ipt(append([]string{"-I"}, jump(0)...)...)
	last := 0
	t.Cleanup(func() {
		ipt("-D", "OUTPUT", "1")
		for _, c := range []string{gen(last), "KUBE-ROUTER-FORWARD"} {
			ipt("-F", c)
			ipt("-X", c)
		}
		if got := tp.node.ruleset(t); got != before {
			t.Errorf("ruleset changed:\n%s", cmp.Diff(before, got))
		}
	})
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe", "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	// The plugin's syncs: a new generation every 100 ms for 1.2 s, each
	// one iptables-restore transaction as kube-router writes them. Bounded
	// by the clock, not a count, so that slow commands on a loaded machine
	// do not stretch the changes past the agent's settle limit (3 s).
	for start := time.Now(); time.Since(start) < 1200*time.Millisecond; {
		time.Sleep(100 * time.Millisecond)
		n := last + 1
		tp.node.mustRestore(t, fmt.Sprintf("*filter\n:%s - [0:0]\n-A %s -j RETURN\n-I %s\n-D OUTPUT 2\n-F %s\n-X %s\nCOMMIT\n",
			gen(n), gen(n), strings.Join(jump(n), " "), gen(n-1), gen(n-1)), "iptables-nft-restore", "-w", "--noflush")
		last = n
	}
	if code := a.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	if !strings.Contains(a.stderr.String(), "the ruleset settled ") {
		t.Errorf("the agent did not wait for the ruleset to settle:\n%s", a.stderr.String())
	}
	pkts := recordsOf[record.Packet](a, record.TypePacket)
	if len(pkts) != 1 {
		t.Fatalf("%d packets, want 1\nstderr:\n%s", len(pkts), a.stderr.String())
	}
	var crossed []string
	for _, h := range pkts[0].Hops {
		if h.Table == "filter" && strings.HasPrefix(h.Chain, "KUBE-POD-FW-") {
			crossed = append(crossed, h.Chain)
			if h.Kind == "rule" && h.Text == "" {
				t.Errorf("hop %s rule has no text", h.Chain)
			}
		}
		if h.Table == "filter" && h.Chain == "OUTPUT" && h.Kind == "rule" && h.Text == "" {
			t.Errorf("filter OUTPUT hop has no text")
		}
	}
	if len(crossed) == 0 || crossed[0] != gen(last) {
		t.Errorf("the probe crossed %v, want the last generation %s", crossed, gen(last))
	}
}

// TestAgentBigNatTable: a nat table past natWholeMax chains (kube-proxy's
// per-Service chains of a big cluster) is read chain by chain along the
// walk from the traced destination, and every nat hop still has its text.
func TestAgentBigNatTable(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	// Empty per-Service chains nothing jumps to: line is how a restore
	// creates, then deletes, each.
	pad := func(line string) {
		var b strings.Builder
		b.WriteString("*nat\n")
		for i := range natWholeMax + 20 {
			fmt.Fprintf(&b, line+"\n", fmt.Sprintf("KUBE-SVC-PAD%010d", i))
		}
		b.WriteString("COMMIT\n")
		tp.node.mustRestore(t, b.String(), "iptables-nft-restore", "--noflush")
	}
	pad(":%s - [0:0]")
	t.Cleanup(func() { pad("-X %s") })
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--probe", "--max-packets", "1", "--duration", "30s")
	a.waitReady(10 * time.Second)
	pkt := a.onePacket(30 * time.Second)
	nat := 0
	for _, h := range pkt.Hops {
		if h.Table == "nat" && h.Kind == "rule" {
			nat++
			if h.Text == "" {
				t.Errorf("hop nat:%s rule %d has no text", h.Chain, h.Rule)
			}
		}
	}
	if nat < 5 || pkt.Endpoint == "" {
		t.Errorf("%d nat rule hops, endpoint %q: want the Service's path to an endpoint", nat, pkt.Endpoint)
	}
}

// TestAgentKeepsOthersRulesAtItsHandles: the raw table deleted and created
// again by someone else numbers its rules anew, so the handles the agent
// recorded may now hold another tool's rules. Its removal by handle checks
// whose rule a handle holds: the other tool's rules stay.
func TestAgentKeepsOthersRulesAtItsHandles(t *testing.T) {
	requireAgentBin(t)
	tp := newTopo(t, backendNft)
	a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "60s", "--watch-interval", "1h")
	a.waitReady(10 * time.Second)
	tp.node.mustRun(t, "nft", "delete", "table", "ip", "raw")
	var other strings.Builder
	other.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range 8 {
		fmt.Fprintf(&other, "-A PREROUTING -d 192.0.2.%d/32 -m comment --comment other-tool -j NOTRACK\n", i+1)
		fmt.Fprintf(&other, "-A OUTPUT -d 192.0.2.%d/32 -m comment --comment other-tool -j NOTRACK\n", i+1)
	}
	other.WriteString("COMMIT\n")
	tp.node.mustRestore(t, other.String(), "iptables-nft-restore", "-w")
	before := tp.node.mustRun(t, "iptables-nft", "-t", "raw", "-S")
	a.signal(syscall.SIGTERM)
	if code := a.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d\nstderr:\n%s", code, a.stderr.String())
	}
	if bye := a.bye(); bye.RulesRemoved != 0 {
		t.Errorf("bye = %+v, want 0 rules removed (they were gone with the table)", bye)
	}
	if after := tp.node.mustRun(t, "iptables-nft", "-t", "raw", "-S"); after != before {
		t.Errorf("the other tool's raw rules changed:\n%s", cmp.Diff(before, after))
	}
}

// TestForeignTables: nft tables the snapshot does not read (an inet table,
// kube-proxy's when kube-proxy is not in nftables mode) leave a hook's base
// chains unknown.
func TestForeignTables(t *testing.T) {
	tp := newTopo(t, backendNft)
	check := func(what string, nftTable, want bool) {
		t.Helper()
		var got bool
		var err error
		tp.node.do(t, func() {
			h := newHost()
			defer h.Close()
			s := &snapshotter{h: h, det: detection{Families: []familyDetection{{Family: 4, Nft: true, NftTable: nftTable}}}}
			got, err = s.foreignTables()
		})
		if err != nil || got != want {
			t.Errorf("%s: foreign %v (%v), want %v", what, got, err, want)
		}
	}
	check("iptables-nft's tables only", false, false)
	tp.node.mustRun(t, "nft", "add", "table", "ip", "kube-proxy")
	t.Cleanup(func() { tp.node.mustRun(t, "nft", "delete", "table", "ip", "kube-proxy") })
	check("kube-proxy's table, read in nftables mode", true, false)
	check("kube-proxy's table, not read in iptables mode", false, true)
	tp.node.mustRun(t, "nft", "add", "table", "inet", "svctest")
	t.Cleanup(func() { tp.node.mustRun(t, "nft", "delete", "table", "inet", "svctest") })
	check("an inet table", true, true)
}

// TestAgentStarvedKeepsPacketsWhole stops the agent (SIGSTOP) while a
// connection is traced and resumes it 300 ms later, as a node starved of CPU
// does to it: the packet's records wait in the kernel's queue while the
// clock runs past the quiet window, and the agent must still emit the packet
// whole, once, and not cut where the Tick after the pause fell.
func TestAgentStarvedKeepsPacketsWhole(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			tp := newTopo(t, b)
			a := startAgent(t, tp.node, "--dst", tp.svc4().String(), "--duration", "60s")
			a.waitReady(10 * time.Second)
			const runs = 8
			for i := range runs {
				if i > 0 {
					a.signal(syscall.SIGSTOP)
				}
				if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
					a.signal(syscall.SIGCONT)
					t.Fatalf("connect to the Service: %v", err)
				}
				if i > 0 {
					time.Sleep(300 * time.Millisecond)
					a.signal(syscall.SIGCONT)
				}
				waitRecord(a, record.TypePacket, 10*time.Second, func(record.Packet) bool {
					return len(recordsOf[record.Packet](a, record.TypePacket)) > i
				})
			}
			time.Sleep(500 * time.Millisecond) // a cut packet's second part
			pkts := recordsOf[record.Packet](a, record.TypePacket)
			var hops []int
			for _, p := range pkts {
				hops = append(hops, len(p.Hops))
			}
			if len(pkts) != runs || slices.Min(hops) != slices.Max(hops) {
				t.Errorf("%d packets of %v hops for %d connections (the first one unstarved), want %d of the same length", len(pkts), hops, runs, runs)
				for _, p := range pkts {
					var hs []string
					for _, h := range p.Hops {
						hs = append(hs, h.Table+":"+h.Chain+":"+h.Kind)
					}
					t.Logf("%s %s: %s", p.Verdict, p.Flags, strings.Join(hs, " "))
				}
				t.Logf("agent stderr:\n%s", a.stderr.String())
			}
		})
	}
}
