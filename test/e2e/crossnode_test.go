//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// These tests follow one packet across the local cluster's two nodes
// (hack/manifests/multi-node: the sourceip pod runs on svctrace-node2; the
// client pod and the traffic's entry are on svctrace-node): the joined
// hops, the nodes, the NAT, and the source the server really logged.

const (
	node1 = "svctrace-node"
	node2 = "svctrace-node2"
)

// crossNode skips unless the cluster has the seed-003 set on two nodes.
func crossNode(t *testing.T) Pod {
	t.Helper()
	env.RequireExec(t)
	if len(env.ExecExternal) == 0 || len(env.ExecNode) == 0 {
		t.Skip("needs the local cluster's gateway and a shell on each node")
	}
	pods := env.ListPods(t, "app=sourceip")
	if len(pods) != 1 || pods[0].Spec.NodeName != node2 || pods[0].Status.PodIP == "" {
		t.Skipf("want the sourceip pod on %s (hack/local-cluster.sh up --nodes 2 && demo-apps), got %+v", node2, pods)
	}
	return pods[0]
}

// sourceLogged waits for the sourceip server's log line for path and
// returns the client address in it (the source the pod really saw).
func sourceLogged(t *testing.T, pod, path string) string {
	t.Helper()
	var client string
	Eventually(t, 30*time.Second, "request "+path+" in the log of pod "+pod, func() error {
		logs := env.Kubectl(t, "logs", "-n", "default", pod, "-c", "sourceip")
		for _, line := range strings.Split(logs, "\n") {
			if m := serverLogRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil && m[4] == path {
				client = m[1]
				return nil
			}
		}
		return fmt.Errorf("no line with path=%s", path)
	})
	return client
}

// crossing is what a joined packet must show.
type crossing struct {
	nodes        []string
	endpointNode string
	masqTo       string // "" = no source NAT
	verdict      string
	source       string // source_seen_by_endpoint, and what the server logged ("" = not checked)
}

func assertJoined(t *testing.T, p record.Packet, want crossing) {
	t.Helper()
	dump, _ := json.MarshalIndent(p, "", "  ")
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format+"\npacket:\n%s", append(args, dump)...)
	}
	if diff := cmp.Diff(want.nodes, p.Nodes); diff != "" {
		fail("nodes (-want +got):\n%s", diff)
	}
	if p.EndpointNode != want.endpointNode {
		fail("endpoint_node %q, want %q", p.EndpointNode, want.endpointNode)
	}
	if p.Verdict != want.verdict {
		fail("verdict %s, want %s", p.Verdict, want.verdict)
	}
	// Hops in order: every hop names its node, the nodes' runs follow p.Nodes.
	var runs []string
	for i, h := range p.Hops {
		if h.Node == "" {
			fail("hop %d has no node", i)
		}
		if len(runs) == 0 || runs[len(runs)-1] != h.Node {
			runs = append(runs, h.Node)
		}
	}
	if diff := cmp.Diff(want.nodes, runs); diff != "" {
		fail("the hops' nodes, in order (-want +got):\n%s", diff)
	}
	if len(want.nodes) > 1 {
		if len(p.Crossings) != 1 {
			fail("%d crossings, want 1", len(p.Crossings))
		} else if x := p.Crossings[0]; !x.Arrived || x.From != want.nodes[0] || x.To != want.nodes[1] || x.Out == "" || x.Via == "" || x.Route == "" || x.Hop <= 0 || x.Hop >= len(p.Hops) || p.Hops[x.Hop].Node != x.To {
			fail("crossing %+v: want it arrived at %s, with interface, next hop and route", x, want.nodes[1])
		} else if h := p.Hops[x.Hop]; h.Table != "raw" || h.Chain != "PREROUTING" {
			// The second node saw the packet arrive for the endpoint itself.
			fail("the second node's first hop is %s:%s, want raw:PREROUTING", h.Table, h.Chain)
		}
	}
	var masq []string
	for _, n := range p.NAT {
		if n.Kind == record.NATMasquerade || n.Kind == record.NATSNAT {
			masq = append(masq, n.To)
		}
	}
	switch {
	case want.masqTo == "" && len(masq) > 0:
		fail("source NAT %v, want none", masq)
	case want.masqTo != "" && (len(masq) != 1 || masq[0] != want.masqTo):
		fail("source NAT %v, want one to %s", masq, want.masqTo)
	}
	if want.source != "" {
		if p.Explain == nil || p.Explain.SourceSeenByEndpoint != want.source {
			fail("source_seen_by_endpoint, want %s (what the server logged)", want.source)
		}
		if p.Explain != nil && p.Explain.SourcePredicted != "" {
			fail("observed and predicted sources differ: %s", p.Explain.SourcePredicted)
		}
	}
}

// TestCrossNode: the cases 1-7.
func TestCrossNode(t *testing.T) {
	srv := crossNode(t)
	clientPods := env.ListPods(t, "app=client")
	if len(clientPods) != 1 || clientPods[0].Spec.NodeName != node1 {
		t.Fatalf("want the client pod on %s: %+v", node1, clientPods)
	}
	clientIP := clientPods[0].Status.PodIP
	sourceip := env.GetService(t, "sourceip").Spec.ClusterIP
	node2Bridge := interfaceIPv4(t, func(t testing.TB, args ...string) Result { return env.OnNode(t, node2, args...) }, PodBridge)

	tests := []struct {
		name string
		args []string
		// send makes the traffic and returns the request's path ("": none to check in the log).
		send func(t *testing.T, path string)
		want crossing
		// check looks at what is particular to the case.
		check func(t *testing.T, p record.Packet)
	}{
		{
			name: "1 pod on node 1 -> ClusterIP -> endpoint on node 2: not masqueraded",
			args: []string{"svc/sourceip", "--node", node1},
			send: func(t *testing.T, path string) {
				res := env.TryKubectl(t, "exec", "-n", "default", "client", "--", "timeout", "10", "wget", "-q", "-O", "-", "http://"+sourceip+path)
				if res.ExitCode != 0 {
					t.Errorf("wget from the client pod failed:\n%s", res)
				}
			},
			want: crossing{nodes: []string{node1, node2}, endpointNode: node2, verdict: record.VerdictAccept, source: clientIP},
		},
		{
			name: "2 node 1 -> ClusterIP -> endpoint on node 2: masqueraded to node 1's address",
			args: []string{"svc/sourceip", "--node", node1},
			send: func(t *testing.T, path string) {
				if _, code, res := curl(t, env.InCluster, "http://"+sourceip+path); code != 200 {
					t.Errorf("want HTTP 200:\n%s", res)
				}
			},
			want: crossing{nodes: []string{node1, node2}, endpointNode: node2, masqTo: nodeIP, verdict: record.VerdictAccept, source: nodeIP},
		},
		{
			name: "2b the same with --probe",
			args: []string{"svc/sourceip", "--probe", "--node", node1},
			want: crossing{nodes: []string{node1, node2}, endpointNode: node2, masqTo: nodeIP, verdict: record.VerdictAccept},
			check: func(t *testing.T, p record.Packet) {
				if p.Explain == nil || p.Explain.SourceSeenByEndpoint != nodeIP {
					t.Errorf("node 2 observed %+v, want %s", p.Explain, nodeIP)
				}
			},
		},
		{
			name: "3 gateway -> NodePort on node 1, externalTrafficPolicy Cluster, endpoint on node 2",
			args: []string{"svc/sourceip-cluster", "--node", node1},
			send: func(t *testing.T, path string) {
				if _, code, res := curl(t, env.External, "http://"+nodeIP+":30082"+path); code != 200 {
					t.Errorf("want HTTP 200:\n%s", res)
				}
			},
			want: crossing{nodes: []string{node1, node2}, endpointNode: node2, masqTo: nodeIP, verdict: record.VerdictAccept, source: nodeIP},
			check: func(t *testing.T, p record.Packet) {
				if !hasNote(p, "forwarded to the endpoint on "+node2+" (externalTrafficPolicy: Cluster)") {
					t.Errorf("no note on the forwarding: %+v", p.Explain)
				}
			},
		},
		{
			name: "4 gateway -> NodePort on node 1, externalTrafficPolicy Local, endpoint only on node 2: dropped",
			args: []string{"svc/sourceip-local", "--node", node1},
			send: func(t *testing.T, path string) {
				if _, code, _ := curl(t, env.External, "http://"+nodeIP+":30083"+path); code == 200 {
					t.Errorf("node 1 answered on the Local NodePort without a local endpoint")
				}
			},
			want: crossing{nodes: []string{node1}, verdict: record.VerdictDrop},
			check: func(t *testing.T, p record.Packet) {
				if p.Explain == nil || !strings.Contains(p.Explain.Reason, node1+" has no local endpoint") || !strings.Contains(p.Explain.Reason, "nodes with one: "+node2) {
					t.Errorf("the reason does not say why and where the endpoints are: %+v", p.Explain)
				}
			},
		},
		{
			name: "5 gateway -> that NodePort on node 2: accepted, client address kept",
			args: []string{"svc/sourceip-local", "--node", node2},
			send: func(t *testing.T, path string) {
				if _, code, res := curl(t, env.External, "http://10.199.0.3:30083"+path); code != 200 {
					t.Errorf("want HTTP 200:\n%s", res)
				}
			},
			want: crossing{nodes: []string{node2}, endpointNode: node2, verdict: record.VerdictAccept, source: gatewayIP},
		},
		{
			name: "6 gateway -> LoadBalancer IP (entering node 1), endpoint on node 2",
			args: []string{"svc/sourceip-lb", "--node", node1},
			send: func(t *testing.T, path string) {
				if _, code, res := curl(t, env.External, "http://"+crossNodeLBIP+path); code != 200 {
					t.Errorf("want HTTP 200:\n%s", res)
				}
			},
			want: crossing{nodes: []string{node1, node2}, endpointNode: node2, masqTo: nodeIP, verdict: record.VerdictAccept, source: nodeIP},
		},
		{
			name: "7 hairpin: the endpoint reaches itself through its Service",
			args: []string{"svc/sourceip", "--from", "pod/" + srv.Metadata.Name},
			want: crossing{nodes: []string{node2}, endpointNode: node2, masqTo: node2Bridge, verdict: record.VerdictAccept},
			check: func(t *testing.T, p record.Packet) {
				if !hasNote(p, "hairpin: default/"+srv.Metadata.Name+" reached itself") {
					t.Errorf("no hairpin note: %+v", p.Explain)
				}
				if p.Explain == nil || p.Explain.SourceSeenByEndpoint != node2Bridge {
					t.Errorf("the pod sees %+v, want %s (node 2's %s)", p.Explain, node2Bridge, PodBridge)
				}
			},
		},
	}
	// The LoadBalancer Service of case 6 exists for the whole test: made
	// or deleted between cases, kube-proxy's resync would rewrite its
	// chains (new nft rule handles) while the next case traces.
	lbService(t)
	Eventually(t, 30*time.Second, "kube-proxy serving the LoadBalancer IP", func() error {
		if _, code, res := curl(t, env.External, "http://"+crossNodeLBIP+"/"); code != 200 {
			return fmt.Errorf("no HTTP 200 from %s yet:\n%s", crossNodeLBIP, res)
		}
		return nil
	})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/e2e-crossnode-%d-%d", time.Now().UnixNano(), i)
			// --agent-log: a failure shows what each agent read and when.
			args := append(append([]string{}, tc.args...), "--count", "1", "--timeout", "60s", "-o", "json", "--agent-log")
			var res Result
			if tc.send == nil {
				res = env.Plugin(t, args...)
			} else {
				res = traceWithTraffic(t, func(t *testing.T) { tc.send(t, path) }, args...)
			}
			p := onePacket(t, res)
			want := tc.want
			if want.source != "" {
				if logged := sourceLogged(t, srv.Metadata.Name, path); logged != want.source {
					t.Errorf("the server logged client %s, want %s", logged, want.source)
				}
			}
			assertJoined(t, p, want)
			if tc.check != nil {
				tc.check(t, p)
			}
			if !strings.Contains(res.Stderr, "Nodes: ") && len(want.nodes) > 1 {
				t.Errorf("stderr does not say which node plays which part:\n%s", res.Stderr)
			}
			env.AssertNoLeftovers(t)
		})
	}
}

func hasNote(p record.Packet, s string) bool {
	if p.Explain == nil {
		return false
	}
	for _, n := range p.Explain.Notes {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// crossNodeLBIP is the load-balancer address the test gives sourceip-lb
// (the last of the local cluster's range, which demo-apps does not use).
const crossNodeLBIP = "10.199.0.250"

// lbService exposes the sourceip pod as a LoadBalancer Service and gives it
// crossNodeLBIP as the local cluster's `lb` command does: the status, and
// the gateway's route to it via the first node.
func lbService(t *testing.T) string {
	t.Helper()
	if env.TryKubectl(t, "get", "svc", "sourceip-lb", "-n", "default").ExitCode != 0 {
		env.Kubectl(t, "expose", "deployment", "sourceip", "-n", "default", "--name", "sourceip-lb", "--type", "LoadBalancer", "--port", "80", "--target-port", "80")
		atCleanup(t, env.Exec, env.KubectlBin, "delete", "svc", "sourceip-lb", "-n", "default", "--ignore-not-found")
	}
	env.Kubectl(t, "patch", "svc", "sourceip-lb", "-n", "default", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"`+crossNodeLBIP+`","ipMode":"VIP"}]}}}`)
	if res := env.External(t, "ip", "route", "replace", crossNodeLBIP+"/32", "via", nodeIP, "dev", "eth0"); res.ExitCode != 0 {
		t.Fatalf("route the LB IP on the gateway:\n%s", res)
	}
	atCleanup(t, env.ExecExternal, "ip", "route", "del", crossNodeLBIP+"/32")
	return crossNodeLBIP
}

// TestCrossNodeClientKilled: kill -9 of the client while agents run on both
// nodes leaves nothing on either: every agent notices its stdin close,
// removes its rules and ends; cleanup then deletes the pods.
func TestCrossNodeClientKilled(t *testing.T) {
	crossNode(t)
	p := env.StartPlugin(t, "svc/sourceip", "--node", node1, "--timeout", "10m")
	env.CleanUpAfterKill(t, p)
	p.WaitForOutput(t, readyLine, 90*time.Second)
	pods := env.ListPods(t, ManagedByLabel)
	on := map[string]bool{}
	for _, pod := range pods {
		on[pod.Spec.NodeName] = true
	}
	if !on[node1] || !on[node2] {
		t.Fatalf("agent pods on %v, want both nodes", on)
	}
	for _, n := range []string{node1, node2} {
		if !rulesOn(t, n) {
			t.Fatalf("no svctrace rule on %s while its agent traces", n)
		}
	}
	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "every agent pod to end after its client died", func() error {
		for _, pod := range env.ListPods(t, ManagedByLabel) {
			if ph := pod.Status.Phase; ph != "Succeeded" && ph != "Failed" {
				return fmt.Errorf("agent pod %s on %s is %s", pod.Metadata.Name, pod.Spec.NodeName, ph)
			}
		}
		return nil
	})
	t.Logf("both agents ended %.1fs after their client was killed", time.Since(killed).Seconds())
	for _, n := range []string{node1, node2} {
		if rulesOn(t, n) {
			t.Errorf("svctrace rules remain on %s after its agent ended", n)
		}
	}
	if res := env.Plugin(t, "cleanup"); res.ExitCode != 0 || !strings.Contains(res.Stdout, "Deleted 2 svctrace pod(s)") {
		t.Errorf("cleanup should delete the 2 pods left behind:\n%s", res)
	}
	env.AssertNoLeftovers(t)
}

// rulesOn reports whether a node's rulesets mention svctrace.
func rulesOn(t *testing.T, node string) bool {
	t.Helper()
	for _, dump := range ruleDumps {
		if strings.Contains(strings.ToLower(env.OnNode(t, node, dump...).Stdout), "svctrace") {
			return true
		}
	}
	return false
}
