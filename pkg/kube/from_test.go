package kube

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestParsePodArg(t *testing.T) {
	tests := []struct {
		arg, want, wantErr string
	}{
		{arg: "pod/client", want: "client"},
		{arg: "po/client", want: "client"},
		{arg: "pods/client", want: "client"},
		{arg: "Pod/client", want: "client"},
		{arg: "client", wantErr: `--from "client": give the pod to connect from as pod/NAME (it must be in the Service's namespace)`},
		{arg: "deploy/client", wantErr: `--from "deploy/client": give the pod to connect from as pod/NAME (it must be in the Service's namespace)`},
		{arg: "pod/", wantErr: `--from "pod/": give the pod to connect from as pod/NAME`},
		{arg: "pod/ns/client", wantErr: `--from "pod/ns/client": give the pod to connect from as pod/NAME`},
	}
	for _, tc := range tests {
		t.Run(tc.arg, func(t *testing.T) {
			got, err := ParsePodArg(tc.arg)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if got != tc.want {
				t.Errorf("ParsePodArg(%q) = %q, want %q", tc.arg, got, tc.want)
			}
		})
	}
}

func TestResolveFromPod(t *testing.T) {
	v4 := &Target{Namespace: "default", Name: "myapp", Dst: []string{"10.96.173.227:80"}}
	v6 := &Target{Namespace: "default", Name: "myapp6", Dst: []string{"[fd00::a]:80"}}
	nodePortOnly := &Target{Namespace: "default", Name: "web", NodePorts: []int32{30080}}
	pod := func(name string, mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:       corev1.PodSpec{NodeName: "svctrace-node"},
			Status: corev1.PodStatus{
				Phase:  corev1.PodRunning,
				PodIP:  "10.244.0.9",
				PodIPs: []corev1.PodIP{{IP: "10.244.0.9"}, {IP: "fd44::9"}},
			},
		}
		if mod != nil {
			mod(p)
		}
		return p
	}
	deleted := metav1.NewTime(time.Unix(0, 0))
	client := fake.NewClientset(
		pod("client", nil),
		pod("pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending; p.Status.PodIPs = nil; p.Status.PodIP = "" }),
		pod("hostnet", func(p *corev1.Pod) { p.Spec.HostNetwork = true; p.Status.PodIPs = []corev1.PodIP{{IP: "10.199.0.2"}} }),
		pod("v4only", func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.10"}} }),
		pod("old", func(p *corev1.Pod) { p.Status.PodIPs = nil; p.Status.PodIP = "10.244.0.11" }),
		pod("noip", func(p *corev1.Pod) { p.Status.PodIPs = nil; p.Status.PodIP = "" }),
		pod("going", func(p *corev1.Pod) { p.DeletionTimestamp = &deleted; p.Finalizers = []string{"x"} }),
	)
	tests := []struct {
		name    string
		pod     string
		t       *Target
		want    *FromPod
		wantErr string
	}{
		{name: "running pod", pod: "client", t: v4, want: &FromPod{Namespace: "default", Name: "client", Node: "svctrace-node", IP: "10.244.0.9"}},
		{name: "dual-stack pod, IPv6 Service", pod: "client", t: v6, want: &FromPod{Namespace: "default", Name: "client", Node: "svctrace-node", IP: "fd44::9"}},
		{name: "NodePort only: the node's IPv4 address", pod: "client", t: nodePortOnly, want: &FromPod{Namespace: "default", Name: "client", Node: "svctrace-node", IP: "10.244.0.9"}},
		{name: "podIP without podIPs", pod: "old", t: v4, want: &FromPod{Namespace: "default", Name: "old", Node: "svctrace-node", IP: "10.244.0.11"}},
		{
			name: "not found", pod: "nope", t: v4,
			wantErr: "--from: pod \"nope\" not found in namespace \"default\": list pods with `kubectl get pods -n default` (the pod must be in the Service's namespace, set with -n)",
		},
		{
			name: "not running", pod: "pending", t: v4,
			wantErr: "--from: pod default/pending is Pending, not Running: it needs a network namespace to connect from; wait for it (kubectl get pod -n default pending -w) or pick a running pod",
		},
		{
			name: "hostNetwork", pod: "hostnet", t: v4,
			wantErr: "--from: pod default/hostnet uses the node's network (hostNetwork: true), so its connections are the node's own: trace without --from and add --probe --node svctrace-node, which connects from the node",
		},
		{
			name: "no address of the Service's family", pod: "v4only", t: v6,
			wantErr: "--from: pod default/v4only has no address (10.244.0.10) of the IP family of default/myapp6's traced addresses: pick a pod of that family",
		},
		{
			name: "no IP yet", pod: "noip", t: v4,
			wantErr: "--from: pod default/noip has no IP yet: wait until it has one (kubectl get pod -n default noip -o wide)",
		},
		{
			name: "being deleted", pod: "going", t: v4,
			wantErr: "--from: pod default/going is being deleted: pick a running pod (kubectl get pods -n default)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveFromPod(context.Background(), client, "default", tc.pod, tc.t)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("FromPod (-want +got):\n%s", diff)
			}
		})
	}
}
