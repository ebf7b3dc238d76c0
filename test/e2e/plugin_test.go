//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// These tests drive the built kubectl-svctrace against the cluster: a real agent pod on the
// node, real TRACE rules, real packets. Each checks the JSON path of the traced packet and
// that nothing svctrace created is left afterwards.

// nodeName is the local cluster's first node: the one env.Exec runs on, the client pod's,
// the NodePort address the tests use. With several nodes a trace must be told where the
// packets enter, so the tests pass --node nodeName.
const nodeName = "svctrace-node"

// readyLine is what the plugin prints on stderr once every agent traces.
const readyLine = "Tracing "

// records splits the plugin's NDJSON stdout into packets and the other records' types.
func records(t testing.TB, stdout string) (packets []record.Packet, types []string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(line), &head); err != nil {
			t.Fatalf("stdout line is not a JSON record: %v\n%s", err, line)
		}
		types = append(types, head.Type)
		if head.Type != record.TypePacket {
			continue
		}
		var p record.Packet
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("bad packet record: %v\n%s", err, line)
		}
		packets = append(packets, p)
	}
	return packets, types
}

// onePacket decodes the result of a --count 1 -o json run.
func onePacket(t testing.TB, res Result) record.Packet {
	t.Helper()
	if res.ExitCode != 0 {
		t.Fatalf("trace failed:\n%s", res)
	}
	packets, types := records(t, res.Stdout)
	if len(packets) != 1 {
		t.Fatalf("got %d packets (records %v), want 1:\n%s", len(packets), types, res)
	}
	return packets[0]
}

// path is what a traced packet must show.
type path struct {
	service string   // record.Packet.Service
	chains  []string // nat chains the packet must cross, in this order
	// endpoints are the "ip:port" the packet may be DNATed to (none: no DNAT).
	endpoints  []string
	masquerade bool
	verdict    string
	// rejectIn is the table:chain whose rule rejects the packet.
	rejectIn string
}

func assertPath(t testing.TB, p record.Packet, want path) {
	t.Helper()
	dump, _ := json.MarshalIndent(p, "", "  ")
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format+"\npacket:\n%s", append(args, dump)...)
	}
	if p.Node != nodeName {
		fail("node = %q, want %q", p.Node, nodeName)
	}
	if p.Service != want.service {
		fail("service = %q, want %q", p.Service, want.service)
	}
	if p.Verdict != want.verdict {
		fail("verdict = %q, want %q", p.Verdict, want.verdict)
	}
	// The nat chains, in order.
	next := 0
	for _, h := range p.Hops {
		if next < len(want.chains) && h.Table == proxyNATTable() && h.Chain == want.chains[next] {
			next++
		}
	}
	if next < len(want.chains) {
		fail("the packet does not cross nat chain %s (after %v)", want.chains[next], want.chains[:next])
	}
	var dnat, masq []string
	for _, n := range p.NAT {
		switch n.Kind {
		case record.NATDNAT:
			dnat = append(dnat, n.To)
		case record.NATMasquerade, record.NATSNAT:
			masq = append(masq, n.Kind+" "+n.To)
		}
	}
	if len(want.endpoints) == 0 {
		if len(dnat) > 0 {
			fail("DNAT to %v, want none", dnat)
		}
	} else {
		if len(dnat) != 1 || !contains(want.endpoints, dnat[0]) {
			fail("DNAT to %v, want exactly one to one of the Service's endpoints %v", dnat, want.endpoints)
		}
		if !contains(want.endpoints, p.Endpoint) {
			fail("endpoint = %q, want one of %v", p.Endpoint, want.endpoints)
		}
		if !strings.HasPrefix(p.EndpointPod, "default/myapp-") {
			fail("endpoint_pod = %q, want the myapp pod that has %s", p.EndpointPod, p.Endpoint)
		}
	}
	if want.masquerade != (len(masq) > 0) {
		fail("source NAT %v, want masquerade=%v", masq, want.masquerade)
	}
	if want.rejectIn != "" {
		found := false
		for _, h := range p.Hops {
			if h.Table+":"+h.Chain == want.rejectIn && h.Verdict == record.VerdictReject {
				found = true
			}
		}
		if !found {
			fail("no REJECT hop in %s", want.rejectIn)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// myappEndpoints returns "podIP:port" for the ready myapp pods.
func myappEndpoints(t testing.TB, port int) []string {
	t.Helper()
	var eps []string
	for _, p := range env.ListPods(t, "app=myapp,release=canary") {
		if p.Ready() && p.Metadata.DeletionTimestamp == nil {
			eps = append(eps, p.Status.PodIP+":"+strconv.Itoa(port))
		}
	}
	if len(eps) == 0 {
		t.Fatal("no ready myapp pod: run hack/local-cluster.sh demo-apps")
	}
	sort.Strings(eps)
	return eps
}

// lbIP is the load-balancer IP the local cluster gave myapp-lb.
func lbIP(t testing.TB) string {
	t.Helper()
	svc := env.GetService(t, "myapp-lb")
	if len(svc.Status.LoadBalancer.Ingress) == 0 || svc.Status.LoadBalancer.Ingress[0].IP == "" {
		t.Fatal("myapp-lb has no load-balancer IP: run hack/local-cluster.sh lb")
	}
	return svc.Status.LoadBalancer.Ingress[0].IP
}

// traceWithTraffic starts a trace, waits until it is ready, runs send, and returns the
// plugin's result once it exits (--count 1).
func traceWithTraffic(t *testing.T, send func(t *testing.T), args ...string) Result {
	t.Helper()
	p := env.StartPlugin(t, args...)
	p.WaitForOutput(t, readyLine, 90*time.Second)
	send(t)
	return p.Wait(t, 60*time.Second)
}

func TestPluginTraces(t *testing.T) {
	env.RequireExec(t)
	myapp := env.GetService(t, "myapp").Spec.ClusterIP
	nodePortIP := "10.199.0.2"

	tests := []struct {
		name string
		args []string
		// send makes the traffic; nil when the agent probes.
		send func(t *testing.T)
		want func(t *testing.T) path
		// probe is the address --probe must connect to, and how the plugin
		// names it on stderr ("" for no check).
		probeDst, probeWhat string
	}{
		{
			name: "node to ClusterIP with --probe",
			args: []string{"svc/myapp", "--probe"},
			want: func(t *testing.T) path {
				return path{
					service:   "default/myapp",
					chains:    clusterIPChains("default/myapp", "tcp"),
					endpoints: myappEndpoints(t, 80), masquerade: true, verdict: record.VerdictAccept,
				}
			},
		},
		{
			name: "client pod to ClusterIP (real traffic)",
			args: []string{"svc/myapp"},
			send: func(t *testing.T) {
				res := env.TryKubectl(t, "exec", "-n", "default", "client", "--", "timeout", "10", "wget", "-q", "-O", "-", "http://"+myapp+"/svctrace-e2e")
				if res.ExitCode != 0 {
					t.Errorf("wget from the client pod failed:\n%s", res)
				}
			},
			want: func(t *testing.T) path {
				// A pod's own address is inside the cluster CIDR: no masquerade.
				return path{
					service:   "default/myapp",
					chains:    clusterIPChains("default/myapp", "tcp"),
					endpoints: myappEndpoints(t, 80), masquerade: false, verdict: record.VerdictAccept,
				}
			},
		},
		{
			name: "outside to NodePort, named port",
			args: []string{"svc/myapp-nodeport", "--port", "http"},
			send: func(t *testing.T) {
				_, code, res := curl(t, env.External, "http://"+nodePortIP+":30080/svctrace-e2e")
				if code != 200 {
					t.Errorf("want HTTP 200 from the NodePort:\n%s", res)
				}
			},
			want: func(t *testing.T) path {
				return path{
					service:   "default/myapp-nodeport:http",
					chains:    nodePortChains("default/myapp-nodeport:http", "tcp"),
					endpoints: myappEndpoints(t, 80), masquerade: true, verdict: record.VerdictAccept,
				}
			},
		},
		{
			name: "node to its own NodePort with --probe nodeport",
			args: []string{"svc/myapp-nodeport", "--probe", "nodeport"},
			want: func(t *testing.T) path {
				return path{
					service:   "default/myapp-nodeport:http",
					chains:    nodePortChains("default/myapp-nodeport:http", "tcp"),
					endpoints: myappEndpoints(t, 80), masquerade: true, verdict: record.VerdictAccept,
				}
			},
			probeDst: nodePortIP + ":30080", probeWhat: "the NodePort on node " + nodeName,
		},
		{
			name: "node to the load-balancer IP with --probe lb",
			args: []string{"svc/myapp-lb", "--probe=lb"},
			want: func(t *testing.T) path {
				return path{
					service:   "default/myapp-lb:http",
					chains:    loadBalancerChains("default/myapp-lb:http", "tcp"),
					endpoints: myappEndpoints(t, 80), masquerade: true, verdict: record.VerdictAccept,
				}
			},
			probeDst: lbIP(t) + ":80", probeWhat: "the load-balancer IP",
		},
		{
			name: "Service without endpoints is rejected",
			args: []string{"svc/noendpoints", "--probe"},
			want: func(t *testing.T) path {
				return path{service: "default/noendpoints", verdict: record.VerdictReject, rejectIn: noEndpointsRejectIn()}
			},
		},
		{
			name: "UDP Service with --probe",
			args: []string{"svc/myapp-udp", "--probe"},
			want: func(t *testing.T) path {
				return path{
					service:   "default/myapp-udp",
					chains:    clusterIPChains("default/myapp-udp", "udp"),
					endpoints: myappEndpoints(t, 5353), masquerade: true, verdict: record.VerdictAccept,
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{}, tc.args...), "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json")
			var res Result
			if tc.send == nil {
				res = env.Plugin(t, args...)
			} else {
				res = traceWithTraffic(t, tc.send, args...)
			}
			p := onePacket(t, res)
			assertPath(t, p, tc.want(t))
			if tc.probeDst != "" {
				if p.Dst != tc.probeDst {
					t.Errorf("probe went to %s, want %s", p.Dst, tc.probeDst)
				}
				if want := fmt.Sprintf("Probe: TCP connection to %s (%s), from the node itself", tc.probeDst, tc.probeWhat); !strings.Contains(res.Stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, res)
				}
			}
			if !strings.Contains(res.Stderr, "Stopped (--count 1 reached)") {
				t.Errorf("stderr does not say why it stopped:\n%s", res)
			}
			if strings.Contains(res.Stderr, "Warning:") {
				t.Errorf("unexpected warning:\n%s", res)
			}
			env.AssertNoLeftovers(t)
		})
	}
}

func TestPluginTextOutput(t *testing.T) {
	env.RequireExec(t)
	res := env.Plugin(t, "svc/myapp", "--probe", "--node", nodeName, "--count", "1", "--timeout", "60s")
	if res.ExitCode != 0 {
		t.Fatalf("trace failed:\n%s", res)
	}
	for _, want := range []string{
		"Service default/myapp -> endpoint ", svcChain("default/myapp", "tcp"), "DNAT", "MASQUERADE", "ACCEPT", "Summary: 1 packet,",
	} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, res)
		}
	}
	env.AssertNoLeftovers(t)
}

func TestPluginErrors(t *testing.T) {
	env.RequireExec(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{
			name: "unknown service",
			args: []string{"svc/nope"},
			want: "error: service \"nope\" not found in namespace \"default\": list Services with `kubectl get svc -n default`",
		},
		{
			name: "unknown namespace",
			args: []string{"svc/myapp", "-n", "nowhere"},
			want: "error: namespace \"nowhere\" not found: list namespaces with `kubectl get namespaces` and pass one with -n",
		},
		{
			name: "bad --port",
			args: []string{"svc/myapp-nodeport", "--port", "grpc"},
			want: `error: service default/myapp-nodeport has no port "grpc": use --port with one of http(80/TCP)`,
		},
		{
			name: "not a Service",
			args: []string{"deploy/myapp"},
			want: `error: "deploy/myapp" is not a Service`,
		},
		{
			name: "NotReady or unknown node",
			args: []string{"svc/myapp", "--node", "no-such-node"},
			want: "error: node \"no-such-node\" not found: list nodes with `kubectl get nodes`",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := env.Plugin(t, tc.args...)
			if res.ExitCode != 1 {
				t.Errorf("exit code %d, want 1:\n%s", res.ExitCode, res)
			}
			if !strings.Contains(res.Stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, res)
			}
			if res.Stdout != "" {
				t.Errorf("stdout should be empty on errors:\n%s", res)
			}
		})
	}
	env.AssertNoLeftovers(t)
}

// TestClientKilled kills the plugin with SIGKILL mid-trace: the agent must notice on its
// stdin, remove its rules and exit long before its activeDeadlineSeconds; then cleanup
// deletes the pod left behind.
func TestClientKilled(t *testing.T) {
	env.RequireExec(t)
	// One node: the pod count below is this node's (TestCrossNodeClientKilled has both).
	p := env.StartPlugin(t, "svc/myapp", "--node", nodeName, "--no-follow", "--timeout", "10m")
	env.CleanUpAfterKill(t, p)
	p.WaitForOutput(t, readyLine, 90*time.Second)
	if !hasSvctraceRules(t) {
		t.Fatal("no svctrace TRACE rule while the agent traces")
	}
	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	Eventually(t, 60*time.Second, "the agent pod to end after its client died", func() error {
		pods := env.ListPods(t, ManagedByLabel)
		if len(pods) != 1 {
			return fmt.Errorf("%d svctrace pods, want the 1 left behind", len(pods))
		}
		if phase := pods[0].Status.Phase; phase != "Succeeded" && phase != "Failed" {
			return fmt.Errorf("agent pod is %s", phase)
		}
		return nil
	})
	t.Logf("agent pod ended %.1fs after its client was killed (kubelet status updates add up to ~1s)", time.Since(killed).Seconds())
	if hasSvctraceRules(t) {
		t.Error("svctrace rules remain after the agent ended")
	}

	res := env.Plugin(t, "cleanup")
	if res.ExitCode != 0 {
		t.Fatalf("cleanup failed:\n%s", res)
	}
	for _, want := range []string{"Deleted 1 svctrace pod(s)", "node " + nodeName + ": removed 0 svctrace rule(s)"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("cleanup output lacks %q:\n%s", want, res)
		}
	}
	env.AssertNoLeftovers(t)
}

// hasSvctraceRules reports whether any ruleset of the node mentions svctrace.
func hasSvctraceRules(t testing.TB) bool {
	t.Helper()
	for _, dump := range ruleDumps {
		res := env.InCluster(t, dump...)
		if strings.Contains(strings.ToLower(res.Stdout), "svctrace") {
			return true
		}
	}
	return false
}

func TestVersionCommand(t *testing.T) {
	res := Run(t, nil, env.Bin, "version", "-o", "json")
	if res.ExitCode != 0 {
		t.Fatalf("version failed:\n%s", res)
	}
	var v struct {
		Version string `json:"version"`
		Image   string `json:"image"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil || v.Version == "" || v.Image == "" {
		t.Errorf("version -o json = %q (%v), want version and image", res.Stdout, err)
	}
}

// TestCompletion checks shell completion through kubectl's helper protocol.
func TestCompletion(t *testing.T) {
	env.RequireExec(t)
	var nodes []string
	for _, n := range env.Nodes(t) {
		nodes = append(nodes, n.Name)
	}
	tests := []struct {
		args []string
		want []string
	}{
		{args: []string{"__complete", "svc/myapp"}, want: []string{"svc/myapp", "svc/myapp-nodeport", "svc/myapp-udp"}},
		{args: []string{"__complete", "svc/myapp-nodeport", "--port", ""}, want: []string{"http\t80/TCP"}},
		{args: []string{"__complete", "svc/myapp", "--node", ""}, want: nodes},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			res := env.Plugin(t, tc.args...)
			for _, w := range tc.want {
				if !strings.Contains(res.Stdout, w+"\n") {
					t.Errorf("completion lacks %q:\n%s", w, res)
				}
			}
		})
	}
}

// Measurements (logged, never asserted).

var readyInRE = regexp.MustCompile(`ready in ([0-9.]+)s`)

// TestMeasureStartup compares the time from starting `kubectl svctrace` to its agent being
// ready with the time `kubectl debug node/...` takes to get a pod of the same image running
// and attached, on the same cluster, alternating runs.
func TestMeasureStartup(t *testing.T) {
	env.RequireExec(t)
	image := strings.TrimSpace(strings.SplitN(strings.SplitN(Run(t, nil, env.Bin, "version").Stdout, "agent image: ", 2)[1], "\n", 2)[0])
	const runs = 3
	var svctrace, answer, exit, debug []float64
	for i := 0; i < runs; i++ {
		start := time.Now()
		p := env.StartPlugin(t, "svc/myapp", "--probe", "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json")
		res := p.Wait(t, 90*time.Second)
		if res.ExitCode != 0 {
			t.Fatalf("trace failed:\n%s", res)
		}
		ready, ok1 := p.OutputAt(readyLine)
		answered, ok2 := p.OutputAt(`{"type":"packet"`)
		if !ok1 || !ok2 {
			t.Fatalf("no ready line or no packet:\n%s", res)
		}
		svctrace = append(svctrace, ready.Sub(start).Seconds())
		answer = append(answer, answered.Sub(ready).Seconds())
		exit = append(exit, p.ExitedAt().Sub(answered).Seconds())
		if m := readyInRE.FindStringSubmatch(res.Stderr); m != nil {
			t.Logf("svctrace run %d: ready line after %.2fs (the plugin's own clock: %ss), the packet %.3fs later, exit %.3fs after it", i+1, svctrace[i], m[1], answer[i], exit[i])
		}

		start = time.Now()
		out := env.InCluster(t, env.KubectlBin, "debug", "node/"+nodeName, "--image="+image,
			"--image-pull-policy=IfNotPresent", "--attach=true", "--", "/kubectl-svctrace", "version")
		debug = append(debug, time.Since(start).Seconds())
		if out.ExitCode != 0 {
			t.Fatalf("kubectl debug failed:\n%s", out)
		}
		t.Logf("kubectl debug run %d: pod running and attached after %.2fs", i+1, debug[i])
		if m := regexp.MustCompile(`pod (node-debugger-\S+) `).FindStringSubmatch(out.Stdout); m != nil {
			env.Kubectl(t, "delete", "pod", "-n", "default", m[1], "--wait=true")
		}
	}
	s, d := median(svctrace), median(debug)
	t.Logf("MEASURE startup: kubectl svctrace start->ready median %.2fs %v; kubectl debug node start->running median %.2fs %v; ratio %.2f",
		s, svctrace, d, debug, s/d)
	t.Logf("MEASURE answer: --probe --count 1: ready->packet median %.3fs %v, packet->exit median %.3fs %v; start->exit median %.2fs, %.2f x kubectl debug node's start->running",
		median(answer), answer, median(exit), exit, s+median(answer)+median(exit), (s+median(answer)+median(exit))/d)
	env.AssertNoLeftovers(t)
}

// TestMeasureLatency sends 40 connections (2 per second) through svc/myapp while a trace
// runs, and measures for each packet the time from the agent's timestamp of its first hop to
// its line reaching this process (the plugin's stdout).
func TestMeasureLatency(t *testing.T) {
	env.RequireExec(t)
	const n = 40
	myapp := env.GetService(t, "myapp").Spec.ClusterIP
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	argv := append(append([]string{}, env.Exec...), env.Bin, "svc/myapp", "--node", nodeName, "--count", strconv.Itoa(n), "--timeout", "120s", "-o", "json")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), readyLine) {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(90 * time.Second):
		t.Fatal("the trace did not become ready")
	}
	go func() {
		// Outside the plugin's process: one connection every 500 ms from the node.
		script := fmt.Sprintf("for i in $(seq %d); do curl -s -m 2 -o /dev/null http://%s/; sleep 0.5; done", n, myapp)
		Run(t, env.Exec, "sh", "-c", script)
	}()
	var lat []float64
	var slowest string // the slowest packet's path, to tell what it waited for
	slowestMs := 0.0
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		arrived := time.Now()
		var p record.Packet
		if json.Unmarshal(sc.Bytes(), &p) != nil || p.Type != record.TypePacket || p.Time == "" {
			continue
		}
		first, err := time.Parse(time.RFC3339Nano, p.Time)
		if err != nil {
			t.Fatalf("packet time %q: %v", p.Time, err)
		}
		ms := arrived.Sub(first).Seconds() * 1000
		lat = append(lat, ms)
		if ms > slowestMs {
			slowestMs = ms
			var hops []string
			for _, h := range p.Hops {
				hops = append(hops, h.Node+":"+h.Table+":"+h.Chain+":"+h.Kind+" "+h.Verdict)
			}
			slowest = fmt.Sprintf("%s %s -> %s, %s: %s", p.Verdict, p.Src, p.Dst, p.Flags, strings.Join(hops, " | "))
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("trace failed: %v", err)
	}
	if len(lat) == 0 {
		t.Fatal("no packet with a time")
	}
	sort.Float64s(lat)
	t.Logf("MEASURE latency first hop -> stdout line over %d packets: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		len(lat), percentile(lat, 50), percentile(lat, 99), lat[len(lat)-1])
	t.Logf("MEASURE latency: the slowest packet (%.1f ms): %s", slowestMs, slowest)
	env.AssertNoLeftovers(t)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	i := int(float64(len(sorted))*p/100+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

// TestInterrupt stops a running trace with SIGINT, as Ctrl-C does: exit 0, everything removed.
func TestInterrupt(t *testing.T) {
	env.RequireExec(t)
	p := env.StartPlugin(t, "svc/myapp", "--node", nodeName, "--timeout", "5m")
	p.WaitForOutput(t, readyLine, 90*time.Second)
	p.Stop()
	res := p.Wait(t, 60*time.Second)
	// Result reports a stopped process as failed; its own exit status is what counts here.
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after Ctrl-C, want 0:\n%s", code, res)
	}
	if !strings.Contains(res.Stderr, "Stopped (interrupted)") {
		t.Errorf("stderr does not say it was interrupted:\n%s", res)
	}
	env.AssertNoLeftovers(t)
}

// TestExitCleanup: a trace returns once every agent confirmed its TRACE rules removed and
// the API server accepted the pods' deletion, so when it returns no svctrace rule is left on
// any node, while the pods may still be terminating; with --wait they are gone too. Each
// end (--count, --wait, the agents' own --timeout) leaves stderr free of client-go's log
// lines about the streams it closed.
func TestExitCleanup(t *testing.T) {
	env.RequireExec(t)
	klogLine := regexp.MustCompile(`(?m)^[EWI]\d{4} \d\d:\d\d:\d\d`)
	for _, tc := range []struct {
		name string
		args []string
		wait bool
	}{
		{name: "count", args: []string{"--probe", "--count", "1"}},
		{name: "count+wait", args: []string{"--probe", "--count", "1", "--wait"}, wait: true},
		{name: "timeout", args: []string{"--probe", "--timeout", "3s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := env.Plugin(t, append([]string{"svc/myapp", "-o", "json"}, tc.args...)...)
			if res.ExitCode != 0 {
				t.Fatalf("trace failed:\n%s", res)
			}
			if l := klogLine.FindString(res.Stderr); l != "" {
				t.Errorf("client-go log line on stderr:\n%s", res)
			}
			if err := env.LeftoverRules(t); err != nil {
				t.Errorf("svctrace rules on the nodes when the command returned:\n%v", err)
			}
			if err := env.LeftoverPods(t); tc.wait && err != nil {
				t.Errorf("--wait: svctrace pods when the command returned: %v", err)
			}
			env.AssertNoLeftovers(t)
		})
	}
}

// TestClusterRefusals checks the errors that say the fix when the cluster refuses the agent.
func TestClusterRefusals(t *testing.T) {
	env.RequireExec(t)
	// A fresh name: an earlier run's namespace may still be terminating.
	ns := fmt.Sprintf("svctrace-e2e-baseline-%d", time.Now().UnixNano()%1e6)
	env.Kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() {
		// t.Context() is canceled once cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		RunContext(ctx, t, env.Exec, env.KubectlBin, "delete", "namespace", ns, "--wait=false")
	})
	env.Kubectl(t, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=baseline")

	tests := []struct {
		name string
		args []string
		want []string
	}{
		{
			name: "Pod Security admission rejects the privileged pod",
			args: []string{"svc/myapp", "--node", nodeName, "--agent-namespace", ns},
			want: []string{
				`namespace "` + ns + `" does not allow the agent's privileged pod (Pod Security admission)`,
				"--agent-namespace", "kubectl label namespace " + ns + " pod-security.kubernetes.io/enforce=privileged",
			},
		},
		{
			name: "RBAC forbids reading the Service",
			args: []string{"svc/myapp", "--as", "svctrace-e2e-nobody"},
			want: []string{`not allowed to get services in namespace "default": ask your cluster admin for RBAC permission to "get" "services"`},
		},
		{
			// localhost:1 refuses at once, on the node's loopback: no traffic leaves the cluster.
			name: "an image that cannot be pulled",
			args: []string{"svc/myapp", "--node", nodeName, "--image", "localhost:1/svctrace-agent:missing", "--pod-running-timeout", "90s"},
			want: []string{`cannot get its image "localhost:1/svctrace-agent:missing"`, "or pass another one with --image"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := env.Plugin(t, tc.args...)
			if res.ExitCode != 1 {
				t.Errorf("exit code %d, want 1:\n%s", res.ExitCode, res)
			}
			for _, w := range tc.want {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, res)
				}
			}
			env.AssertNoLeftovers(t)
		})
	}
}

// minimalRole is the README's minimal ClusterRole for kubectl svctrace users: each rule is
// something the plugin calls.
const minimalRole = `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: svctrace-e2e-user
rules:
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods/attach"]
  verbs: ["create", "get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: svctrace-e2e-user
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: svctrace-e2e-user
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: svctrace-e2e-user
`

// TestMinimalRBAC runs a trace and a cleanup as a user holding only the README's ClusterRole.
func TestMinimalRBAC(t *testing.T) {
	env.RequireExec(t)
	file := t.TempDir() + "/rbac.yaml"
	if err := os.WriteFile(file, []byte(minimalRole), 0o644); err != nil {
		t.Fatal(err)
	}
	env.Kubectl(t, "apply", "-f", file)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		RunContext(ctx, t, env.Exec, env.KubectlBin, "delete", "-f", file, "--ignore-not-found")
	})
	as := []string{"--as", "svctrace-e2e-user"}
	res := env.Plugin(t, append([]string{"svc/myapp", "--probe", "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json"}, as...)...)
	if strings.Contains(res.Stderr, "Warning:") {
		t.Errorf("the minimal role is not enough for a warning-free trace:\n%s", res)
	}
	assertPath(t, onePacket(t, res), path{
		service:   "default/myapp",
		chains:    clusterIPChains("default/myapp", "tcp"),
		endpoints: myappEndpoints(t, 80), masquerade: true, verdict: record.VerdictAccept,
	})
	res = env.Plugin(t, append([]string{"cleanup"}, as...)...)
	if res.ExitCode != 0 || strings.Contains(res.Stderr, "Not allowed") {
		t.Errorf("cleanup as the minimal user:\n%s", res)
	}
	env.AssertNoLeftovers(t)
}
