package kube

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// script is what a fake agent writes on its output.
type script struct {
	before []string // written at once
	// waitStdin: then wait until the client closes stdin (--stdin-watch).
	waitStdin bool
	// gate: then wait until it is closed.
	gate  chan struct{}
	after []string // written after stdin closed
	// silent: it never answers the first line on its stdin (an agent the
	// attach does not reach).
	silent bool
	// answerAfter: it answers only once this is closed, beside its other
	// output (else first of all).
	answerAfter chan struct{}
}

// fakeIO plays the agents' side of the pod streams.
type fakeIO struct {
	scripts   map[string]script // by pod name
	attachErr error             // HoldStdin fails with it
	mu        sync.Mutex
	closed    map[string]chan struct{}
	hello     map[string]chan struct{} // closed once the pod's stdin got its first line
	// onLine, when set, is called with each line the client writes to a
	// pod's stdin.
	onLine func(pod, line string)
}

func newFakeIO(scripts map[string]script) *fakeIO {
	return &fakeIO{scripts: scripts, closed: map[string]chan struct{}{}, hello: map[string]chan struct{}{}}
}

// helloRead is closed once the pod's stdin got its first line.
func (f *fakeIO) helloRead(pod string) chan struct{} { return f.chanOf(f.hello, pod) }

func (f *fakeIO) stdinClosed(pod string) chan struct{} { return f.chanOf(f.closed, pod) }

// chanOf returns the pod's channel of m, made on first use.
func (f *fakeIO) chanOf(m map[string]chan struct{}, pod string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := m[pod]
	if !ok {
		c = make(chan struct{})
		m[pod] = c
	}
	return c
}

// wasClosed reports whether the client closed the pod's stdin.
func (f *fakeIO) wasClosed(pod string) bool {
	select {
	case <-f.stdinClosed(pod):
		return true
	default:
		return false
	}
}

func (f *fakeIO) Output(ctx context.Context, ns, pod string) (io.ReadCloser, error) {
	s, ok := f.scripts[pod]
	if !ok {
		return nil, fmt.Errorf("no script for pod %s", pod)
	}
	pr, pw := io.Pipe()
	go func() {
		write := func(lines []string) bool {
			for _, l := range lines {
				if _, err := io.WriteString(pw, l+"\n"); err != nil {
					return false
				}
			}
			return true
		}
		answer := func() bool {
			select {
			case <-f.helloRead(pod):
				return write([]string{jsonLine(record.Attached{Type: record.TypeAttached})})
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return false
			}
		}
		switch {
		case s.silent || f.attachErr != nil:
		case s.answerAfter != nil:
			go func() {
				select {
				case <-s.answerAfter:
					answer()
				case <-ctx.Done():
				}
			}()
		case !answer():
			return
		}
		if !write(s.before) {
			return
		}
		if s.gate != nil {
			select {
			case <-s.gate:
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
		if s.waitStdin {
			select {
			case <-f.stdinClosed(pod):
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
		write(s.after)
		pw.Close()
	}()
	return pr, nil
}

func (f *fakeIO) HoldStdin(ctx context.Context, ns, pod string, stdin io.Reader) error {
	if f.attachErr != nil {
		return f.attachErr
	}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdin)
		first := true
		for sc.Scan() {
			if first {
				first = false
				close(f.helloRead(pod))
			}
			if f.onLine != nil {
				f.onLine(pod, sc.Text())
			}
		}
		close(f.stdinClosed(pod))
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fakeSink collects what the tracer renders.
type fakeSink struct {
	packets   []record.Packet
	lost      []record.Lost
	warnings  []record.Warning
	summaries []record.Summary
}

func (s *fakeSink) Packet(p *record.Packet) error   { s.packets = append(s.packets, *p); return nil }
func (s *fakeSink) Lost(l *record.Lost) error       { s.lost = append(s.lost, *l); return nil }
func (s *fakeSink) Warning(w *record.Warning) error { s.warnings = append(s.warnings, *w); return nil }
func (s *fakeSink) Summary(r *record.Summary) error {
	s.summaries = append(s.summaries, *r)
	return nil
}

// fakeSummarizer records what the tracer tells it.
type fakeSummarizer struct {
	endpoints map[string][]string
	packets   int
	lost      uint64
}

func (f *fakeSummarizer) SetEndpoints(svc string, eps []string, _ map[string]string) {
	f.endpoints[svc] = eps
}
func (f *fakeSummarizer) Add(*record.Packet) { f.packets++ }
func (f *fakeSummarizer) AddLost(n uint64)   { f.lost += n }
func (f *fakeSummarizer) Summary() record.Summary {
	return record.Summary{Type: record.TypeSummary, Packets: f.packets, Lost: f.lost}
}

// syncBuffer is a stderr that tests can watch while the tracer writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// notify is closed once the output contains when.
	when   string
	notify chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.notify != nil && strings.Contains(b.buf.String(), b.when) {
		close(b.notify)
		b.notify = nil
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gateWhen remembers what each stderrSaid gate waits for.
var gateWhen = map[chan struct{}]string{}

// stderrSaid returns a gate that opens once the tracer's stderr contains s.
func stderrSaid(s string) chan struct{} {
	c := make(chan struct{})
	gateWhen[c] = s
	return c
}

func jsonLine(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func readyLine(node, ver string) string {
	return jsonLine(record.Ready{Type: record.TypeReady, Node: node, Session: "test1", Version: ver, Backend: "nft", Mode: "iptables", Source: "nftrace"})
}

func packetLine(src string) string {
	return jsonLine(record.Packet{Type: record.TypePacket, Family: "ipv4", Proto: "tcp", Src: src, Dst: "10.96.173.227:80",
		Endpoint: "10.244.0.24:80", Verdict: record.VerdictAccept, VerdictHop: -1,
		Hops: []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2}}})
}

func byeLine(reason, errMsg string) string {
	return jsonLine(record.Bye{Type: record.TypeBye, Session: "test1", Reason: reason, RulesRemoved: 2, Error: errMsg})
}

// setup fixes the session id and shortens the tracer's waits.
func setup(t *testing.T) {
	t.Helper()
	oldID, oldPoll, oldStop, oldFinish, oldHold := newSessionID, pollInterval, stopGrace, finishGrace, holdWait
	newSessionID = func() string { return "test1" }
	pollInterval, stopGrace, finishGrace, holdWait = 2*time.Millisecond, 3*time.Second, 3*time.Second, 300*time.Millisecond
	t.Cleanup(func() {
		newSessionID, pollInterval, stopGrace, finishGrace, holdWait = oldID, oldPoll, oldStop, oldFinish, oldHold
	})
	stampVersion(t, "v0.1.0", "svctrace-agent:v0.1.0")
}

// kubelet makes the fake API server report created pods with status(pod).
func kubelet(client *fake.Clientset, status func(*corev1.Pod) corev1.PodStatus) {
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		pod.Status = status(pod)
		return false, nil, nil
	})
}

func running(*corev1.Pod) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
		Name: AgentContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
	}}}
}

func waiting(reason, msg string) func(*corev1.Pod) corev1.PodStatus {
	return func(p *corev1.Pod) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: AgentContainer, Image: p.Spec.Containers[0].Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}},
		}}}
	}
}

func myappTarget() *Target {
	return &Target{
		Namespace: "default", Name: "myapp", Proto: "tcp",
		Dst:      []string{"10.96.173.227:80"},
		Services: []string{"default/myapp/tcp"},
		PodByIP:  myappPods,
		ServiceByAddr: map[string]string{
			"10.96.173.227:80": "default/myapp",
		},
		EndpointsByService: map[string][]string{"default/myapp": {"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"}},
	}
}

func traceConfig(nodes ...string) TraceConfig {
	return TraceConfig{
		Target: myappTarget(), Nodes: nodes, Namespace: "default", Image: "svctrace-agent:v0.1.0",
		Agent:        AgentOptions{Duration: 5 * time.Second},
		StartTimeout: 5 * time.Second,
	}
}

// remainingPods lists the svctrace pods left in the fake cluster.
func remainingPods(t *testing.T, client *fake.Clientset) []string {
	t.Helper()
	list, err := client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{LabelSelector: ManagedSelector})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names
}

func TestTracerRun(t *testing.T) {
	const pod1, pod2 = "svctrace-test1-n1", "svctrace-test1-n2"
	tests := []struct {
		name      string
		nodes     []string
		scripts   map[string]script
		status    func(*corev1.Pod) corev1.PodStatus
		mutate    func(*TraceConfig)
		attachErr error
		client    string // a stamp on the plugin version, "" = v0.1.0
		// want
		wantPackets []record.Packet
		wantLost    []record.Lost
		wantWarn    []record.Warning
		wantErr     string   // substring, "" = success
		wantStderr  []string // substrings
		notStderr   []string // substrings stderr must not have
		wantClosed  []string // pods whose stdin the client closed
	}{
		{
			name:  "agent traces until its duration ends",
			nodes: []string{"n1"},
			scripts: map[string]script{pod1: {before: []string{
				"svctrace agent: starting", readyLine("n1", "v0.1.0"), packetLine("10.199.0.2:40000"),
				jsonLine(record.Lost{Type: record.TypeLost, Count: 3, Where: "kmsg"}),
				jsonLine(record.Warning{Type: record.TypeWarning, Message: "kube-proxy rewrote its rules"}),
				packetLine("10.199.0.2:40001"), byeLine("duration", ""),
			}}},
			wantPackets: []record.Packet{
				{Type: "packet", Node: "n1", Family: "ipv4", Proto: "tcp", Src: "10.199.0.2:40000", Dst: "10.96.173.227:80",
					Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
					Nodes: []string{"n1"},
					Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n1"}}},
				{Type: "packet", Node: "n1", Family: "ipv4", Proto: "tcp", Src: "10.199.0.2:40001", Dst: "10.96.173.227:80",
					Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
					Nodes: []string{"n1"},
					Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n1"}}},
			},
			wantLost: []record.Lost{{Type: "lost", Node: "n1", Count: 3, Where: "kmsg"}},
			wantWarn: []record.Warning{{Type: "warning", Node: "n1", Message: "kube-proxy rewrote its rules"}},
			wantStderr: []string{
				"Tracing default/myapp 10.96.173.227:80/TCP on n1 (nft, kube-proxy iptables, nftrace)",
				"Stopped (the agents finished) after 2 packet(s)",
			},
		},
		{
			name:  "--count stops the agent through its stdin",
			nodes: []string{"n1"},
			mutate: func(c *TraceConfig) {
				c.Count = 1
				c.Agent.MaxPackets = 1
			},
			// The second packet arrives after --count was reached: dropped,
			// but counted as arrived (its bye says 2 were written: no loss).
			scripts: map[string]script{pod1: {
				before:    []string{readyLine("n1", "v0.1.0"), packetLine("10.199.0.2:40000"), packetLine("10.199.0.2:40001")},
				waitStdin: true,
				after:     []string{jsonLine(record.Bye{Type: record.TypeBye, Session: "test1", Reason: "stdin", Packets: 2})},
			}},
			wantPackets: []record.Packet{{Type: "packet", Node: "n1", Family: "ipv4", Proto: "tcp", Src: "10.199.0.2:40000", Dst: "10.96.173.227:80",
				Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
				Nodes: []string{"n1"},
				Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n1"}}}},
			wantStderr: []string{"Stopped (--count 1 reached) after 1 packet(s)"},
			notStderr:  []string{"reached svctrace"},
			wantClosed: []string{pod1},
		},
		{
			name:  "a packet record the output stream garbled is reported, not a silent 0 packets",
			nodes: []string{"n1"},
			scripts: map[string]script{pod1: {before: []string{
				readyLine("n1", "v0.1.0"), `{"type":"packet","src":"10.199.0.2:4`,
				jsonLine(record.Bye{Type: record.TypeBye, Session: "test1", Reason: "count", Packets: 1}),
			}}},
			wantStderr: []string{
				"agent on node n1: garbled agent record: unexpected end of JSON input",
				"the agent on node n1 wrote 1 packet record(s) but 0 reached svctrace: its output stream (pods/log) lost lines; its last output: garbled agent record",
				"Stopped (the agents finished) after 0 packet(s)",
			},
		},
		{
			name:       "--agent-log prints the agents' log lines with their node",
			nodes:      []string{"n1"},
			mutate:     func(c *TraceConfig) { c.AgentLog = true },
			scripts:    map[string]script{pod1: {before: []string{"svctrace agent: indexed 38 nft rules in 91ms", readyLine("n1", "v0.1.0"), byeLine("duration", "")}}},
			wantStderr: []string{"[n1] svctrace agent: indexed 38 nft rules in 91ms"},
		},
		{
			name:    "an agent whose stdin closed before it was told to stop says so",
			nodes:   []string{"n1"},
			scripts: map[string]script{pod1: {before: []string{readyLine("n1", "v0.1.0"), byeLine("stdin", "")}}},
			wantStderr: []string{
				"the agent on node n1 stopped early: its stdin (the pods/attach stream svctrace holds) closed before svctrace asked it to stop",
			},
		},
		{
			name:  "packets from every node are merged and labelled",
			nodes: []string{"n1", "n2"},
			scripts: map[string]script{
				pod1: {before: []string{readyLine("", "v0.1.0"), packetLine("10.244.1.5:1000"), byeLine("duration", "")}},
				pod2: {before: []string{readyLine("", "v0.1.0"), packetLine("10.244.2.5:2000"), byeLine("duration", "")}},
			},
			wantPackets: []record.Packet{
				{Type: "packet", Node: "n1", Family: "ipv4", Proto: "tcp", Src: "10.244.1.5:1000", Dst: "10.96.173.227:80",
					Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
					Nodes: []string{"n1"},
					Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n1"}}},
				{Type: "packet", Node: "n2", Family: "ipv4", Proto: "tcp", Src: "10.244.2.5:2000", Dst: "10.96.173.227:80",
					Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
					Nodes: []string{"n2"},
					Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n2"}}},
			},
			wantStderr: []string{"on n1 (nft, kube-proxy iptables, nftrace), n2 (nft, kube-proxy iptables, nftrace)"},
		},
		{
			name:  "--count across nodes stops every agent",
			nodes: []string{"n1", "n2"},
			scripts: map[string]script{
				pod1: {before: []string{readyLine("", "v0.1.0")}, waitStdin: true, after: []string{byeLine("stdin", "")}},
				pod2: {before: []string{readyLine("", "v0.1.0"), packetLine("10.244.2.5:2000")}, waitStdin: true, after: []string{byeLine("stdin", "")}},
			},
			mutate: func(c *TraceConfig) { c.Count = 1 },
			wantPackets: []record.Packet{{Type: "packet", Node: "n2", Family: "ipv4", Proto: "tcp", Src: "10.244.2.5:2000", Dst: "10.96.173.227:80",
				Service: "default/myapp", Endpoint: "10.244.0.24:80", EndpointPod: "default/myapp-b", Verdict: "ACCEPT", VerdictHop: -1,
				Nodes: []string{"n2"},
				Hops:  []record.Hop{{Table: "nat", Chain: "KUBE-SVC-XJWXQFJLXSXKRMSG", Kind: "rule", Rule: 2, Node: "n2"}}}},
			wantStderr: []string{"Stopped (--count 1 reached) after 1 packet(s)"},
			wantClosed: []string{pod1, pod2},
		},
		{
			name:  "an agent error in its bye record fails the command",
			nodes: []string{"n1"},
			scripts: map[string]script{pod1: {before: []string{
				byeLine("error", "kube-proxy runs in ipvs mode, which TRACE cannot follow: svctrace supports the iptables and nftables modes"),
			}}},
			wantErr: "agent on node n1: kube-proxy runs in ipvs mode, which TRACE cannot follow",
		},
		{
			name:  "an agent that dies without a bye is explained with its last output",
			nodes: []string{"n1"},
			scripts: map[string]script{pod1: {before: []string{
				readyLine("n1", "v0.1.0"), "panic: runtime error: index out of range",
			}}},
			wantErr: "the agent's output on node n1 ended before it finished its session; its last output: panic: runtime error: index out of range",
		},
		{
			name:   "an agent of another major version is refused",
			nodes:  []string{"n1"},
			client: "v1.0.0",
			scripts: map[string]script{pod1: {
				before: []string{readyLine("n1", "v0.9.0")}, waitStdin: true, after: []string{byeLine("stdin", "")},
			}},
			wantErr:    "the agent image svctrace-agent:v0.1.0 runs svctrace v0.9.0 but this plugin is v1.0.0",
			wantClosed: []string{pod1},
		},
		{
			name:  "a minor version difference only warns",
			nodes: []string{"n1"},
			scripts: map[string]script{pod1: {
				before: []string{readyLine("n1", "v0.2.0"), byeLine("duration", "")},
			}},
			wantStderr: []string{"Warning: the agent image svctrace-agent:v0.1.0 runs svctrace v0.2.0 but this plugin is v0.1.0"},
		},
		{
			name:      "a failed attach warns that a killed client leaves the agent running",
			nodes:     []string{"n1"},
			attachErr: errors.New(`pods "svctrace-test1-n1" is forbidden: cannot create resource "pods/attach"`),
			scripts: map[string]script{pod1: {
				// The agent goes on until the warning is out.
				before: []string{readyLine("n1", "v0.1.0")}, gate: stderrSaid("Warning: could not attach"),
				after: []string{byeLine("duration", "")},
			}},
			wantStderr: []string{`Warning: could not attach to the agent on node n1 (pods "svctrace-test1-n1" is forbidden: cannot create resource "pods/attach"): if this command is killed, the agent stops only at the pod's deadline (1m10s); grant create on pods/attach`},
		},
		{
			name:    "an image that cannot be pulled says --image",
			nodes:   []string{"n1"},
			status:  waiting("ImagePullBackOff", `Back-off pulling image "svctrace-agent:v0.1.0"`),
			wantErr: `agent pod default/svctrace-test1-n1 on node n1 cannot get its image "svctrace-agent:v0.1.0" (ImagePullBackOff: Back-off pulling image "svctrace-agent:v0.1.0"): make the image available to the node (push it to a registry the node can pull from, or load it into the node's container runtime) or pass another one with --image`,
		},
		{
			name:    "a pod that never starts hits the start timeout",
			nodes:   []string{"n1"},
			status:  waiting("ContainerCreating", ""),
			mutate:  func(c *TraceConfig) { c.StartTimeout = 100 * time.Millisecond },
			wantErr: "the agent did not become ready within 100ms on n1 (pulling the image (if needed) and creating the container)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			if tc.client != "" {
				stampVersion(t, tc.client, "svctrace-agent:v0.1.0")
			}
			client := fake.NewClientset(namespace("default"))
			status := tc.status
			if status == nil {
				status = running
			}
			kubelet(client, status)
			pio := newFakeIO(tc.scripts)
			pio.attachErr = tc.attachErr
			sink := &fakeSink{}
			sum := &fakeSummarizer{endpoints: map[string][]string{}}
			stderr := &syncBuffer{}
			for _, sc := range tc.scripts {
				if sc.gate != nil {
					stderr.when, stderr.notify = gateWhen[sc.gate], sc.gate
				}
			}
			tr := &Tracer{Client: client, IO: pio, Out: sink, ErrOut: stderr, Summarizer: sum}
			cfg := traceConfig(tc.nodes...)
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}

			err := tr.Run(context.Background(), cfg)

			if tc.wantErr == "" && err != nil {
				t.Fatalf("Run() error = %v\nstderr:\n%s", err, stderr)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Run() error = %v, want it to contain %q", err, tc.wantErr)
			}
			// Agents on different nodes race: order by node.
			sort.SliceStable(sink.packets, func(i, j int) bool { return sink.packets[i].Node < sink.packets[j].Node })
			if diff := cmp.Diff(tc.wantPackets, sink.packets); diff != "" {
				t.Errorf("packets mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantLost, sink.lost); diff != "" {
				t.Errorf("lost records mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWarn, sink.warnings); diff != "" {
				t.Errorf("warnings mismatch (-want +got):\n%s", diff)
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not contain %q:\n%s", s, stderr)
				}
			}
			for _, s := range tc.notStderr {
				if strings.Contains(stderr.String(), s) {
					t.Errorf("stderr contains %q:\n%s", s, stderr)
				}
			}
			for _, pod := range tc.wantClosed {
				if !pio.wasClosed(pod) {
					t.Errorf("stdin of %s was not closed: the agent would not have been told to stop", pod)
				}
			}
			// Always: no pod left behind, on success and on every error.
			if left := remainingPods(t, client); len(left) > 0 {
				t.Errorf("pods left behind: %v", left)
			}
			if tc.wantErr == "" {
				if diff := cmp.Diff(myappTarget().EndpointsByService, sum.endpoints); diff != "" {
					t.Errorf("summary endpoints mismatch (-want +got):\n%s", diff)
				}
				if len(sink.summaries) != 1 || sink.summaries[0].Packets != len(tc.wantPackets) {
					t.Errorf("summaries = %+v, want one counting %d packets", sink.summaries, len(tc.wantPackets))
				}
			}
		})
	}
}

func TestTracerInterrupt(t *testing.T) {
	setup(t)
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	pod := "svctrace-test1-n1"
	pio := newFakeIO(map[string]script{pod: {
		before:    []string{readyLine("n1", "v0.1.0")},
		waitStdin: true,
		// The agent flushes what it grouped before its bye.
		after: []string{packetLine("10.199.0.2:40000"), byeLine("stdin", "")},
	}})
	sink := &fakeSink{}
	stderr := &syncBuffer{}
	tr := &Tracer{Client: client, IO: pio, Out: sink, ErrOut: stderr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Ctrl-C once the agent is ready.
		for !strings.Contains(stderr.String(), "Tracing ") {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()

	if err := tr.Run(ctx, traceConfig("n1")); err != nil {
		t.Fatalf("Run() after Ctrl-C error = %v, want nil", err)
	}
	if !pio.wasClosed(pod) {
		t.Error("stdin was not closed on Ctrl-C")
	}
	if len(sink.packets) != 1 {
		t.Errorf("got %d packets, want the 1 the agent flushed after Ctrl-C", len(sink.packets))
	}
	if !strings.Contains(stderr.String(), "Stopped (interrupted) after 1 packet(s)") {
		t.Errorf("stderr does not say it was interrupted:\n%s", stderr)
	}
	if left := remainingPods(t, client); len(left) > 0 {
		t.Errorf("pods left behind: %v", left)
	}
}

func TestTracerCreateErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr string
	}{
		{
			name: "Pod Security admission",
			err: apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "svctrace-test1-n1",
				errors.New(`violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true, hostPID=true), privileged (container "agent" must not set securityContext.privileged=true)`)),
			wantErr: "namespace \"default\" does not allow the agent's privileged pod (Pod Security admission): run it in a namespace that does with --agent-namespace (e.g. kube-system), or allow it with `kubectl label namespace default pod-security.kubernetes.io/enforce=privileged`",
		},
		{
			name:    "RBAC",
			err:     apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "dev" cannot create resource "pods" in API group "" in the namespace "default"`)),
			wantErr: `not allowed to create pods in namespace "default": ask your cluster admin for RBAC permission to "create" "pods"`,
		},
		{
			name:    "missing agent namespace",
			err:     apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "default"),
			wantErr: `agent namespace "default" not found: pass an existing one with --agent-namespace`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			client := fake.NewClientset()
			client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			tr := &Tracer{Client: client, IO: newFakeIO(nil), Out: &fakeSink{}, ErrOut: io.Discard}
			err := tr.Run(context.Background(), traceConfig("n1"))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestPodStarted(t *testing.T) {
	base := func(phase corev1.PodPhase, state corev1.ContainerState) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Spec: corev1.PodSpec{NodeName: "n1"}}
		p.Status.Phase = phase
		if state != (corev1.ContainerState{}) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: AgentContainer, Image: "img", State: state}}
		}
		return p
	}
	wait := func(reason string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "m"}}
	}
	failedNoContainer := base(corev1.PodFailed, corev1.ContainerState{})
	failedNoContainer.Status.Reason, failedNoContainer.Status.Message = "OutOfcpu", "Node didn't have enough resource"
	tests := []struct {
		name      string
		pod       *corev1.Pod
		want      bool
		wantState string
		wantErr   string
	}{
		{name: "no status yet", pod: base(corev1.PodPending, corev1.ContainerState{}), wantState: "scheduling"},
		{name: "creating", pod: base(corev1.PodPending, wait("ContainerCreating")), wantState: "pulling the image (if needed) and creating the container"},
		{name: "running", pod: base(corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}), want: true, wantState: "running"},
		{name: "already done", pod: base(corev1.PodSucceeded, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}), want: true, wantState: "running"},
		{name: "failed after running: its output says why", pod: base(corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}), want: true, wantState: "ended"},
		{name: "rejected by the kubelet", pod: failedNoContainer, wantErr: "agent pod ns/p on node n1 failed before its container started (OutOfcpu: Node didn't have enough resource)"},
		{name: "image pull", pod: base(corev1.PodPending, wait("ErrImagePull")), wantErr: `cannot get its image "img" (ErrImagePull: m)`},
		{name: "config error", pod: base(corev1.PodPending, wait("CreateContainerConfigError")), wantErr: "could not start its container (CreateContainerConfigError: m)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, state, err := podStarted(tc.pod)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("podStarted() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || state != tc.wantState {
				t.Errorf("podStarted() = %v, %q; want %v, %q", got, state, tc.want, tc.wantState)
			}
		})
	}
}

func TestTracerStatusLine(t *testing.T) {
	setup(t)
	tests := []struct {
		name      string
		terminal  bool
		quiet     bool
		wantLine  bool
		wantTrace bool
	}{
		{name: "terminal", terminal: true, wantLine: true, wantTrace: true},
		{name: "not a terminal", wantTrace: true},
		{name: "quiet terminal", terminal: true, quiet: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(namespace("default"))
			// The pod is created, seen starting, then running: the
			// kubelet's updates reach the tracer on its watch.
			kubelet(client, waiting("ContainerCreating", ""))
			go func() {
				for {
					list, _ := client.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
					if len(list.Items) == 1 {
						pod := list.Items[0].DeepCopy()
						time.Sleep(20 * time.Millisecond)
						pod.Status = running(pod)
						if _, err := client.CoreV1().Pods("default").UpdateStatus(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
							panic(err)
						}
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			pio := newFakeIO(map[string]script{"svctrace-test1-n1": {before: []string{readyLine("n1", "v0.1.0"), byeLine("duration", "")}}})
			stderr := &syncBuffer{}
			tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: stderr, Terminal: tc.terminal, Quiet: tc.quiet}
			if err := tr.Run(context.Background(), traceConfig("n1")); err != nil {
				t.Fatal(err)
			}
			out := stderr.String()
			line := "\r\x1b[KWaiting for agent pod default/svctrace-test1-n1 on node n1: pulling the image (if needed) and creating the container..."
			if got := strings.Contains(out, line); got != tc.wantLine {
				t.Errorf("status line shown = %v, want %v:\n%q", got, tc.wantLine, out)
			}
			if tc.wantLine && !strings.Contains(out, "\r\x1b[KTracing ") {
				t.Errorf("the status line is not cleared before the next message:\n%q", out)
			}
			if got := strings.Contains(out, "Tracing default/myapp"); got != tc.wantTrace {
				t.Errorf("ready message shown = %v, want %v:\n%q", got, tc.wantTrace, out)
			}
		})
	}
}

// TestTracerSummaryOnly checks --summary: the packets and lost records are
// counted into the summary, not written; warnings go to stderr.
func TestTracerSummaryOnly(t *testing.T) {
	setup(t)
	const pod1 = "svctrace-test1-n1"
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	pio := newFakeIO(map[string]script{pod1: {before: []string{
		readyLine("n1", "v0.1.0"), packetLine("10.199.0.2:40000"),
		jsonLine(record.Lost{Type: record.TypeLost, Count: 3, Where: "kmsg"}),
		jsonLine(record.Warning{Type: record.TypeWarning, Node: "n1", Message: "kube-proxy rewrote its rules"}),
		packetLine("10.199.0.2:40001"), byeLine("duration", ""),
	}}})
	sink := &fakeSink{}
	sum := &fakeSummarizer{endpoints: map[string][]string{}}
	stderr := &syncBuffer{}
	tr := &Tracer{Client: client, IO: pio, Out: sink, ErrOut: stderr, Summarizer: sum, SummaryOnly: true}
	if err := tr.Run(context.Background(), traceConfig("n1")); err != nil {
		t.Fatalf("Run: %v\nstderr:\n%s", err, stderr)
	}
	if len(sink.packets)+len(sink.lost)+len(sink.warnings) != 0 {
		t.Errorf("wrote %d packets, %d lost, %d warnings; want only the summary", len(sink.packets), len(sink.lost), len(sink.warnings))
	}
	want := []record.Summary{{Type: record.TypeSummary, Packets: 2, Lost: 3}}
	if diff := cmp.Diff(want, sink.summaries); diff != "" {
		t.Errorf("summaries (-want +got):\n%s", diff)
	}
	if !strings.Contains(stderr.String(), "Warning: node n1: kube-proxy rewrote its rules") {
		t.Errorf("stderr lacks the agent's warning:\n%s", stderr)
	}
}

// TestTracerFromPod checks that a --from session says where its test
// connection comes from.
func TestTracerFromPod(t *testing.T) {
	setup(t)
	const pod1 = "svctrace-test1-n1"
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	var commands [][]string
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		commands = append(commands, pod.Spec.Containers[0].Command)
		return false, nil, nil
	})
	pio := newFakeIO(map[string]script{pod1: {before: []string{readyLine("n1", "v0.1.0"), byeLine("duration", "")}}})
	stderr := &syncBuffer{}
	tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: stderr}
	cfg := traceConfig("n1")
	cfg.From = &FromPod{Namespace: "default", Name: "client", Node: "n1", IP: "10.244.0.9"}
	cfg.Agent.ProbeFromIP = "10.244.0.9"
	if err := tr.Run(context.Background(), cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := "sending a test connection from pod default/client (10.244.0.9); Ctrl-C to stop"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	if len(commands) != 1 || !slices.Contains(commands[0], "--probe-from-ip=10.244.0.9") {
		t.Errorf("agent command lines %v, want one with --probe-from-ip=10.244.0.9", commands)
	}
}

// TestTracerReadyWaitsForStdinAnswer: the session is ready (and a probe
// told) only once every agent answered the first line on its stdin: until
// then, a command killed could leave an agent tracing until its pod's
// deadline. An agent that never answers costs holdWait and a warning, not
// the session.
func TestTracerReadyWaitsForStdinAnswer(t *testing.T) {
	const pod1 = "svctrace-test1-n1"
	const warn = "Warning: the agent on node n1 did not answer on its stdin (the pods/attach stream svctrace holds) within 300ms: if this command is killed, the agent stops only at the pod's deadline (1m10s)"
	for _, silent := range []bool{false, true} {
		t.Run(fmt.Sprintf("silent=%v", silent), func(t *testing.T) {
			setup(t)
			if !silent {
				holdWait = time.Minute // the answer comes first however slow the machine
			}
			client := fake.NewClientset(namespace("default"))
			kubelet(client, running)
			answer := make(chan struct{})
			sc := script{before: []string{readyLine("n1", "v0.1.0")}, gate: stderrSaid("Tracing "), after: []string{byeLine("duration", "")},
				silent: silent, answerAfter: answer}
			stderr := &syncBuffer{when: gateWhen[sc.gate], notify: sc.gate}
			pio := newFakeIO(map[string]script{pod1: sc})
			early := make(chan string, 1)
			go func() {
				time.Sleep(100 * time.Millisecond)
				early <- stderr.String()
				close(answer)
			}()
			tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: stderr}
			if err := tr.Run(context.Background(), traceConfig("n1")); err != nil {
				t.Fatalf("Run: %v\n%s", err, stderr)
			}
			out := stderr.String()
			ready := strings.Index(out, "Tracing ")
			if ready < 0 {
				t.Fatalf("no ready line:\n%s", out)
			}
			if silent {
				if w := strings.Index(out, warn); w < 0 || w > ready {
					t.Errorf("want %q before the ready line:\n%s", warn, out)
				}
				return
			}
			if e := <-early; strings.Contains(e, "Tracing ") {
				t.Errorf("ready before the agent answered on its stdin:\n%s", e)
			}
			if strings.Contains(out, "did not answer") {
				t.Errorf("warned about an agent that answered:\n%s", out)
			}
		})
	}
}

// TestTracerProbeWaitsForEveryAgent: with the packet followed to another
// node, the client's agent probes only once told, and is told only once
// the other node's agent is ready too (else its half of the packet is lost).
func TestTracerProbeWaitsForEveryAgent(t *testing.T) {
	setup(t)
	const pod1, pod2 = "svctrace-test1-n1", "svctrace-test1-n2"
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	var mu sync.Mutex
	commands := map[string][]string{}
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		mu.Lock()
		commands[pod.Spec.NodeName] = pod.Spec.Containers[0].Command
		mu.Unlock()
		return false, nil, nil
	})
	probed, n2Ready := make(chan struct{}), make(chan struct{})
	var told []string
	hellos := map[string]int{}
	pio := newFakeIO(map[string]script{
		pod1: {before: []string{readyLine("n1", "v0.1.0")}, gate: probed, after: []string{byeLine("duration", "")}},
		pod2: {gate: n2Ready, after: []string{readyLine("n2", "v0.1.0"), byeLine("duration", "")}},
	})
	pio.onLine = func(pod, line string) {
		mu.Lock()
		defer mu.Unlock()
		if line == record.WordHello {
			hellos[pod]++
			return
		}
		told = append(told, pod+": "+line)
		if pod == pod1 && line == "probe" {
			close(probed)
		}
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		early := slices.Clone(told)
		mu.Unlock()
		if len(early) > 0 {
			t.Errorf("stdin lines before n2's agent was ready: %q", early)
		}
		close(n2Ready)
	}()
	tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: &syncBuffer{}}
	cfg := traceConfig("n1", "n2")
	cfg.Roles = []NodeRole{{Node: "n1", Roles: []string{RoleClient}}, {Node: "n2", Roles: []string{RoleEndpoint}, Endpoints: 1}}
	cfg.Agent.Probe = true
	if err := tr.Run(context.Background(), cfg); err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{pod1 + ": probe"}, told); diff != "" {
		t.Errorf("stdin lines after the first (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{pod1: 1, pod2: 1}, hellos); diff != "" {
		t.Errorf("%q lines per pod (-want +got):\n%s", record.WordHello, diff)
	}
	if c := commands["n1"]; !slices.Contains(c, "--probe") || !slices.Contains(c, "--probe-when-told") {
		t.Errorf("n1 agent command %q, want --probe --probe-when-told", c)
	}
	if c := commands["n2"]; slices.Contains(c, "--probe") || slices.Contains(c, "--probe-when-told") {
		t.Errorf("n2 agent command %q probes, want only n1 to", c)
	}
}

// TestTracerDeletionWait: pods whose deletion is accepted but which go on
// terminating (the API server keeps them until the kubelet is done). Run
// waits for them only when --wait asks, or when their agent did not confirm
// in its bye that it removed its rules.
func TestTracerDeletionWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		after   []string // after stdin closed
		wait    bool
		wantErr string
	}{
		{name: "rules removed, confirmed: not waited for", after: []string{byeLine("stdin", "")}},
		{name: "--wait: waited for", after: []string{byeLine("stdin", "")}, wait: true, wantErr: "still terminating"},
		{name: "no bye: waited for", wantErr: "still terminating"},
		{name: "cleanup failed: waited for", after: []string{byeLine("error", "clean up: delete TRACE rule: exit status 4")}, wantErr: "still terminating"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			old := deleteTimeout
			deleteTimeout = 300 * time.Millisecond
			t.Cleanup(func() { deleteTimeout = old })
			client := fake.NewClientset(namespace("default"))
			kubelet(client, running)
			deletes := 0
			client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				deletes++
				return true, nil, nil // accepted; the pod terminates (and stays) for now
			})
			pod := "svctrace-test1-n1"
			pio := newFakeIO(map[string]script{pod: {
				before:    []string{readyLine("n1", "v0.1.0"), packetLine("10.199.0.2:40000")},
				waitStdin: true,
				after:     tc.after,
			}})
			cfg := traceConfig("n1")
			cfg.Count, cfg.WaitPods = 1, tc.wait
			tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: io.Discard}
			// A wait for a pod that never goes ends in "still terminating".
			err := tr.Run(context.Background(), cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Run() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Run() = %v, want an error with %q", err, tc.wantErr)
			}
			if deletes != 1 {
				t.Errorf("%d pod deletions, want 1", deletes)
			}
		})
	}
}

// TestTracerByeEndsAgent: an agent's bye is its last record, so the session
// ends on it, without waiting for the output stream to close (the kubelet
// closes a followed log a while after the container exits).
func TestTracerByeEndsAgent(t *testing.T) {
	setup(t)
	stopGrace = time.Hour // only the bye can end the session
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	open := make(chan struct{}) // the stream stays open until the test ends
	defer close(open)
	pio := newFakeIO(map[string]script{"svctrace-test1-n1": {
		before: []string{readyLine("n1", "v0.1.0"), packetLine("10.199.0.2:40000"), byeLine("count", "")},
		gate:   open,
	}})
	cfg := traceConfig("n1")
	cfg.Count = 1
	tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: io.Discard}
	done := make(chan error, 1)
	go func() { done <- tr.Run(context.Background(), cfg) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run() = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the agent's bye: it waits for the output stream to close")
	}
}
