//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// These tests check what svctrace says about a path against what really
// happened on the cluster: the reverse-path filter drop is reproduced for
// real, the source address an endpoint sees is checked against the server's
// own log, and --from connections come from inside the pod.

const (
	nodeIP    = "10.199.0.2"
	gatewayIP = "10.199.0.1"
)

// summaryOf returns the summary record of a -o json run (it must be the last record).
func summaryOf(t testing.TB, stdout string) record.Summary {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var s record.Summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil || s.Type != record.TypeSummary {
		t.Fatalf("the last record is not a summary (%v):\n%s", err, stdout)
	}
	return s
}

// atCleanup runs prefix+args when the test ends, with a context of its own (the test's is
// canceled by then), and reports a failure.
func atCleanup(t *testing.T, prefix []string, args ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		if res := RunContext(ctx, t, prefix, args...); res.ExitCode != 0 {
			t.Errorf("clean up:\n%s", res)
		}
	})
}

// setSysctl sets a sysctl with the command prefix (env.Exec: the node's namespace,
// env.ExecExternal: the gateway's) and puts the old value back when the test ends.
func setSysctl(t *testing.T, prefix []string, name, value string) {
	t.Helper()
	old := Run(t, prefix, "sysctl", "-n", name)
	if old.ExitCode != 0 {
		t.Fatalf("read %s:\n%s", name, old)
	}
	if res := Run(t, prefix, "sysctl", "-qw", name+"="+value); res.ExitCode != 0 {
		t.Fatalf("set %s:\n%s", name, res)
	}
	atCleanup(t, prefix, "sysctl", "-qw", name+"="+strings.TrimSpace(old.Stdout))
}

// unusedPodCIDRAddr returns an address of the node's pod range that no pod has.
func unusedPodCIDRAddr(t *testing.T) string {
	t.Helper()
	used := map[string]bool{}
	var l PodList
	env.KubectlJSON(t, &l, "get", "pods", "--all-namespaces")
	for _, p := range l.Items {
		used[p.Status.PodIP] = true
	}
	for i := 250; i > 200; i-- {
		if a := "10.244.0." + strconv.Itoa(i); !used[a] {
			return a
		}
	}
	t.Fatal("no free address in 10.244.0.201-250")
	return ""
}

// TestExplainReversePathDrop reproduces a reverse-path filter drop for real: a client on the
// gateway sends to the NodePort from an address of the pod range, so the SYN arrives on the
// node's eth0 while the node's route back to that address leaves through its pod bridge. With
// net.ipv4.conf.all.rp_filter=1 the routing decision drops it right after nat PREROUTING,
// and the live agent must say so from the kernel's own route lookup.
func TestExplainReversePathDrop(t *testing.T) {
	env.RequireExec(t)
	if len(env.ExecExternal) == 0 {
		t.Skip("SVCTRACE_EXEC_EXTERNAL is not set: no client outside the cluster")
	}
	spoofed := unusedPodCIDRAddr(t)
	if res := env.External(t, "ip", "addr", "add", spoofed+"/32", "dev", "eth0"); res.ExitCode != 0 {
		t.Fatalf("add %s to the gateway:\n%s", spoofed, res)
	}
	atCleanup(t, env.ExecExternal, "ip", "addr", "del", spoofed+"/32", "dev", "eth0")
	// The node checks an ARP request's sender address against the reverse path too: ask
	// for the node's MAC from the gateway's own address, or the SYN never leaves.
	setSysctl(t, env.ExecExternal, "net.ipv4.conf.eth0.arp_announce", "2")
	setSysctl(t, env.Exec, "net.ipv4.conf.all.rp_filter", "1")
	eth0RP := strings.TrimSpace(env.InCluster(t, "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter").Stdout)

	res := traceWithTraffic(t, func(t *testing.T) {
		// curl exit code 28: timed out, no answer at all.
		res := env.External(t, "curl", "-sS", "-m", "3", "--interface", spoofed, "http://"+nodeIP+":30080/svctrace-e2e-rpfilter")
		if res.ExitCode != 28 {
			t.Errorf("the connection from %s did not time out (curl exit code 28), want it dropped:\n%s", spoofed, res)
		}
	}, "svc/myapp-nodeport", "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json")
	p := onePacket(t, res)
	dump, _ := json.MarshalIndent(p, "", "  ")
	if p.Verdict != record.VerdictDrop {
		t.Errorf("verdict %s, want DROP\n%s", p.Verdict, dump)
	}
	if h, _, _ := strings.Cut(p.Src, ":"); h != spoofed {
		t.Errorf("packet from %s, want %s", p.Src, spoofed)
	}
	epIP, _, _ := strings.Cut(p.Endpoint, ":")
	if nftablesMode() {
		// kube-proxy's nftables mode picks the endpoint inside its DNAT
		// rule (dnat to numgen random mod N map {...}) and nft traces do
		// not say which element: only a later hop's header shows it, and
		// this packet has none (the routing decision drops it right after
		// nat-prerouting). So the DNAT hop names the candidates, and the
		// route lookup is made for the destination the packet arrived with.
		epIP = nodeIP
		if p.Endpoint != "" {
			t.Errorf("endpoint %q: the trace cannot show which one numgen chose\n%s", p.Endpoint, dump)
		}
		dnat := ""
		for _, h := range p.Hops {
			if h.Verdict == "DNAT" {
				dnat = h.Meaning
			}
		}
		for _, ep := range myappEndpoints(t, 80) {
			if !strings.Contains(dnat, ep) || !strings.HasPrefix(dnat, "DNAT to one of ") {
				t.Errorf("DNAT hop %q does not name candidate endpoint %s\n%s", dnat, ep, dump)
			}
		}
	} else if !contains(myappEndpoints(t, 80), p.Endpoint) {
		t.Errorf("endpoint %q, want one of %v\n%s", p.Endpoint, myappEndpoints(t, 80), dump)
	}
	if p.Explain == nil {
		t.Fatalf("no explanation:\n%s", dump)
	}
	for _, want := range []string{
		fmt.Sprintf("dropped by the reverse-path filter on eth0: rp_filter=1 (strict; all=1 eth0=%s)", eth0RP),
		"(the route back to the source does not leave through eth0)",
		fmt.Sprintf("ip route get from %s to %s iif eth0", spoofed, epIP),
	} {
		if !strings.Contains(p.Explain.Reason, want) {
			t.Errorf("reason lacks %q:\n%s", want, p.Explain.Reason)
		}
	}
	wantNote := fmt.Sprintf("the route back to %s leaves through %s, not eth0", spoofed, PodBridge)
	found := false
	for _, n := range p.Explain.Notes {
		found = found || strings.HasPrefix(n, wantNote)
	}
	if !found {
		t.Errorf("notes lack %q: %q", wantNote, p.Explain.Notes)
	}
	if last := p.Hops[len(p.Hops)-1]; last.Table != proxyNATTable() || last.In != "eth0" {
		t.Errorf("last hop %s:%s in %q, want nat PREROUTING's path (%s table), in eth0", last.Table, last.Chain, last.In, proxyNATTable())
	}
	sum := summaryOf(t, res.Stdout)
	if len(sum.Drops) != 1 || sum.Drops[0].Count != 1 || !strings.HasPrefix(sum.Drops[0].Reason, "dropped by the reverse-path filter on eth0") {
		t.Errorf("summary drops %+v, want the one reverse-path drop", sum.Drops)
	}
	env.AssertNoLeftovers(t)
}

// TestExplainSourceSeenByEndpoint sends one request from the gateway to each NodePort
// Service and compares the source address svctrace says the endpoint sees with the one the
// server pod logs: the client's with externalTrafficPolicy Local, the node's masquerade
// address with Cluster (its pod bridge's for a pod on the node, its own for a pod on another).
func TestExplainSourceSeenByEndpoint(t *testing.T) {
	env.RequireExec(t)
	if len(env.ExecExternal) == 0 {
		t.Skip("SVCTRACE_EXEC_EXTERNAL is not set: no client outside the cluster")
	}
	bridgeIP := interfaceIPv4(t, env.InCluster, PodBridge)
	node := env.Nodes(t)[0]
	tests := []struct {
		name, service string
		port          int
		wantMasq      bool
	}{
		{name: "externalTrafficPolicy Local keeps the client's address", service: "myapp-local", port: 30081},
		{name: "externalTrafficPolicy Cluster masquerades", service: "myapp-nodeport", port: 30080, wantMasq: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/e2e-source-%d-%d", time.Now().UnixNano(), i)
			var pod string
			res := traceWithTraffic(t, func(t *testing.T) {
				body, code, res := curl(t, env.External, "http://"+nodeIP+":"+strconv.Itoa(tc.port)+path)
				if code != 200 {
					t.Fatalf("want HTTP 200 from the NodePort:\n%s", res)
				}
				pod = servedBy(t, body)
			}, "svc/"+tc.service, "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json")
			p := onePacket(t, res)
			dump, _ := json.MarshalIndent(p, "", "  ")
			if p.EndpointPod != "default/"+pod {
				t.Errorf("endpoint pod %q, but %s served the request\n%s", p.EndpointPod, pod, dump)
			}
			logged := clientSeenBy(t, pod, path)
			if p.Explain == nil {
				t.Fatalf("no explanation:\n%s", dump)
			}
			if diff := cmp.Diff(logged, p.Explain.SourceSeenByEndpoint); diff != "" {
				t.Errorf("source seen by the endpoint: svctrace says %q, pod %s logged %q (-logged +svctrace):\n%s\n%s", p.Explain.SourceSeenByEndpoint, pod, logged, diff, dump)
			}
			wantSource := gatewayIP
			if tc.wantMasq {
				wantSource = masqueradeAddr(t, node, bridgeIP, pod)
			}
			if logged != wantSource {
				t.Errorf("pod %s logged client %s, want %s", pod, logged, wantSource)
			}
			var masq []record.NAT
			for _, n := range p.NAT {
				if n.Kind == record.NATMasquerade {
					masq = append(masq, n)
				}
			}
			if tc.wantMasq {
				if len(masq) != 1 || masq[0].To != wantSource {
					t.Errorf("masquerade %+v, want one to %s", masq, wantSource)
				}
			} else if len(masq) > 0 {
				t.Errorf("masquerade %+v, want none (externalTrafficPolicy Local)", masq)
			}
			sum := summaryOf(t, res.Stdout)
			if sum.Packets != 1 || sum.SNAT != len(masq) {
				t.Errorf("summary: %d packets, %d SNAT; want 1, %d", sum.Packets, sum.SNAT, len(masq))
			}
			env.AssertNoLeftovers(t)
		})
	}
}

// TestExplainSummary sends six connections through svc/myapp and checks the --summary
// output alone: which pod got how many new connections against the expected third each.
func TestExplainSummary(t *testing.T) {
	env.RequireExec(t)
	const n = 6
	myapp := env.GetService(t, "myapp").Spec.ClusterIP
	send := func(t *testing.T) {
		script := fmt.Sprintf("for i in $(seq %d); do curl -s -m 2 -o /dev/null http://%s/svctrace-e2e-summary; done", n, myapp)
		if res := env.InCluster(t, "sh", "-c", script); res.ExitCode != 0 {
			t.Errorf("curl loop failed:\n%s", res)
		}
	}
	t.Run("json", func(t *testing.T) {
		res := traceWithTraffic(t, send, "svc/myapp", "--node", nodeName, "--count", strconv.Itoa(n), "--timeout", "60s", "--summary", "-o", "json")
		if res.ExitCode != 0 {
			t.Fatalf("trace failed:\n%s", res)
		}
		if lines := strings.Split(strings.TrimSpace(res.Stdout), "\n"); len(lines) != 1 {
			t.Fatalf("%d records on stdout, want only the summary:\n%s", len(lines), res)
		}
		sum := summaryOf(t, res.Stdout)
		if sum.Packets != n || sum.Verdicts[record.VerdictAccept] != n || sum.SNAT != n || sum.Lost != 0 {
			t.Errorf("summary %+v, want %d packets, all ACCEPT and masqueraded (from the node), none lost", sum, n)
		}
		eps := myappEndpoints(t, 80)
		if len(sum.Endpoints) != len(eps) {
			t.Fatalf("summary lists %d endpoints, want the %d of default/myapp: %+v", len(sum.Endpoints), len(eps), sum.Endpoints)
		}
		total := 0
		// Expected shares come from the rules to 6 decimals (iptables
		// statistic probabilities, nftables numgen maps alike).
		for _, e := range sum.Endpoints {
			total += e.Count
			if e.Service != "default/myapp" || !contains(eps, e.Endpoint) || !strings.HasPrefix(e.Pod, "default/myapp-") ||
				math.Abs(e.Expected-1.0/3) > 1e-6 {
				t.Errorf("endpoint share %+v: want default/myapp, one of %v, its pod, expected 1/3", e, eps)
			}
		}
		if total != n {
			t.Errorf("new connections per endpoint add up to %d, want %d", total, n)
		}
		env.AssertNoLeftovers(t)
	})
	t.Run("text", func(t *testing.T) {
		// --agent-log: a failure shows how each agent grouped the packets.
		res := traceWithTraffic(t, send, "svc/myapp", "--node", nodeName, "--count", strconv.Itoa(n), "--timeout", "60s", "--summary", "--agent-log")
		if res.ExitCode != 0 {
			t.Fatalf("trace failed:\n%s", res)
		}
		for _, want := range []string{fmt.Sprintf("Summary: %d packets, %d ACCEPT; %d source-NATed; 0 records lost", n, n, n), "ENDPOINT", "default/myapp-", "33.3%"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("summary lacks %q:\n%s", want, res)
			}
		}
		if strings.Contains(res.Stdout, servicesChain()) {
			t.Errorf("--summary printed packet paths:\n%s", res)
		}
		env.AssertNoLeftovers(t)
	})
}

// TestExplainFromPod traces connections opened from inside pods: the demo client (busybox)
// and a pod whose image has no shell and no tool at all. Of the cluster's images only the
// agent's is like that (its binary and iptables): the pod runs `kubectl-svctrace analyze -`,
// which waits for input on the container's stdin for ever, unprivileged.
func TestExplainFromPod(t *testing.T) {
	env.RequireExec(t)
	// No "svctrace" in the pod names: kube-router names pods in its firewall
	// rules' comments, and AssertNoLeftovers looks for svctrace in every rule.
	const noTools = "e2e-notools"
	const hostnetPod = "e2e-hostnet"
	const pendingPod = "e2e-pending"
	agentImage := strings.TrimSpace(strings.SplitN(strings.SplitN(Run(t, nil, env.Bin, "version").Stdout, "agent image: ", 2)[1], "\n", 2)[0])
	run := func(name, image string, extra ...string) {
		args := append([]string{"run", name, "-n", "default", "--restart=Never", "--image=" + image, "--image-pull-policy=Never", "--labels=svctrace-e2e=explain"}, extra...)
		env.Kubectl(t, args...)
	}
	atCleanup(t, env.Exec, env.KubectlBin, "delete", "pods", "-n", "default", "-l", "svctrace-e2e=explain", "--grace-period=1", "--wait=true")
	// On the first node, like the client pod: the paths below are that node's.
	onNode := fmt.Sprintf(`"nodeSelector":{"kubernetes.io/hostname":%q}`, nodeName)
	run(noTools, agentImage, fmt.Sprintf(`--overrides={"spec":{%s,"containers":[{"name":%q,"image":%q,"imagePullPolicy":"Never","command":["/kubectl-svctrace","analyze","-"],"stdin":true,"stdinOnce":false}]}}`, onNode, noTools, agentImage))
	run(hostnetPod, "docker.io/library/svctrace-pause:1", `--overrides={"spec":{`+onNode+`,"hostNetwork":true}}`)
	run(pendingPod, "docker.io/library/svctrace-e2e-no-such-image:1")
	env.Kubectl(t, "wait", "--for=condition=Ready", "pod/"+noTools, "pod/"+hostnetPod, "-n", "default", "--timeout=120s")
	if res := env.TryKubectl(t, "exec", "-n", "default", noTools, "--", "sh", "-c", "true"); res.ExitCode == 0 || !strings.Contains(res.Stderr, `"sh": executable file not found`) {
		t.Fatalf("pod %s must have no shell for this test:\n%s", noTools, res)
	}

	podIP := func(name string) string {
		var p Pod
		env.KubectlJSON(t, &p, "get", "pod", name, "-n", "default")
		return p.Status.PodIP
	}
	for _, pod := range []string{"client", noTools} {
		t.Run("pod/"+pod, func(t *testing.T) {
			res := env.Plugin(t, "svc/myapp", "--from", "pod/"+pod, "--count", "1", "--timeout", "60s", "-o", "json")
			p := onePacket(t, res)
			ip := podIP(pod)
			assertPath(t, p, path{
				service:   "default/myapp",
				chains:    append([]string{preroutingChain()}, clusterIPChains("default/myapp", "tcp")...),
				endpoints: myappEndpoints(t, 80), masquerade: false, verdict: record.VerdictAccept,
			})
			if h, _, _ := strings.Cut(p.Src, ":"); h != ip {
				t.Errorf("packet from %s, want the pod's address %s", p.Src, ip)
			}
			if p.Explain == nil || p.Explain.SourceSeenByEndpoint != ip {
				t.Errorf("explain %+v, want the endpoint to see the pod's address %s", p.Explain, ip)
			}
			if want := fmt.Sprintf("sending a test connection from pod default/%s (%s)", pod, ip); !strings.Contains(res.Stderr, want) {
				t.Errorf("stderr lacks %q:\n%s", want, res)
			}
			env.AssertNoLeftovers(t)
		})
	}

	tests := []struct {
		name, from, want string
	}{
		{name: "pod not found", from: "pod/svctrace-e2e-nope", want: "error: --from: pod \"svctrace-e2e-nope\" not found in namespace \"default\": list pods with `kubectl get pods -n default`"},
		{name: "hostNetwork pod", from: "pod/" + hostnetPod, want: "error: --from: pod default/" + hostnetPod + " uses the node's network (hostNetwork: true), so its connections are the node's own: trace without --from and add --probe --node " + nodeName},
		{name: "pod not Running", from: "pod/" + pendingPod, want: "error: --from: pod default/" + pendingPod + " is Pending, not Running"},
		{name: "not a pod", from: "deploy/myapp", want: `error: --from "deploy/myapp": give the pod to connect from as pod/NAME`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := env.Plugin(t, "svc/myapp", "--from", tc.from, "--count", "1")
			if res.ExitCode != 1 || !strings.Contains(res.Stderr, tc.want) || res.Stdout != "" {
				t.Errorf("want exit code 1, nothing on stdout and %q on stderr:\n%s", tc.want, res)
			}
		})
	}
	env.AssertNoLeftovers(t)
}

// TestExplainSynRetransmit drops the SYN-ACKs arriving at the node for 1.5 s, so the node's
// kernel sends its SYN again. svctrace tells the retransmission for what it is (conntrack
// already tracks the connection, so the nat table saw only the first SYN, whose trace chose
// the endpoint) and counts it apart from new connections.
func TestExplainSynRetransmit(t *testing.T) {
	env.RequireExec(t)
	ipt := "iptables-nft"
	if env.Backend == "legacy" {
		ipt = "iptables-legacy"
	}
	drop := []string{"INPUT", "-p", "tcp", "--sport", "80", "--tcp-flags", "SYN,ACK", "SYN,ACK", "-m", "comment", "--comment", "e2e-drop-synack", "-j", "DROP"}
	myapp := env.GetService(t, "myapp").Spec.ClusterIP
	send := func(t *testing.T) {
		if res := env.InCluster(t, append([]string{ipt, "-w", "-I"}, drop...)...); res.ExitCode != 0 {
			t.Fatalf("drop the SYN-ACKs:\n%s", res)
		}
		// Deleted by the script below; this one is for a test that stops before.
		atCleanup(t, env.Exec, "sh", "-c", fmt.Sprintf("%s -w -D %s 2>/dev/null; true", ipt, strings.Join(drop, " ")))
		script := fmt.Sprintf("(sleep 1.5; %s -w -D %s) & curl -s -m 8 -o /dev/null http://%s/svctrace-e2e-retransmit; wait", ipt, strings.Join(drop, " "), myapp)
		if res := env.InCluster(t, "sh", "-c", script); res.ExitCode != 0 {
			t.Errorf("curl:\n%s", res)
		}
	}
	res := traceWithTraffic(t, send, "svc/myapp", "--node", nodeName, "--count", "2", "--timeout", "60s", "-o", "json")
	if res.ExitCode != 0 {
		t.Fatalf("trace failed:\n%s", res)
	}
	pkts, _ := records(t, res.Stdout)
	if len(pkts) != 2 {
		t.Fatalf("%d packets, want the SYN and its retransmission:\n%s", len(pkts), res)
	}
	first, again := pkts[0], pkts[1]
	if first.Explain == nil || first.Explain.Retransmit || !newConnectionDNAT(first) {
		t.Errorf("the first SYN: want the nat table's DNAT and no retransmission, got nat %+v explain %+v", first.NAT, first.Explain)
	}
	if again.Explain == nil || !again.Explain.Retransmit || !strings.Contains(again.Explain.Summary, "SYN retransmission: translated ") ||
		again.Endpoint != first.Endpoint || again.TCPSeq != first.TCPSeq {
		t.Errorf("the second SYN: want a retransmission to the first one's endpoint %s with its sequence number %d, got endpoint %s seq %d explain %+v",
			first.Endpoint, first.TCPSeq, again.Endpoint, again.TCPSeq, again.Explain)
	}
	sum := summaryOf(t, res.Stdout)
	total := 0
	for _, e := range sum.Endpoints {
		total += e.Count
	}
	if sum.Packets != 2 || sum.Retransmits != 1 || total != 1 {
		t.Errorf("summary %+v: want 2 packets, 1 retransmission, 1 new connection", sum)
	}
	env.AssertNoLeftovers(t)
}

// newConnectionDNAT reports whether the nat table translated p (a rule's DNAT, not conntrack's).
func newConnectionDNAT(p record.Packet) bool {
	for _, n := range p.NAT {
		if n.Kind == record.NATDNAT && n.Chain != "" {
			return true
		}
	}
	return false
}
