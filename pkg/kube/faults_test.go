package kube

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestTracerFaults: one node's agent failing, at start or mid-session,
// is reported with the node and the fix while the other node's agent goes
// on; no pod is left behind either way.
func TestTracerFaults(t *testing.T) {
	const pod1, pod2 = "svctrace-test1-n1", "svctrace-test1-n2"
	// n1's agent traces one packet once n2's failure was reported, then
	// finishes: the session really went on.
	goOn := func(after string) script {
		return script{before: []string{readyLine("n1", "v0.1.0")}, gate: stderrSaid(after),
			after: []string{packetLine("10.199.0.2:40000"), byeLine("duration", "")}}
	}
	tests := []struct {
		name       string
		status     func(*corev1.Pod) corev1.PodStatus
		createErr  error // for n2's pod
		scripts    map[string]script
		timeout    time.Duration
		wantErr    string
		wantStderr []string
	}{
		{
			name: "n2 cannot pull the image",
			status: func(p *corev1.Pod) corev1.PodStatus {
				if p.Spec.NodeName == "n2" {
					return waiting("ErrImagePull", "not found")(p)
				}
				return running(p)
			},
			scripts: map[string]script{pod1: goOn("lost the agent on node n2")},
			wantErr: `agent pod default/svctrace-test1-n2 on node n2 cannot get its image "svctrace-agent:v0.1.0" (ErrImagePull: not found): make the image available to the node`,
			wantStderr: []string{
				"Warning: lost the agent on node n2, going on with the other nodes: agent pod default/svctrace-test1-n2 on node n2 cannot get its image",
				"Stopped (the agents finished) after 1 packet(s) from 1 of 2 nodes (no agent on n2)",
			},
		},
		{
			name: "n2's pod is refused by admission",
			createErr: apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, pod2,
				errors.New(`violates PodSecurity "baseline:latest": privileged`)),
			scripts: map[string]script{pod1: goOn("no agent on node n2")},
			wantErr: "namespace \"default\" does not allow the agent's privileged pod (Pod Security admission): run it in a namespace that does with --agent-namespace",
			wantStderr: []string{
				"Warning: no agent on node n2, going on with the other nodes: namespace \"default\" does not allow",
				"from 1 of 2 nodes (no agent on n2)",
			},
		},
		{
			name: "n2 never starts (NotReady node): dropped at the start timeout",
			status: func(p *corev1.Pod) corev1.PodStatus {
				if p.Spec.NodeName == "n2" {
					return corev1.PodStatus{Phase: corev1.PodPending}
				}
				return running(p)
			},
			timeout: 300 * time.Millisecond,
			scripts: map[string]script{pod1: goOn("lost the agent on node n2")},
			wantErr: "the agent did not become ready within 300ms on n2 (scheduling)",
			wantStderr: []string{
				"Warning: lost the agent on node n2, going on with the other nodes: the agent did not become ready within 300ms on n2 (scheduling)",
				"a NotReady node",
			},
		},
		{
			name: "n2's agent is lost mid-session",
			scripts: map[string]script{
				pod1: goOn("lost the agent on node n2"),
				pod2: {before: []string{readyLine("n2", "v0.1.0")}, gate: stderrSaid("Tracing "), after: []string{"svctrace agent: node going down"}},
			},
			wantErr: "the agent's output on node n2 ended before it finished its session; its last output: svctrace agent: node going down",
			wantStderr: []string{
				"Warning: lost the agent on node n2, going on with the other nodes: the agent's output on node n2 ended",
				"from 1 of 2 nodes (no agent on n2)",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			client := fake.NewClientset(namespace("default"))
			status := tc.status
			if status == nil {
				status = running
			}
			kubelet(client, status)
			if tc.createErr != nil {
				client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
					if a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).Spec.NodeName == "n2" {
						return true, nil, tc.createErr
					}
					return false, nil, nil
				})
			}
			pio := newFakeIO(tc.scripts)
			stderr := &syncBuffer{}
			gates := 0
			for _, sc := range tc.scripts {
				if sc.gate != nil {
					gates++
				}
			}
			// One gate at a time: n2's (if any) opens first.
			if sc, ok := tc.scripts[pod2]; ok && sc.gate != nil {
				stderr.when, stderr.notify = gateWhen[sc.gate], sc.gate
				go func() {
					<-sc.gate
					for !strings.Contains(stderr.String(), gateWhen[tc.scripts[pod1].gate]) {
						time.Sleep(time.Millisecond)
					}
					close(tc.scripts[pod1].gate)
				}()
			} else {
				stderr.when, stderr.notify = gateWhen[tc.scripts[pod1].gate], tc.scripts[pod1].gate
			}
			sink := &fakeSink{}
			tr := &Tracer{Client: client, IO: pio, Out: sink, ErrOut: stderr, Summarizer: &fakeSummarizer{endpoints: map[string][]string{}}}
			cfg := traceConfig("n1", "n2")
			if tc.timeout > 0 {
				cfg.StartTimeout = tc.timeout
			}
			err := tr.Run(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run() error = %v, want it to contain %q\nstderr:\n%s", err, tc.wantErr, stderr)
			}
			for _, s := range tc.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not contain %q:\n%s", s, stderr)
				}
			}
			if len(sink.packets) != 1 || sink.packets[0].Node != "n1" {
				t.Errorf("packets = %+v, want n1's one: the session must go on without n2", sink.packets)
			}
			if len(sink.summaries) != 1 {
				t.Errorf("%d summaries, want 1", len(sink.summaries))
			}
			if left := remainingPods(t, client); len(left) > 0 {
				t.Errorf("pods left behind: %v", left)
			}
		})
	}
}

// TestTracerInterruptAllNodes: Ctrl-C with agents on two nodes tells both
// to stop (their stdin) and deletes both pods.
func TestTracerInterruptAllNodes(t *testing.T) {
	setup(t)
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	pods := []string{"svctrace-test1-n1", "svctrace-test1-n2"}
	scripts := map[string]script{}
	for _, p := range pods {
		scripts[p] = script{before: []string{readyLine("", "v0.1.0")}, waitStdin: true, after: []string{byeLine("stdin", "")}}
	}
	pio := newFakeIO(scripts)
	stderr := &syncBuffer{when: "Tracing ", notify: make(chan struct{})}
	ready := stderr.notify
	tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: stderr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-ready
		cancel()
	}()
	if err := tr.Run(ctx, traceConfig("n1", "n2")); err != nil {
		t.Fatalf("Run() after Ctrl-C error = %v, want nil", err)
	}
	for _, p := range pods {
		if !pio.wasClosed(p) {
			t.Errorf("stdin of %s not closed on Ctrl-C: its agent would keep its rules until the deadline", p)
		}
	}
	if left := remainingPods(t, client); len(left) > 0 {
		t.Errorf("pods left behind: %v", left)
	}
}

// TestTracerFollowArgs: only the client's node probes; the node the
// packet is followed to traces its endpoints (and, with --from, only the
// pod's packets).
func TestTracerFollowArgs(t *testing.T) {
	setup(t)
	client := fake.NewClientset(namespace("default"))
	kubelet(client, running)
	cmds := map[string][]string{}
	var mu sync.Mutex
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pod := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		mu.Lock()
		cmds[pod.Spec.NodeName] = pod.Spec.Containers[0].Command
		mu.Unlock()
		return false, nil, nil
	})
	scripts := map[string]script{}
	for _, n := range []string{"n1", "n2"} {
		scripts["svctrace-test1-"+n] = script{before: []string{readyLine(n, "v0.1.0"), byeLine("duration", "")}}
	}
	tr := &Tracer{Client: client, IO: newFakeIO(scripts), Out: &fakeSink{}, ErrOut: io.Discard}
	cfg := traceConfig("n1", "n2")
	cfg.Target.Endpoints = []Endpoint{{IP: "10.244.0.24", Node: "n2", Ready: true}}
	cfg.Agent.Probe, cfg.Agent.ProbeFromIP = true, "10.244.0.9"
	cfg.Roles = []NodeRole{{Node: "n1", Roles: []string{RoleClient}}, {Node: "n2", Roles: []string{RoleEndpoint}, Endpoints: 1}}
	if err := tr.Run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	has := func(node, arg string) bool { return slices.Contains(cmds[node], arg) }
	if !has("n1", "--probe") || !has("n1", "--probe-from-ip=10.244.0.9") || has("n1", "--endpoint=10.244.0.24:80") {
		t.Errorf("n1 (client) command %v: want the probe from the pod, no endpoint rules", cmds["n1"])
	}
	if has("n2", "--probe") || !has("n2", "--src=10.244.0.9") || !has("n2", "--endpoint=10.244.0.24:80") {
		t.Errorf("n2 (endpoint) command %v: want no probe, the pod's packets only, its endpoint traced", cmds["n2"])
	}
}
