package kube

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

func leftoverPod(ns, name, node string, managed bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	if managed {
		p.Labels = map[string]string{LabelManagedBy: ManagedByValue, LabelSession: "old01"}
	}
	return p
}

func succeeded(*corev1.Pod) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: AgentContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}},
	}}}
}

func TestCleanup(t *testing.T) {
	cluster := func() []runtime.Object {
		return []runtime.Object{
			namespace("default"), namespace("kube-system"),
			node("n1", "10.0.0.1", true), node("n2", "10.0.0.2", true), node("n3", "10.0.0.3", false),
			leftoverPod("default", "svctrace-old01-n1", "n1", true),
			leftoverPod("kube-system", "svctrace-old02-n2", "n2", true),
			leftoverPod("default", "myapp-a", "n1", false),
		}
	}
	bye := func(n int, errMsg string) string {
		return jsonLine(record.Bye{Type: record.TypeBye, RulesRemoved: n, Reason: "cleanup", Error: errMsg})
	}
	tests := []struct {
		name        string
		cfg         CleanupConfig
		scripts     map[string]script
		status      func(*corev1.Pod) corev1.PodStatus
		wantDeleted []string
		wantNodes   []NodeCleanup
		wantErr     string
		wantLeft    []string // pods left in the cluster, "ns/name"
	}{
		{
			name: "every Ready node",
			cfg:  CleanupConfig{Namespace: "default"},
			scripts: map[string]script{
				"svctrace-test1-n1": {before: []string{"svctrace agent: removing rules", bye(4, "")}},
				"svctrace-test1-n2": {before: []string{bye(0, "")}},
			},
			status:      succeeded,
			wantDeleted: []string{"default/svctrace-old01-n1", "kube-system/svctrace-old02-n2"},
			wantNodes:   []NodeCleanup{{Node: "n1", RulesRemoved: 4}, {Node: "n2", RulesRemoved: 0}},
			wantLeft:    []string{"default/myapp-a"},
		},
		{
			name:        "one node",
			cfg:         CleanupConfig{Namespace: "kube-system", Node: "n2"},
			scripts:     map[string]script{"svctrace-test1-n2": {before: []string{bye(2, "")}}},
			status:      succeeded,
			wantDeleted: []string{"kube-system/svctrace-old02-n2"},
			wantNodes:   []NodeCleanup{{Node: "n2", RulesRemoved: 2}},
			wantLeft:    []string{"default/myapp-a", "default/svctrace-old01-n1"},
		},
		{
			name:     "a NotReady node",
			cfg:      CleanupConfig{Namespace: "default", Node: "n3"},
			wantErr:  `node "n3" is NotReady, so a cleanup pod cannot run there`,
			wantLeft: []string{"default/myapp-a", "default/svctrace-old01-n1", "kube-system/svctrace-old02-n2"},
		},
		{
			name:        "an agent that reports an error",
			cfg:         CleanupConfig{Namespace: "default", Node: "n1"},
			scripts:     map[string]script{"svctrace-test1-n1": {before: []string{bye(1, "ip6tables-nft: permission denied")}}},
			status:      succeeded,
			wantDeleted: []string{"default/svctrace-old01-n1"},
			wantNodes:   []NodeCleanup{{Node: "n1", RulesRemoved: 1}},
			wantErr:     "cleanup on node n1: ip6tables-nft: permission denied",
			wantLeft:    []string{"default/myapp-a", "kube-system/svctrace-old02-n2"},
		},
		{
			name:        "an old agent image without a bye record",
			cfg:         CleanupConfig{Namespace: "default", Node: "n1"},
			scripts:     map[string]script{"svctrace-test1-n1": {before: []string{"unknown flag: --cleanup"}}},
			status:      succeeded,
			wantDeleted: []string{"default/svctrace-old01-n1"},
			wantNodes:   []NodeCleanup{{Node: "n1"}},
			wantErr:     "cleanup on node n1 finished without reporting what it removed (last output: unknown flag: --cleanup): the agent image may be too old",
			wantLeft:    []string{"default/myapp-a", "kube-system/svctrace-old02-n2"},
		},
		{
			name:        "an image that cannot be pulled",
			cfg:         CleanupConfig{Namespace: "default", Node: "n1"},
			status:      waiting("ErrImagePull", "not found"),
			wantDeleted: []string{"default/svctrace-old01-n1"},
			wantNodes:   []NodeCleanup{{Node: "n1"}},
			wantErr:     "or pass another one with --image",
			wantLeft:    []string{"default/myapp-a", "kube-system/svctrace-old02-n2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setup(t)
			client := fake.NewClientset(cluster()...)
			if tc.status != nil {
				kubelet(client, tc.status)
			}
			cfg := tc.cfg
			cfg.Image, cfg.Timeout = "img", 5*time.Second
			var progress bytes.Buffer
			for pod, sc := range tc.scripts {
				sc.silent = true // a cleanup agent reads no stdin
				tc.scripts[pod] = sc
			}
			res, err := Cleanup(context.Background(), client, newFakeIO(tc.scripts), cfg, &progress)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("Cleanup() error = %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Cleanup() error = %v, want it to contain %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantDeleted, res.PodsDeleted); diff != "" {
				t.Errorf("deleted pods mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantNodes, res.Nodes, cmpopts.IgnoreFields(NodeCleanup{}, "Err")); diff != "" {
				t.Errorf("node results mismatch (-want +got):\n%s", diff)
			}
			list, lerr := client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{})
			if lerr != nil {
				t.Fatal(lerr)
			}
			var left []string
			for _, p := range list.Items {
				left = append(left, p.Namespace+"/"+p.Name)
			}
			sort.Strings(left)
			// The cleanup pods themselves are gone too.
			if diff := cmp.Diff(tc.wantLeft, left); diff != "" {
				t.Errorf("pods left mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServiceArg(t *testing.T) {
	tests := []struct {
		arg, want, wantErr string
	}{
		{arg: "myapp", want: "myapp"},
		{arg: "svc/myapp", want: "myapp"},
		{arg: "service/myapp", want: "myapp"},
		{arg: "services/myapp", want: "myapp"},
		{arg: "deploy/myapp", wantErr: `"deploy/myapp" is not a Service: svctrace traces Services`},
		{arg: "svc/", wantErr: `"svc/" is not a Service name`},
		{arg: "svc/a/b", wantErr: `"svc/a/b" is not a Service name`},
	}
	for _, tc := range tests {
		got, err := ParseServiceArg(tc.arg)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseServiceArg(%q) error = %v, want %q", tc.arg, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseServiceArg(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
		}
	}
}

func TestCompletions(t *testing.T) {
	client := fake.NewClientset(
		namespace("default"), namespace("kube-system"),
		node("worker-1", "10.0.0.1", true), node("worker-2", "10.0.0.2", true), node("cp", "10.0.0.3", true),
		service("default", "myapp"), service("default", "myapp-udp"), service("default", "other"),
		service("default", "myapp-nodeport", withPorts(
			corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Port: 9090, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})),
	)
	ctx := context.Background()
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"services by prefix", CompleteServices(ctx, client, "default", "myapp"), []string{"myapp", "myapp-nodeport", "myapp-udp"}},
		{"services keep svc/", CompleteServices(ctx, client, "default", "svc/o"), []string{"svc/other"}},
		{"no services elsewhere", CompleteServices(ctx, client, "kube-system", ""), nil},
		{"ports", CompletePorts(ctx, client, "default", "svc/myapp-nodeport", ""), []string{"http\t80/TCP", "9090\t9090/TCP", "dns\t53/UDP"}},
		{"ports by prefix", CompletePorts(ctx, client, "default", "myapp-nodeport", "d"), []string{"dns\t53/UDP"}},
		{"ports of an unknown service", CompletePorts(ctx, client, "default", "nope", ""), nil},
		{"nodes", CompleteNodes(ctx, client, "worker"), []string{"worker-1", "worker-2"}},
		{"namespaces", CompleteNamespaces(ctx, client, "k"), []string{"kube-system"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, tc.got); diff != "" {
				t.Errorf("completion mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
