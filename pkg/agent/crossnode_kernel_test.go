//go:build linux

package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/join"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// TestAgentsAcrossNodes runs two agents on one kernel, as the local
// multi-node cluster does: node n1 probes the Service, whose one endpoint
// sits behind node n2, and n2's agent traces the packet arriving for the
// endpoint. Both nodes' interface to each other is called eth0. With the
// legacy backend both agents read the same kernel log, which holds both
// nodes' lines of the same packet (same IP ID and sequence number): each
// must report only its own node's half, and the halves must join into one
// packet.
//
//	n1 eth0 198.20.X.1 --- 198.20.X.2 eth0 n2 svnX 198.19.X.1 --- 198.19.X.2 ep (:8080)
func TestAgentsAcrossNodes(t *testing.T) {
	for _, b := range []ipBackend{backendLegacy, backendNft} {
		t.Run(string(b), func(t *testing.T) {
			requireAgent(t, b)
			x := 10 + int(topoSeq.Add(1))%200
			n1, n2, ep := newNetns(t, "n1"), newNetns(t, "n2"), newNetns(t, "ep")
			link := func(a *netns, an string, z *netns, zn string) {
				if out, err := exec.Command("ip", "link", "add", an, "netns", a.name, "type", "veth", "peer", "name", zn, "netns", z.name).CombinedOutput(); err != nil {
					t.Fatalf("create veth: %v: %s", err, out)
				}
			}
			link(n1, fmt.Sprintf("sxa%d", x), n2, fmt.Sprintf("sxb%d", x))
			link(n2, fmt.Sprintf("svn%d", x), ep, fmt.Sprintf("sve%d", x))
			n1IP, n2IP := fmt.Sprintf("198.20.%d.1", x), fmt.Sprintf("198.20.%d.2", x)
			for _, c := range [][]string{
				{"ip", "link", "set", fmt.Sprintf("sxa%d", x), "name", "eth0"},
				{"ip", "addr", "add", n1IP + "/24", "dev", "eth0"},
				{"ip", "link", "set", "eth0", "up"},
				{"ip", "route", "add", fmt.Sprintf("198.19.%d.0/24", x), "via", n2IP},
				// The Service CIDR needs a route for the node's own
				// connections to reach the nat table (as on a real node).
				{"ip", "route", "add", "default", "via", n2IP},
			} {
				n1.mustRun(t, c...)
			}
			for _, c := range [][]string{
				{"ip", "link", "set", fmt.Sprintf("sxb%d", x), "name", "eth0"},
				{"ip", "addr", "add", n2IP + "/24", "dev", "eth0"},
				{"ip", "link", "set", "eth0", "up"},
				{"ip", "addr", "add", fmt.Sprintf("198.19.%d.1/24", x), "dev", fmt.Sprintf("svn%d", x)},
				{"ip", "link", "set", fmt.Sprintf("svn%d", x), "up"},
				{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
			} {
				n2.mustRun(t, c...)
			}
			for _, c := range [][]string{
				{"ip", "addr", "add", fmt.Sprintf("198.19.%d.2/24", x), "dev", fmt.Sprintf("sve%d", x)},
				{"ip", "link", "set", fmt.Sprintf("sve%d", x), "up"},
				{"ip", "route", "add", "default", "via", fmt.Sprintf("198.19.%d.1", x)},
			} {
				ep.mustRun(t, c...)
			}
			var lerr error
			var ln net.Listener
			ep.do(t, func() { ln, lerr = net.Listen("tcp4", ":8080") })
			if lerr != nil {
				t.Fatal(lerr)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			// kube-proxy programs every node alike.
			tp1 := &topo{node: n1, ep: ep, x: x, backend: b, proto: "tcp"}
			tp1.loadKubeProxy(t)
			tp2 := &topo{node: n2, ep: ep, x: x, backend: b, proto: "tcp"}
			tp2.loadKubeProxy(t)
			svc, epAddr := tp1.svc4(), netip.AddrPortFrom(tp1.epIP4(), 8080)

			a2 := startAgent(t, n2, "--dst", svc.String(), "--endpoint", epAddr.String(), "--max-packets", "1", "--duration", "20s", "--node", "n2", "--service", "default/myapp/tcp")
			a2.waitReady(10 * time.Second)
			a1 := startAgent(t, n1, "--dst", svc.String(), "--probe", "--max-packets", "1", "--duration", "20s", "--node", "n1", "--service", "default/myapp/tcp")
			a1.waitReady(10 * time.Second)
			for _, a := range []*agentProc{a1, a2} {
				if code := a.wait(30 * time.Second); code != 0 {
					t.Fatalf("agent exit code %d\nstderr:\n%s", code, a.stderr.String())
				}
			}
			p1s, p2s := recordsOf[record.Packet](a1, record.TypePacket), recordsOf[record.Packet](a2, record.TypePacket)
			if len(p1s) != 1 || len(p2s) != 1 {
				t.Fatalf("packets: n1 %d, n2 %d; want 1 each\nn1:\n%s\nn2:\n%s", len(p1s), len(p2s), a1.stderr.String(), a2.stderr.String())
			}
			p1, p2 := p1s[0], p2s[0]

			// n1: the node's own connection, DNATed and masqueraded, out eth0
			// towards n2. None of n2's forwarding hops.
			if p1.TracedBy != record.TracedService || p1.Endpoint != epAddr.String() || p1.Verdict != record.VerdictAccept {
				t.Errorf("n1's packet: traced_by %q endpoint %q verdict %s", p1.TracedBy, p1.Endpoint, p1.Verdict)
			}
			for _, h := range p1.Hops {
				if h.Hook == "FORWARD" || h.Hook == "PREROUTING" {
					t.Errorf("n1's packet has %s hop %s:%s: another node's record got in", h.Hook, h.Table, h.Chain)
				}
			}
			if e := p1.Egress; e == nil || e.Out != "eth0" || e.Via != n2IP || e.Src != n1IP {
				t.Errorf("n1's egress %+v, want out eth0 via %s from %s", p1.Egress, n2IP, n1IP)
			}
			// n2: the same packet arriving for the endpoint, from n1's
			// address, forwarded to it. None of n1's local-output hops.
			if p2.TracedBy != record.TracedEndpoint || p2.Src == "" || record.Host(p2.Src) != n1IP || p2.Dst != epAddr.String() {
				t.Errorf("n2's packet: traced_by %q %s -> %s, want endpoint, from %s to %s", p2.TracedBy, p2.Src, p2.Dst, n1IP, epAddr)
			}
			if len(p2.Hops) == 0 || p2.Hops[0].Table != "raw" || p2.Hops[0].Chain != "PREROUTING" || p2.Hops[0].In != "eth0" {
				t.Errorf("n2's first hop %+v, want raw:PREROUTING in eth0", p2.Hops)
			}
			for _, h := range p2.Hops {
				if h.Hook == "OUTPUT" {
					t.Errorf("n2's packet has OUTPUT hop %s:%s: another node's record got in", h.Table, h.Chain)
				}
			}
			if p1.IPID != p2.IPID || p1.TCPSeq != p2.TCPSeq || p1.TCPSeq == 0 {
				t.Errorf("identity: n1 id %d seq %d, n2 id %d seq %d: want the same packet", p1.IPID, p1.TCPSeq, p2.IPID, p2.TCPSeq)
			}
			// With one kernel log, each agent saw the other's lines and left
			// them out; nftables trace events are per namespace.
			for _, a := range []*agentProc{a1, a2} {
				foreign := a.bye().ForeignRecords
				if b == backendLegacy && foreign == 0 {
					t.Errorf("%s: no foreign kernel log records counted: the test did not see the shared log", a.bye().Node)
				}
				if b == backendNft && foreign != 0 {
					t.Errorf("%s: %d foreign records with nftables trace events", a.bye().Node, foreign)
				}
			}

			// The plugin's join of the two real legs.
			j := join.New(join.Options{
				NodeOf: func(h string) string {
					return map[string]string{tp1.epIP4().String(): "n2", n1IP: "n1", n2IP: "n2"}[h]
				},
				Traced: func(string) bool { return true },
			})
			p2.EndpointNode = "n2"
			p1.EndpointNode = "n2"
			now := time.Now()
			if got := j.Add(&p2, now); len(got) != 0 {
				t.Fatalf("the endpoint leg came out alone: %+v", got)
			}
			got := j.Add(&p1, now)
			if len(got) != 1 {
				t.Fatalf("joined %d packets, want 1", len(got))
			}
			pk := got[0]
			explain.WithCluster(pk, explain.Cluster{ClusterIPs: []string{svc.Addr().String()}})
			if len(pk.Nodes) != 2 || pk.Nodes[0] != "n1" || pk.Nodes[1] != "n2" || len(pk.Crossings) != 1 || !pk.Crossings[0].Arrived ||
				pk.Crossings[0].Via != n2IP || pk.Crossings[0].In != "eth0" || len(pk.Hops) != len(p1.Hops)+len(p2.Hops) {
				t.Errorf("joined packet: nodes %v crossings %+v hops %d", pk.Nodes, pk.Crossings, len(pk.Hops))
			}
			if pk.Explain == nil || pk.Explain.SourceSeenByEndpoint != n1IP || pk.Explain.SourcePredicted != "" {
				t.Errorf("joined explain %+v, want n2 to have observed %s, as n1 predicted", pk.Explain, n1IP)
			}
			for _, n := range []*netns{n1, n2} {
				if left := svctraceRules(t, n); len(left) > 0 {
					t.Errorf("rules left in %s: %v", n.name, left)
				}
			}
		})
	}
}
