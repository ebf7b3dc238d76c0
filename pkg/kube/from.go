package kube

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// FromPod is the pod a live trace's test connection is opened from
// (--from pod/NAME): the agent on the pod's node enters the pod's network
// namespace by its IP and connects from there, so the pod's image needs no
// tools.
type FromPod struct {
	Namespace, Name string
	// Node is where the pod runs: the trace runs there.
	Node string
	// IP is the pod's address of the traced Service's IP family.
	IP string
}

// DisplayName is "ns/name" of the pod.
func (f *FromPod) DisplayName() string { return f.Namespace + "/" + f.Name }

// ParsePodArg reads --from: "pod/NAME" (also "po/NAME", "pods/NAME").
func ParsePodArg(arg string) (string, error) {
	kind, name, found := strings.Cut(arg, "/")
	switch strings.ToLower(kind) {
	case "pod", "pods", "po":
	default:
		return "", fmt.Errorf("--from %q: give the pod to connect from as pod/NAME (it must be in the Service's namespace)", arg)
	}
	if !found || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("--from %q: give the pod to connect from as pod/NAME", arg)
	}
	return name, nil
}

// ResolveFromPod reads pod ns/name and checks it can open the test
// connection to t.
func ResolveFromPod(ctx context.Context, client kubernetes.Interface, ns, name string, t *Target) (*FromPod, error) {
	pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("--from: pod %q not found in namespace %q: list pods with `kubectl get pods -n %s` (the pod must be in the Service's namespace, set with -n)", name, ns, ns)
		}
		return nil, apiError(err, "get", "pods", ns)
	}
	return fromPod(pod, t)
}

// fromPod is the pure part of ResolveFromPod.
func fromPod(pod *corev1.Pod, t *Target) (*FromPod, error) {
	id := pod.Namespace + "/" + pod.Name
	switch {
	case pod.DeletionTimestamp != nil:
		return nil, fmt.Errorf("--from: pod %s is being deleted: pick a running pod (kubectl get pods -n %s)", id, pod.Namespace)
	case pod.Status.Phase != corev1.PodRunning:
		phase := string(pod.Status.Phase)
		if phase == "" {
			phase = "not started"
		}
		return nil, fmt.Errorf("--from: pod %s is %s, not Running: it needs a network namespace to connect from; wait for it (kubectl get pod -n %s %s -w) or pick a running pod", id, phase, pod.Namespace, pod.Name)
	case pod.Spec.HostNetwork:
		return nil, fmt.Errorf("--from: pod %s uses the node's network (hostNetwork: true), so its connections are the node's own: trace without --from and add --probe --node %s, which connects from the node", id, pod.Spec.NodeName)
	case pod.Spec.NodeName == "":
		return nil, fmt.Errorf("--from: pod %s is not scheduled to a node", id)
	}
	var ips []string
	for _, p := range pod.Status.PodIPs {
		ips = append(ips, p.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = []string{pod.Status.PodIP}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("--from: pod %s has no IP yet: wait until it has one (kubectl get pod -n %s %s -o wide)", id, pod.Namespace, pod.Name)
	}
	v4, v6 := t.families()
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if (a.Unmap().Is4() && v4) || (!a.Unmap().Is4() && v6) {
			return &FromPod{Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName, IP: a.Unmap().String()}, nil
		}
	}
	return nil, fmt.Errorf("--from: pod %s has no address (%s) of the IP family of %s's traced addresses: pick a pod of that family", id, strings.Join(ips, ", "), t.DisplayName())
}

// families reports the IP families of the addresses a probe would connect
// to: the traced addresses, and the node's IPv4 address for NodePorts.
func (t *Target) families() (v4, v6 bool) {
	for _, d := range t.Dst {
		ap, err := netip.ParseAddrPort(d)
		if err != nil {
			continue
		}
		if ap.Addr().Unmap().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if len(t.NodePorts) > 0 {
		v4 = true
	}
	return v4, v6
}
