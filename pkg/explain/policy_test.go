package explain

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// policyCases are the NetworkPolicy captures (see the captures' README):
// their goldens are checked by TestGoldenCaptures with the others.
var policyCases = []goldenCase{
	{"calico-pod-to-svc.legacy", "calico-pod-to-svc.legacy.kmsg.txt", []string{"calico-pod-to-svc.legacy.rules.txt"}},
	{"calico-pod-to-svc.legacy.norules", "calico-pod-to-svc.legacy.kmsg.txt", nil},
	{"cilium-pod-to-svc.legacy", "cilium-pod-to-svc.legacy.kmsg.txt", []string{"cilium-pod-to-svc.legacy.rules.txt"}},
	{"kuberouter-pod-to-svc.legacy", "kuberouter-pod-to-svc.legacy.kmsg.txt", []string{"kuberouter-pod-to-svc.legacy.rules.txt"}},
	// Real kernel, iptables-nft, kube-router v2.1 rule shapes (netns-kuberouter.sh).
	{"netns-kuberouter.nft.xtmon", "netns-kuberouter.nft.xtmon.txt", []string{"netns-kuberouter.nft.rules.txt", "netns-kuberouter.nft.ruleset.txt"}},
	{"netns-kuberouter.nft.nftmon", "netns-kuberouter.nft.nftmon.txt", []string{"netns-kuberouter.nft.rules.txt", "netns-kuberouter.nft.ruleset.txt"}},
}

func init() { goldenCases = append(goldenCases, policyCases...) }

func capture(t *testing.T, name string) []record.Packet {
	t.Helper()
	for _, c := range goldenCases {
		if c.name == name {
			return annotateCapture(t, c)
		}
	}
	t.Fatalf("no capture %s", name)
	return nil
}

func TestPolicyKeyFacts(t *testing.T) {
	t.Run("calico: refused by the policy selecting the endpoint", func(t *testing.T) {
		p := capture(t, "calico-pod-to-svc.legacy")[0]
		if p.Verdict != record.VerdictDrop {
			t.Fatalf("verdict %s, want DROP", p.Verdict)
		}
		want := &record.PolicyCheck{
			CNI: "calico", Direction: "ingress", Iface: "caliweb00000001", Effect: record.PolicyRefused,
			Namespace: "default", Name: "allow-frontend", Policies: []string{"default/allow-frontend"},
			Chain: "cali-tw-caliweb00000001", Hop: p.VerdictHop, Peer: "192.168.1.4",
		}
		if diff := cmp.Diff(want, p.Explain.Policy); diff != "" {
			t.Errorf("explain.policy (-want +got):\n%s", diff)
		}
		if !strings.Contains(p.Explain.Reason, "refused by NetworkPolicy default/allow-frontend (ingress to pod on caliweb00000001)") ||
			!strings.Contains(p.Explain.Reason, "admits source 192.168.1.4") {
			t.Errorf("reason %q does not name the policy, direction and source", p.Explain.Reason)
		}
		// The client's egress went through its profile: no policy.
		if got := p.Explain.Policies[0]; got.Direction != "egress" || got.Effect != record.PolicyNone {
			t.Errorf("first check %+v, want the client's egress with no policy", got)
		}
	})
	t.Run("calico: admitted, the policy named", func(t *testing.T) {
		p := capture(t, "calico-pod-to-svc.legacy")[1]
		if p.Verdict != record.VerdictAccept || p.Explain.Policy == nil || p.Explain.Policy.Name != "allow-frontend" ||
			p.Explain.Policy.Effect != record.PolicyAdmitted {
			t.Fatalf("verdict %s policy %+v, want ACCEPT admitted by allow-frontend", p.Verdict, p.Explain.Policy)
		}
		if !slicesContain(p.Explain.Notes, "admitted by NetworkPolicy default/allow-frontend (ingress to pod on caliweb00000001)") {
			t.Errorf("notes %q do not say which policy admitted it", p.Explain.Notes)
		}
	})
	t.Run("calico without the ruleset: the drop's chain still tells the direction", func(t *testing.T) {
		p := capture(t, "calico-pod-to-svc.legacy.norules")[0]
		if p.Explain.Policy != nil {
			t.Errorf("without rules the trace has no rule texts: policy %+v", p.Explain.Policy)
		}
	})
	t.Run("cilium: policy is not in these chains; the L7 proxy is named", func(t *testing.T) {
		ps := capture(t, "cilium-pod-to-svc.legacy")
		for _, p := range ps {
			if !slicesContainPrefix(p.Explain.Notes, "Cilium enforces NetworkPolicy in eBPF") {
				t.Errorf("%s: notes %q lack the eBPF caveat", p.Dst, p.Explain.Notes)
			}
		}
		if !slicesContainPrefix(ps[1].Explain.Notes, "a Cilium L7 policy redirects this connection to its cilium-dns-egress proxy") {
			t.Errorf("notes %q do not name the DNS proxy", ps[1].Explain.Notes)
		}
	})
}

func TestPolicyKubeRouter(t *testing.T) {
	ps := capture(t, "kuberouter-pod-to-svc.legacy")
	refused, admitted := ps[0], ps[1]
	want := &record.PolicyCheck{
		CNI: "kube-router", Direction: "ingress", Pod: "svctrace-np/np-web", Effect: record.PolicyRefused,
		Namespace: "svctrace-np", Name: "allow-frontend", Policies: []string{"svctrace-np/allow-frontend"},
		Chain: "KUBE-POD-FW-Q3VXZ6J2T4K7M2LA", Hop: refused.VerdictHop, Peer: "10.244.0.12",
	}
	if refused.Verdict != record.VerdictReject {
		t.Errorf("verdict %s, want REJECT", refused.Verdict)
	}
	if diff := cmp.Diff(want, refused.Explain.Policy); diff != "" {
		t.Errorf("explain.policy (-want +got):\n%s", diff)
	}
	// Admitted: the policy rule named; the bridged packet's second pass
	// through the same chain is one decision; the client's egress has no
	// policy.
	var got []string
	for _, c := range admitted.Explain.Policies {
		got = append(got, c.Direction+" "+c.Pod+" "+c.Effect+" "+c.Name)
	}
	wantChecks := []string{"ingress svctrace-np/np-web admitted allow-frontend", "egress svctrace-np/frontend-local no-policy "}
	if diff := cmp.Diff(wantChecks, got); diff != "" {
		t.Errorf("checks (-want +got):\n%s", diff)
	}
	if admitted.Verdict != record.VerdictAccept || admitted.Explain.Policy.Name != "allow-frontend" || admitted.Explain.Policy.Match != "pods" {
		t.Errorf("verdict %s, policy %+v", admitted.Verdict, admitted.Explain.Policy)
	}
}

func TestPolicyRealKernel(t *testing.T) {
	for _, name := range []string{"netns-kuberouter.nft.xtmon", "netns-kuberouter.nft.nftmon"} {
		ps := capture(t, name)
		// The client without the ipset entry sent its SYN twice; both refused.
		var verdicts []string
		for _, p := range ps {
			verdicts = append(verdicts, p.Verdict)
		}
		if diff := cmp.Diff([]string{"REJECT", "REJECT", "ACCEPT"}, verdicts); diff != "" {
			t.Errorf("%s: verdicts (-want +got):\n%s", name, diff)
		}
		if c := ps[0].Explain.Policy; c == nil || c.Effect != record.PolicyRefused || c.Name != "allow-frontend" || c.Pod != "svctrace-np/np-web" {
			t.Errorf("%s: refusal %+v, want allow-frontend at svctrace-np/np-web", name, c)
		}
		if c := ps[2].Explain.Policy; c == nil || c.Effect != record.PolicyAdmitted {
			t.Errorf("%s: admission %+v", name, c)
		}
	}
	// xtables-monitor prints the iptables rules: the direction and the
	// admitting rule's policy come from their comments.
	p := capture(t, "netns-kuberouter.nft.xtmon")[2]
	if c := p.Explain.Policy; c.Direction != "ingress" || c.Name != "allow-frontend" || c.Match != "pods" {
		t.Errorf("xtables-monitor admission %+v, want ingress by allow-frontend's pods rule", c)
	}
}

// TestPolicyLocalCluster reads the live local cluster's kube-router v2.1
// chains (captured in kube-proxy nftables mode, no NetworkPolicy applied):
// every pod-bound packet passes the endpoint pod's firewall, which no
// policy selects.
func TestPolicyLocalCluster(t *testing.T) {
	for _, name := range []string{"local-nftmode-pod-to-affinity", "local-nftmode-gw-to-nodeport-cluster"} {
		ps := capture(t, name)
		if len(ps) == 0 {
			t.Fatalf("%s: no packets", name)
		}
		for _, p := range ps {
			c := p.Explain.Policy
			if c == nil || c.CNI != "kube-router" || c.Effect != record.PolicyNone || !strings.HasPrefix(c.Chain, "KUBE-POD-FW-") {
				t.Errorf("%s: %s -> %s: policy check %+v, want kube-router's pod firewall with no policy", name, p.Src, p.Dst, c)
			}
			if p.Explain.Reason != "" && strings.Contains(p.Explain.Reason, "NetworkPolicy") {
				t.Errorf("%s: reason %q names a policy", name, p.Explain.Reason)
			}
		}
	}
}

func TestPolicyDropsInSummary(t *testing.T) {
	s := NewSummarizer("")
	ps := capture(t, "calico-pod-to-svc.legacy")
	for i := range ps {
		s.Add(&ps[i])
	}
	s.Add(&ps[0]) // a second refusal from the same source
	sum := s.Summary()
	want := []record.PolicyDrop{{Policies: []string{"default/allow-frontend"}, Direction: "ingress", Pod: "caliweb00000001", Count: 2}}
	if diff := cmp.Diff(want, sum.PolicyDrops); diff != "" {
		t.Errorf("policy_drops (-want +got):\n%s", diff)
	}
	wantDrops := []record.Count{{Reason: "refused by NetworkPolicy default/allow-frontend (ingress to pod on caliweb00000001)", Count: 2}}
	if diff := cmp.Diff(wantDrops, sum.Drops); diff != "" {
		t.Errorf("drops (-want +got):\n%s", diff)
	}
}

func slicesContain(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func slicesContainPrefix(list []string, prefix string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, prefix) {
			return true
		}
	}
	return false
}
