package explain

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const captures = "../../test/testdata/captures"

// goldenCase is one real capture and the ruleset snapshot taken with it.
type goldenCase struct {
	name, trace string
	rules       []string
}

var goldenCases = []goldenCase{
	{"node-to-svc.legacy", "node-to-svc.legacy.kmsg.txt", []string{"node-to-svc.legacy.rules.txt"}},
	{"node-to-svc.legacy.norules", "node-to-svc.legacy.kmsg.txt", nil},
	{"pod-to-svc.legacy", "pod-to-svc.legacy.kmsg.txt", []string{"pod-to-svc.legacy.rules.txt"}},
	{"node-to-svc.nft.xtmon", "node-to-svc.nft.xtmon.txt", []string{"node-to-svc.nft.rules.txt"}},
	{"node-to-svc.nft.nftmon", "node-to-svc.nft.nftmon.txt", nil},
	{"node-to-svc.nftmode", "node-to-svc.nftmode.nftmon.txt", []string{"node-to-svc.nftmode.ruleset.txt"}},
	{"seed-001.kernlog", "seed-001-kernlog.txt", nil},
	// Taken on the local cluster (hack/local-cluster.sh): see the captures' README.
	{"local-gw-to-nodeport.legacy", "local-gw-to-nodeport.legacy.kmsg.txt", []string{"local-gw-to-nodeport.legacy.rules.txt"}},
	{"local-gw-to-nodeport.nft.xtmon", "local-gw-to-nodeport.nft.xtmon.txt", []string{"local-gw-to-nodeport.nft.rules.txt"}},
	{"local-pod-to-noendpoints.legacy", "local-pod-to-noendpoints.legacy.kmsg.txt", []string{"local-pod-to-noendpoints.legacy.rules.txt"}},
	{"local-pod-to-noendpoints.nft.nftmon", "local-pod-to-noendpoints.nft.nftmon.txt", nil},
	{"local-pod-to-noendpoints.nft.xtmon", "local-pod-to-noendpoints.nft.xtmon.txt", []string{"local-pod-to-noendpoints.nft.rules.txt"}},
	// The local cluster in kube-proxy nftables mode (see the captures' README).
	{"local-nftmode-node-to-clusterip", "local-nftmode-node-to-clusterip.nftmon.txt", []string{"local-nftmode-node-to-clusterip.ruleset.txt"}},
	{"local-nftmode-gw-to-nodeport-cluster", "local-nftmode-gw-to-nodeport-cluster.nftmon.txt", []string{"local-nftmode-gw-to-nodeport-cluster.ruleset.txt"}},
	{"local-nftmode-gw-to-nodeport-local", "local-nftmode-gw-to-nodeport-local.nftmon.txt", []string{"local-nftmode-gw-to-nodeport-local.ruleset.txt"}},
	{"local-nftmode-nodeport-local-noep", "local-nftmode-nodeport-local-noep.nftmon.txt", []string{"local-nftmode-nodeport-local-noep.ruleset.txt"}},
	{"local-nftmode-pod-to-noendpoints", "local-nftmode-pod-to-noendpoints.nftmon.txt", []string{"local-nftmode-pod-to-noendpoints.ruleset.txt"}},
	{"local-nftmode-pod-hairpin", "local-nftmode-pod-hairpin.nftmon.txt", []string{"local-nftmode-pod-hairpin.ruleset.txt"}},
	{"local-nftmode-gw-to-lb-source-ranges", "local-nftmode-gw-to-lb-source-ranges.nftmon.txt", []string{"local-nftmode-gw-to-lb-source-ranges.ruleset.txt"}},
	{"local-nftmode-pod-to-affinity", "local-nftmode-pod-to-affinity.nftmon.txt", []string{"local-nftmode-pod-to-affinity.ruleset.txt"}},
	{"local-nftmode-gw-to-lb", "local-nftmode-gw-to-lb.nftmon.txt", []string{"local-nftmode-gw-to-lb.ruleset.txt"}},
	// kube-proxy v1.33 nftables-mode rule shapes in network namespaces (netns-v133.sh).
	{"netns-v133", "netns-v133.nftmon.txt", []string{"netns-v133.ruleset.txt"}},
	{"local-node-to-udp.legacy", "local-node-to-udp.legacy.kmsg.txt", []string{"local-node-to-udp.legacy.rules.txt"}},
	{"local-node-syn-retransmit.legacy", "local-node-syn-retransmit.legacy.kmsg.txt", []string{"local-node-syn-retransmit.legacy.rules.txt"}},
}

// AnnotateCapture runs the engine over one capture: what analyze does.
func annotateCapture(t testing.TB, c goldenCase) []record.Packet {
	t.Helper()
	var ix *rules.Index
	if len(c.rules) > 0 {
		ix = rules.NewIndex()
		for _, r := range c.rules {
			data, err := os.ReadFile(filepath.Join(captures, r))
			if err != nil {
				t.Fatal(err)
			}
			if err := ix.Add(data); err != nil {
				t.Fatalf("index %s: %v", r, err)
			}
		}
	}
	f, err := os.Open(filepath.Join(captures, c.trace))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record.Packet
	_, err = trace.ReadAll(f, trace.FormatAuto, trace.GroupOptions{
		Ordered:    true,
		Ending:     Ending(ix),
		HookTables: HookTables(ix),
		Emit:       func(p *trace.Packet) { out = append(out, Annotate(p, ix)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGoldenCaptures(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			for _, p := range annotateCapture(t, c) {
				if err := enc.Encode(p); err != nil {
					t.Fatal(err)
				}
			}
			golden := filepath.Join("testdata", c.name+".ndjson")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/explain -update)", err)
			}
			if diff := cmp.Diff(string(want), buf.String()); diff != "" {
				t.Errorf("annotated packets differ from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

// chains lists the user chains a packet crossed in one table, in order, without repeats in a row.
func chains(p record.Packet, table string) []string {
	var out []string
	for _, h := range p.Hops {
		if h.Table == table && (len(out) == 0 || out[len(out)-1] != h.Chain) {
			out = append(out, h.Chain)
		}
	}
	return out
}

// hopMeaning returns the meaning of the first hop of chain with verdict.
func hopMeaning(p record.Packet, chain, verdict string) string {
	for _, h := range p.Hops {
		if h.Chain == chain && h.Verdict == verdict {
			return h.Meaning
		}
	}
	return ""
}

// jumpMeaningTo returns the meaning of the first jump or goto to chain ("" when none).
func jumpMeaningTo(p record.Packet, chain string) string {
	for _, h := range p.Hops {
		if h.Target == chain && (h.Verdict == "JUMP" || h.Verdict == "GOTO") {
			return h.Meaning
		}
	}
	return ""
}

// TestKeyFacts checks by hand what the golden files must say.
func TestKeyFacts(t *testing.T) {
	byName := map[string][]record.Packet{}
	for _, c := range goldenCases {
		byName[c.name] = annotateCapture(t, c)
	}

	t.Run("node to ClusterIP, legacy, with rules", func(t *testing.T) {
		p := byName["node-to-svc.legacy"][0]
		wantNat := []string{"OUTPUT", "KUBE-SERVICES", "KUBE-SVC-XJWXQFJLXSXKRMSG", "KUBE-MARK-MASQ", "KUBE-SVC-XJWXQFJLXSXKRMSG",
			"KUBE-SEP-TJXBIUI2E22QKLD4", "POSTROUTING", "KUBE-POSTROUTING"}
		if diff := cmp.Diff(wantNat, chains(p, "nat")); diff != "" {
			t.Errorf("nat chains (-want +got):\n%s", diff)
		}
		wantNAT := []record.NAT{
			{Kind: "DNAT", Table: "nat", Chain: "KUBE-SEP-TJXBIUI2E22QKLD4", Rule: 2, To: "10.244.0.23:80"},
			{Kind: "MASQUERADE", Table: "nat", Chain: "KUBE-POSTROUTING", Rule: 3},
		}
		if diff := cmp.Diff(wantNAT, p.NAT); diff != "" {
			t.Errorf("nat (-want +got):\n%s", diff)
		}
		if p.Service != "default/myapp" || p.Endpoint != "10.244.0.23:80" || p.Verdict != "ACCEPT" {
			t.Errorf("service %q endpoint %q verdict %q, want default/myapp 10.244.0.23:80 ACCEPT", p.Service, p.Endpoint, p.Verdict)
		}
		for _, h := range p.Hops {
			if h.Kind == "rule" && h.Text == "" {
				t.Errorf("rule hop %s:%s #%d has no rule text", h.Table, h.Chain, h.Rule)
			}
		}
		if !strings.Contains(p.Explain.Summary, "source outside the cluster CIDR") {
			t.Errorf("summary %q does not say why the source is masqueraded", p.Explain.Summary)
		}
	})

	t.Run("xtables-monitor and nft monitor agree with the legacy path", func(t *testing.T) {
		for _, name := range []string{"node-to-svc.nft.xtmon", "node-to-svc.nft.nftmon"} {
			p := byName[name][0]
			if p.Service != "default/myapp" && name == "node-to-svc.nft.xtmon" {
				t.Errorf("%s: service %q", name, p.Service)
			}
			if p.Endpoint != "10.244.0.24:80" || p.Verdict != "ACCEPT" {
				t.Errorf("%s: endpoint %q verdict %q, want 10.244.0.24:80 ACCEPT", name, p.Endpoint, p.Verdict)
			}
			if got := p.NAT[len(p.NAT)-1].Kind; got != "MASQUERADE" {
				t.Errorf("%s: last NAT %q, want MASQUERADE", name, got)
			}
		}
	})

	t.Run("kube-proxy nftables mode: endpoint chosen by the numgen map", func(t *testing.T) {
		p := byName["node-to-svc.nftmode"][0]
		if p.Service != "default/myapp" || p.Endpoint != "10.244.0.24:80" {
			t.Errorf("service %q endpoint %q, want default/myapp 10.244.0.24:80", p.Service, p.Endpoint)
		}
		// The summary keeps the masquerade reason and the choice, as in iptables mode.
		for _, want := range []string{"source masqueraded at POSTROUTING (source outside the cluster CIDR)", "chose endpoint 10.244.0.24:80 (share 33.3%)"} {
			if !strings.Contains(p.Explain.Summary, want) {
				t.Errorf("summary %q lacks %q", p.Explain.Summary, want)
			}
		}
		// The verdict map lookup names the element the packet matched.
		if got := hopMeaning(p, "services", "GOTO"); got != "Service default/myapp: cluster IP matched (@service-ips element 10.96.173.227 . tcp . 80)" {
			t.Errorf("services vmap hop: %q", got)
		}
		for _, chain := range []string{"service-endpoints-check", "cluster-ips-check", "firewall-check", "masquerading"} {
			if m := jumpMeaningTo(p, chain); m == "" {
				t.Errorf("jump to %s has no meaning", chain)
			}
		}
	})

	t.Run("kube-proxy v1.33 nftables-mode shapes", func(t *testing.T) {
		ps := byName["netns-v133"]
		if len(ps) != 8 {
			t.Fatalf("%d packets, want 8 (6 connections, 2 of them sent their SYN twice)", len(ps))
		}
		type fact struct {
			service, verdict, endpoint, summary, hop string
		}
		want := []fact{
			{"default/affine", "ACCEPT", "10.244.0.5:80", "source masqueraded at POSTROUTING (source outside the cluster CIDR)",
				"chose endpoint 10.244.0.5:80 (rule probability 1.000)"},
			{"default/affine", "ACCEPT", "10.244.0.5:80", "chose endpoint 10.244.0.5:80 again (sessionAffinity: ClientIP",
				"sessionAffinity: ClientIP: remember this client for endpoint 10.244.0.5:80"},
			{"default/affine", "ACCEPT", "10.244.0.5:80", "source masqueraded at POSTROUTING (hairpin: the endpoint calls its own Service)",
				"hairpin: the endpoint calls its own Service: mark for masquerade"},
			{"default/lb:http", "ACCEPT", "10.244.0.5:80", "source masqueraded at POSTROUTING (external traffic (externalTrafficPolicy: Cluster))",
				"Service default/lb:http: NodePort 30082 matched (@service-nodeports element tcp . 30082)"},
			{"default/lb:http", "DROP", "", "Service default/lb:http; DROP",
				"Service default/lb:http: load-balancer IP with loadBalancerSourceRanges: check the source (@firewall-ips element 192.168.99.10 . tcp . 80)"},
			{"default/lb:http", "DROP", "", "Service default/lb:http; DROP", ""},
			{"default/loc", "DROP", "", "Service default/loc; DROP", ""},
			{"default/loc", "DROP", "", "Service default/loc; DROP", ""},
		}
		for i, w := range want {
			p := ps[i]
			if p.Service != w.service || p.Verdict != w.verdict || p.Endpoint != w.endpoint {
				t.Errorf("packet %d: service %q verdict %q endpoint %q, want %q %q %q", i, p.Service, p.Verdict, p.Endpoint, w.service, w.verdict, w.endpoint)
			}
			if !strings.Contains(p.Explain.Summary, w.summary) {
				t.Errorf("packet %d: summary %q lacks %q", i, p.Explain.Summary, w.summary)
			}
			found := w.hop == ""
			for _, h := range p.Hops {
				found = found || h.Meaning == w.hop
			}
			if !found {
				t.Errorf("packet %d: no hop means %q", i, w.hop)
			}
		}
		for i, reason := range map[int]string{
			4: "kube-proxy:firewall-D2RGPZ6L-default/lb/tcp/http: source not in the Service's loadBalancerSourceRanges: dropped",
			6: "kube-proxy:nodeport-endpoints-check: Service default/loc has no endpoint on this node (externalTrafficPolicy: Local): dropped",
		} {
			if !strings.HasPrefix(ps[i].Explain.Reason, reason) {
				t.Errorf("packet %d: reason %q, want it to start with %q", i, ps[i].Explain.Reason, reason)
			}
		}
	})

	t.Run("local cluster, kube-proxy nftables mode", func(t *testing.T) {
		type fact struct {
			capture          string
			packets          int
			service, verdict string
			endpoint         string
			summary, reason  string // substrings
			hop              string // a hop's whole meaning
		}
		for _, w := range []fact{
			{"node-to-clusterip", 1, "default/myapp", "ACCEPT", "10.244.1.2:80",
				"source masqueraded at POSTROUTING (source outside the cluster CIDR)", "",
				"Service default/myapp: cluster IP matched (@service-ips element 10.96.147.213 . tcp . 80)"},
			{"gw-to-nodeport-cluster", 1, "default/myapp-nodeport:http", "ACCEPT", "10.244.0.4:80",
				"source masqueraded at POSTROUTING (external traffic (externalTrafficPolicy: Cluster))", "",
				"Service default/myapp-nodeport:http: NodePort 30080 matched (@service-nodeports element tcp . 30080)"},
			{"gw-to-nodeport-local", 1, "default/myapp-local:http", "ACCEPT", "10.244.0.3:80",
				"source kept: the endpoint sees the client's address 10.199.0.1", "",
				"Service default/myapp-local:http: NodePort 30081 matched (@service-nodeports element tcp . 30081)"},
			{"nodeport-local-noep", 2, "default/myapp-local:http", "DROP", "",
				"Service default/myapp-local:http; DROP",
				"kube-proxy:nodeport-endpoints-check: Service default/myapp-local:http has no endpoint on this node (externalTrafficPolicy: Local): dropped",
				"kube-proxy: reject or drop NodePort traffic that has no endpoint"},
			{"pod-to-noendpoints", 2, "default/noendpoints", "REJECT", "",
				"Service default/noendpoints; REJECT",
				"kube-proxy:reject-chain: Service default/noendpoints has no endpoints: connection rejected",
				"Service default/noendpoints has no endpoints: reject (@no-endpoint-services element 10.96.80.230 . tcp . 80)"},
			{"pod-hairpin", 1, "default/myapp-local:http", "ACCEPT", "10.244.0.3:80",
				"source masqueraded at POSTROUTING (hairpin: the endpoint calls its own Service)", "",
				"hairpin: the endpoint calls its own Service: SNAT to the address of kube-bridge"},
			{"gw-to-lb-source-ranges", 2, "default/e2e-lbsr:http", "DROP", "",
				"Service default/e2e-lbsr:http; DROP",
				"source not in the Service's loadBalancerSourceRanges: dropped",
				"Service default/e2e-lbsr:http: load-balancer IP with loadBalancerSourceRanges: check the source (@firewall-ips element 10.199.0.240 . tcp . 80)"},
			{"pod-to-affinity", 2, "default/e2e-affinity", "ACCEPT", "10.244.0.4:80",
				"source kept", "", "sessionAffinity: ClientIP: remember this client for endpoint 10.244.0.4:80"},
			{"gw-to-lb", 1, "default/myapp-lb:http", "ACCEPT", "10.244.0.4:80",
				"source masqueraded at POSTROUTING (external traffic (externalTrafficPolicy: Cluster))", "",
				"Service default/myapp-lb:http: external or load-balancer IP matched (@service-ips element 10.199.0.200 . tcp . 80)"},
		} {
			ps := byName["local-nftmode-"+w.capture]
			if len(ps) != w.packets {
				t.Errorf("%s: %d packets, want %d", w.capture, len(ps), w.packets)
				continue
			}
			for i, p := range ps {
				if p.Service != w.service || p.Verdict != w.verdict || p.Endpoint != w.endpoint {
					t.Errorf("%s #%d: service %q verdict %q endpoint %q, want %q %q %q", w.capture, i, p.Service, p.Verdict, p.Endpoint, w.service, w.verdict, w.endpoint)
				}
				if !strings.Contains(p.Explain.Summary, w.summary) || !strings.Contains(p.Explain.Reason, w.reason) {
					t.Errorf("%s #%d: summary %q reason %q, want %q and %q in them", w.capture, i, p.Explain.Summary, p.Explain.Reason, w.summary, w.reason)
				}
				found := false
				for _, h := range p.Hops {
					found = found || h.Meaning == w.hop
				}
				if !found {
					t.Errorf("%s #%d: no hop means %q", w.capture, i, w.hop)
				}
			}
		}
		// The second affinity connection finds the client in the affinity set.
		if p := byName["local-nftmode-pod-to-affinity"]; len(p) == 2 && !strings.Contains(p[1].Explain.Summary, "chose endpoint 10.244.0.4:80 again (sessionAffinity: ClientIP") {
			t.Errorf("second affinity connection: summary %q", p[1].Explain.Summary)
		}
	})

	t.Run("pod to ClusterIP keeps the pod's source", func(t *testing.T) {
		p := byName["pod-to-svc.legacy"][0]
		if p.Endpoint != "10.244.0.25:80" || p.Explain.SourceSeenByEndpoint != "10.244.0.26" {
			t.Errorf("endpoint %q source seen %q, want 10.244.0.25:80 and 10.244.0.26", p.Endpoint, p.Explain.SourceSeenByEndpoint)
		}
	})

	t.Run("outside to NodePort: masqueraded as external traffic", func(t *testing.T) {
		for _, name := range []string{"local-gw-to-nodeport.legacy", "local-gw-to-nodeport.nft.xtmon"} {
			p := byName[name][0]
			if p.Service != "default/myapp-nodeport:http" || p.Verdict != "ACCEPT" || p.NAT[len(p.NAT)-1].Kind != "MASQUERADE" {
				t.Errorf("%s: service %q verdict %q nat %+v", name, p.Service, p.Verdict, p.NAT)
			}
			if !strings.Contains(p.Explain.Summary, "externalTrafficPolicy: Cluster") ||
				!strings.Contains(strings.Join(p.Explain.Notes, " "), "not the client's 10.199.0.1") {
				t.Errorf("%s: explanation %+v does not say why and what the pod sees", name, p.Explain)
			}
		}
	})

	t.Run("the endpoint's share, not the rule's conditional probability", func(t *testing.T) {
		for name, want := range map[string]struct {
			role, chain string
			share       float64
		}{
			// rule 3 of KUBE-SVC: the second statistic rule of three, probability 0.5
			"local-gw-to-nodeport.legacy":    {record.RoleEndpoint, "KUBE-SVC-FJ3OGVSJNWO76ZFO", 0.333333},
			"local-gw-to-nodeport.nft.xtmon": {record.RoleEndpoint, "KUBE-SVC-FJ3OGVSJNWO76ZFO", 0.333333},
			"node-to-svc.nft.xtmon":          {record.RoleEndpoint, "KUBE-SVC-XJWXQFJLXSXKRMSG", 0.333333},
			// nftables mode: numgen random mod 3 map
			"node-to-svc.nftmode": {record.RoleDNAT, "service-6QYGQ5L4-default/myapp/tcp/", 0.333333},
		} {
			p := byName[name][0]
			found := false
			for _, h := range p.Hops {
				if h.Role != want.role {
					continue
				}
				found = true
				if h.Chain != want.chain || h.Share != want.share || !strings.Contains(h.Meaning, "share 33.3%") {
					t.Errorf("%s: %s hop %s share %v meaning %q, want %s share %v", name, want.role, h.Chain, h.Share, h.Meaning, want.chain, want.share)
				}
			}
			if !found {
				t.Errorf("%s: no %s hop", name, want.role)
			}
		}
	})

	t.Run("roles: what each deciding hop did", func(t *testing.T) {
		p := byName["local-gw-to-nodeport.legacy"][0]
		var got []string
		for _, h := range p.Hops {
			if h.Role != "" {
				got = append(got, h.Chain+" "+h.Role)
			}
		}
		want := []string{"KUBE-NODEPORTS service", "KUBE-EXT-FJ3OGVSJNWO76ZFO masquerade-mark", "KUBE-EXT-FJ3OGVSJNWO76ZFO service",
			"KUBE-SVC-FJ3OGVSJNWO76ZFO endpoint", "KUBE-SEP-EEUJIA5RBQ2WT7FR dnat", "KUBE-FORWARD accept", "KUBE-POSTROUTING snat"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("roles (-want +got):\n%s", diff)
		}
	})

	t.Run("no endpoints: rejected, with the Service's name", func(t *testing.T) {
		for _, name := range []string{"local-pod-to-noendpoints.legacy", "local-pod-to-noendpoints.nft.xtmon"} {
			p := byName[name][0]
			if p.Verdict != "REJECT" || p.Service != "default/noendpoints" ||
				!strings.Contains(p.Explain.Reason, "Service default/noendpoints has no endpoints") {
				t.Errorf("%s: verdict %q service %q reason %q", name, p.Verdict, p.Service, p.Explain.Reason)
			}
		}
		// nft monitor prints the rule without its comment, and a
		// trace id that changes between PREROUTING and FORWARD.
		nft := byName["local-pod-to-noendpoints.nft.nftmon"]
		if len(nft) != 2 || nft[0].Verdict != "REJECT" || nft[0].Hops[0].Chain != "PREROUTING" {
			t.Errorf("nft monitor: %d packets, first %+v", len(nft), nft[0])
		}
	})

	t.Run("SYN retransmissions: conntrack's translation, no new connection", func(t *testing.T) {
		ps := byName["local-node-syn-retransmit.legacy"]
		if len(ps) != 3 {
			t.Fatalf("%d packets, want the SYN and its 2 retransmissions", len(ps))
		}
		if ps[0].Explain.Retransmit || !newConnection(&ps[0]) {
			t.Errorf("first SYN: retransmit %v, nat %+v: want the nat table's DNAT", ps[0].Explain.Retransmit, ps[0].NAT)
		}
		for _, p := range ps[1:] {
			if !p.Explain.Retransmit || newConnection(&p) || p.Endpoint != ps[0].Endpoint || p.TCPSeq != ps[0].TCPSeq ||
				!strings.HasPrefix(p.Explain.Summary, "SYN retransmission: translated 10.96.194.95:80 -> 10.244.0.4:80 by conntrack") {
				t.Errorf("retransmission: retransmit %v endpoint %s seq %d summary %q", p.Explain.Retransmit, p.Endpoint, p.TCPSeq, p.Explain.Summary)
			}
		}
		s := NewSummarizer("")
		for i := range ps {
			s.Add(&ps[i])
		}
		if sum := s.Summary(); sum.Retransmits != 2 || len(sum.Endpoints) != 1 || sum.Endpoints[0].Count != 1 {
			t.Errorf("summary %+v: want 2 retransmissions and 1 new connection", sum)
		}
	})

	t.Run("seed 001: a packet that stops after nat PREROUTING is a routing drop", func(t *testing.T) {
		var found bool
		for _, p := range byName["seed-001.kernlog"] {
			last := p.Hops[len(p.Hops)-1]
			if last.Table != "nat" || last.Chain != "PREROUTING" || last.Kind != "policy" {
				continue
			}
			found = true
			if p.Verdict != "UNKNOWN" || !strings.Contains(p.Explain.Reason, "routing decision") ||
				!strings.Contains(p.Explain.Reason, "ip route get from 192.168.235.13 to 10.0.1.12 iif enp5s0") {
				t.Errorf("verdict %q reason %q", p.Verdict, p.Explain.Reason)
			}
		}
		if !found {
			t.Fatal("no packet ends at nat:PREROUTING policy")
		}
	})
}
