//go:build e2e

package e2e

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// NetworkPolicy enforced by kube-router (--run-firewall) on the local
// cluster: svctrace must name the policy that refused a connection, the
// direction and why the client did not match, and the rule that admitted
// an allowed one. Everything lives in its own namespace; the servers run on
// the first node, clients on both.

const policyNS = "svctrace-np"

const node2Name = "svctrace-node2"

// policyManifests: two servers (np-web, selected by allow-frontend, and
// np-web2, selected by the default deny deny-web2), clients with and without
// role=frontend on each node, and a client whose egress is limited to an
// unrelated ipBlock.
var policyManifests = `apiVersion: v1
kind: Namespace
metadata:
  name: svctrace-np
` + npServer + npServer2 + npClient("frontend-local", "svctrace-node", "role: frontend") +
	npClient("plain-local", "svctrace-node", "app: np-plain") +
	npClient("frontend-remote", node2Name, "role: frontend") +
	npClient("plain-remote", node2Name, "app: np-plain") +
	npClient("egress-local", "svctrace-node", "role: frontend\n    egress: blocked") +
	npClient("egress-remote", node2Name, "role: frontend\n    egress: blocked")

// policyObjects are applied once every pod runs: kube-router fills a
// policy's ipsets when it syncs, so the pods' addresses must be known then.
const policyObjects = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-frontend, namespace: svctrace-np}
spec:
  podSelector: {matchLabels: {app: np-web}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: frontend}}
    ports:
    - port: 80
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-web2, namespace: svctrace-np}
spec:
  podSelector: {matchLabels: {app: np-web2}}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block-egress, namespace: svctrace-np}
spec:
  podSelector: {matchLabels: {egress: blocked}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 192.0.2.0/24}
`

const npServerTmpl = `---
apiVersion: v1
kind: Pod
metadata:
  name: NAME
  namespace: svctrace-np
  labels: {app: NAME}
spec:
  nodeName: svctrace-node
  terminationGracePeriodSeconds: 2
  dnsPolicy: None
  dnsConfig: {nameservers: ["127.0.0.1"]}
  containers:
  - name: web
    image: docker.io/library/svctrace-workload:1
    imagePullPolicy: Never
    command: ["/bin/workload", "http", "-addr", ":80"]
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: NAME, namespace: svctrace-np}
spec:
  selector: {app: NAME}
  ports: [{port: 80, targetPort: http}]
`

var (
	npServer  = strings.ReplaceAll(npServerTmpl, "NAME", "np-web")
	npServer2 = strings.ReplaceAll(npServerTmpl, "NAME", "np-web2")
)

func npClient(name, node, labels string) string {
	return `---
apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: svctrace-np
  labels:
    ` + labels + `
spec:
  nodeName: ` + node + `
  terminationGracePeriodSeconds: 2
  dnsPolicy: None
  dnsConfig: {nameservers: ["127.0.0.1"]}
  containers:
  - name: client
    image: docker.io/library/svctrace-workload:1
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
`
}

// applyPolicyScenario creates the namespace, pods, Services and policies
// and deletes them when the test ends.
func applyPolicyScenario(t *testing.T) {
	t.Helper()
	file := t.TempDir() + "/np.yaml"
	if err := os.WriteFile(file, []byte(policyManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, "apply", "-f", file)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		RunContext(ctx, t, env.Exec, env.KubectlBin, "delete", "namespace", policyNS, "--wait=true", "--ignore-not-found")
	})
	env.Kubectl(t, "wait", "--for=condition=Ready", "pods", "--all", "-n", policyNS, "--timeout=180s")
	pfile := t.TempDir() + "/np-policies.yaml"
	if err := os.WriteFile(pfile, []byte(policyObjects), 0o644); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, "apply", "-f", pfile)
}

// connects reports whether pod reaches url (a real connection, to check
// svctrace's verdict against what the kernel did).
func connects(t *testing.T, pod, url string) bool {
	t.Helper()
	// Bounded by timeout(1): the image's busybox wget crashes (SIGSEGV,
	// exit 139) when given -T.
	res := env.TryKubectl(t, "exec", "-n", policyNS, pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url)
	return res.ExitCode == 0
}

func TestNetworkPolicy(t *testing.T) {
	env.RequireExec(t)
	if res := env.TryKubectl(t, "get", "node", node2Name); res.ExitCode != 0 {
		t.Skipf("the policy tests need the 2-node local cluster (up --nodes 2):\n%s", res)
	}
	applyPolicyScenario(t)
	webIP := env.TryKubectl(t, "get", "svc", "np-web", "-n", policyNS, "-o", "jsonpath={.spec.clusterIP}").Stdout
	web2IP := env.TryKubectl(t, "get", "svc", "np-web2", "-n", policyNS, "-o", "jsonpath={.spec.clusterIP}").Stdout
	// kube-router programs the policies shortly after the pods start.
	Eventually(t, 90*time.Second, "kube-router enforcing allow-frontend", func() error {
		if connects(t, "plain-local", "http://"+webIP+"/") {
			return errors.New("plain-local still reaches np-web")
		}
		if !connects(t, "frontend-local", "http://"+webIP+"/") {
			return errors.New("frontend-local does not reach np-web yet")
		}
		return nil
	})

	type want struct {
		verdict   string
		effect    string
		direction string
		pod       string // the pod whose policies decided
		policy    string // ns/name named
		peerPod   string
		why       []string // substrings of explain.policy.why / reason
		rule      int
		crossNode bool // the deciding node is not the client's: needs following across nodes
	}
	tests := []struct {
		name string
		svc  string
		from string
		url  string
		want want
	}{
		{"same node: without the label, refused", "np-web", "plain-local", "http://" + webIP + "/", want{
			verdict: record.VerdictReject, effect: record.PolicyRefused, direction: "ingress", pod: policyNS + "/np-web",
			policy: policyNS + "/allow-frontend", peerPod: policyNS + "/plain-local",
			why: []string{"refused by NetworkPolicy svctrace-np/allow-frontend (ingress to pod svctrace-np/np-web)", "admits pods with role=frontend in namespace svctrace-np", "its labels are app=np-plain"},
		}},
		{"same node: with the label, admitted", "np-web", "frontend-local", "http://" + webIP + "/", want{
			verdict: record.VerdictAccept, effect: record.PolicyAdmitted, direction: "ingress", pod: policyNS + "/np-web",
			policy: policyNS + "/allow-frontend", rule: 1,
		}},
		{"same node: default deny", "np-web2", "frontend-local", "http://" + web2IP + "/", want{
			verdict: record.VerdictReject, effect: record.PolicyRefused, direction: "ingress", pod: policyNS + "/np-web2",
			policy: policyNS + "/deny-web2", why: []string{"svctrace-np/deny-web2 has no ingress rules"},
		}},
		{"same node: egress policy on the client", "np-web", "egress-local", "http://" + webIP + "/", want{
			verdict: record.VerdictReject, effect: record.PolicyRefused, direction: "egress", pod: policyNS + "/egress-local",
			policy: policyNS + "/block-egress", why: []string{"refused by NetworkPolicy svctrace-np/block-egress (egress from pod svctrace-np/egress-local)", "admits ipBlock 192.0.2.0/24"},
		}},
		{"cross node: egress policy on the client", "np-web", "egress-remote", "http://" + webIP + "/", want{
			verdict: record.VerdictReject, effect: record.PolicyRefused, direction: "egress", pod: policyNS + "/egress-remote",
			policy: policyNS + "/block-egress",
		}},
		{"cross node: without the label, refused at the endpoint", "np-web", "plain-remote", "http://" + webIP + "/", want{
			verdict: record.VerdictReject, effect: record.PolicyRefused, direction: "ingress", pod: policyNS + "/np-web",
			policy: policyNS + "/allow-frontend", peerPod: policyNS + "/plain-remote", crossNode: true,
		}},
		{"cross node: with the label, admitted at the endpoint", "np-web", "frontend-remote", "http://" + webIP + "/", want{
			verdict: record.VerdictAccept, effect: record.PolicyAdmitted, direction: "ingress", pod: policyNS + "/np-web",
			policy: policyNS + "/allow-frontend", rule: 1, crossNode: true,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.want
			// What the kernel does, independent of svctrace.
			if got, ok := connects(t, tc.from, tc.url), w.verdict == record.VerdictAccept; got != ok {
				t.Fatalf("%s -> %s: connected=%v, but the scenario expects %v (is kube-router enforcing the policies?)", tc.from, tc.url, got, ok)
			}
			res := env.Plugin(t, "svc/"+tc.svc, "-n", policyNS, "--from", "pod/"+tc.from, "--count", "1", "--timeout", "60s", "-o", "json", "--agent-log")
			p := onePacket(t, res)
			var c *record.PolicyCheck
			if p.Explain != nil {
				for i := range p.Explain.Policies {
					if pc := &p.Explain.Policies[i]; pc.Direction == w.direction && pc.Pod == w.pod {
						c = pc
					}
				}
			}
			if w.crossNode && len(p.Nodes) < 2 {
				t.Errorf("the endpoint's node decides, but the trace covers %v only", p.Nodes)
			}
			if p.Verdict != w.verdict {
				t.Errorf("verdict %s, want %s:\n%s", p.Verdict, w.verdict, res)
			}
			if c == nil {
				t.Fatalf("no policy check for %s %s in %+v:\n%s", w.direction, w.pod, p.Explain, res)
			}
			if c.CNI != "kube-router" || c.Effect != w.effect || c.Namespace+"/"+c.Name != w.policy || !contains(c.Policies, w.policy) {
				t.Errorf("check %+v, want kube-router %s by %s", *c, w.effect, w.policy)
			}
			if w.peerPod != "" && c.PeerPod != w.peerPod {
				t.Errorf("peer pod %q, want %q", c.PeerPod, w.peerPod)
			}
			if w.rule != 0 && c.Rule != w.rule {
				t.Errorf("admitting rule %d, want %d", c.Rule, w.rule)
			}
			if w.verdict != record.VerdictAccept {
				if p.Explain.Policy == nil || p.Explain.Policy.Effect != record.PolicyRefused {
					t.Errorf("explain.policy %+v, want the refusal", p.Explain.Policy)
				}
				for _, s := range w.why {
					if !strings.Contains(p.Explain.Reason, s) {
						t.Errorf("reason %q lacks %q", p.Explain.Reason, s)
					}
				}
				sum := summaryOf(t, res.Stdout)
				if len(sum.PolicyDrops) != 1 || !contains(sum.PolicyDrops[0].Policies, w.policy) || sum.PolicyDrops[0].Count != 1 {
					t.Errorf("summary policy_drops %+v, want one drop by %s", sum.PolicyDrops, w.policy)
				}
			} else if !strings.Contains(strings.Join(p.Explain.Notes, "\n"), "admitted by NetworkPolicy "+w.policy+" ingress rule 1") {
				t.Errorf("notes %q do not say which rule admitted it", p.Explain.Notes)
			}
			env.AssertNoLeftovers(t)
		})
	}

	t.Run("without permission to list policies: named with the permission to add", func(t *testing.T) {
		file := t.TempDir() + "/rbac.yaml"
		if err := os.WriteFile(file, []byte(minimalRole), 0o644); err != nil {
			t.Fatal(err)
		}
		env.Kubectl(t, "apply", "-f", file)
		atCleanup(t, env.Exec, env.KubectlBin, "delete", "-f", file, "--ignore-not-found")
		res := env.Plugin(t, "svc/np-web", "-n", policyNS, "--from", "pod/plain-local", "--count", "1", "--timeout", "60s", "-o", "json", "--as", "svctrace-e2e-user")
		p := onePacket(t, res)
		if p.Explain == nil || p.Explain.Policy == nil || p.Explain.Policy.Name != "allow-frontend" ||
			p.Explain.Policy.Missing != "list networking.k8s.io/networkpolicies in namespace "+policyNS {
			t.Errorf("explain %+v: want allow-frontend named and the missing permission", p.Explain)
		}
		if !strings.Contains(p.Explain.Reason, "svctrace needs permission to list networking.k8s.io/networkpolicies") {
			t.Errorf("reason %q does not say which permission to add", p.Explain.Reason)
		}
	})

	t.Run("text output names the policy", func(t *testing.T) {
		res := env.Plugin(t, "svc/np-web", "-n", policyNS, "--from", "pod/plain-local", "--count", "1", "--timeout", "60s")
		for _, s := range []string{"why: refused by NetworkPolicy svctrace-np/allow-frontend (ingress to pod svctrace-np/np-web)",
			"refused by NetworkPolicy svctrace-np/allow-frontend (ingress to pod svctrace-np/np-web)"} {
			if !strings.Contains(res.Stdout, s) {
				t.Errorf("text output lacks %q:\n%s", s, res)
			}
		}
	})
}
