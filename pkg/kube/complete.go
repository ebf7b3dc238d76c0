package kube

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ParseServiceArg reads the command's argument: "NAME", "svc/NAME",
// "service/NAME" or "services/NAME" (kubectl's spellings).
func ParseServiceArg(arg string) (string, error) {
	kind, name, found := strings.Cut(arg, "/")
	if !found {
		kind, name = "svc", arg
	}
	switch strings.ToLower(kind) {
	case "svc", "service", "services", "service.v1.", "services.v1.":
	default:
		return "", fmt.Errorf("%q is not a Service: svctrace traces Services; give svc/NAME or NAME (list them with `kubectl get svc`)", arg)
	}
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("%q is not a Service name: give svc/NAME or NAME", arg)
	}
	return name, nil
}

// The completion helpers below never fail: a shell completion that cannot
// reach the cluster simply offers nothing.

// CompleteServices returns the Service names in ns starting with prefix,
// keeping a "svc/"-style prefix if the user typed one.
func CompleteServices(ctx context.Context, client kubernetes.Interface, ns, toComplete string) []string {
	kind, prefix, found := strings.Cut(toComplete, "/")
	if !found {
		kind, prefix = "", toComplete
	}
	list, err := client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range list.Items {
		if !strings.HasPrefix(s.Name, prefix) {
			continue
		}
		if found {
			out = append(out, kind+"/"+s.Name)
		} else {
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

// CompletePorts returns the ports of Service svcArg ("[svc/]NAME") in ns:
// names (or numbers for unnamed ports), each with a "port/PROTO"
// description after a tab, as cobra shows it.
func CompletePorts(ctx context.Context, client kubernetes.Interface, ns, svcArg, toComplete string) []string {
	name, err := ParseServiceArg(svcArg)
	if err != nil {
		return nil
	}
	svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, p := range svc.Spec.Ports {
		key := p.Name
		if key == "" {
			key = strconv.Itoa(int(p.Port))
		}
		if strings.HasPrefix(key, toComplete) {
			out = append(out, fmt.Sprintf("%s\t%d/%s", key, p.Port, protocolOf(p)))
		}
	}
	return out
}

// CompleteNodes returns node names starting with toComplete.
func CompleteNodes(ctx context.Context, client kubernetes.Interface, toComplete string) []string {
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	return namesWithPrefix(len(list.Items), func(i int) string { return list.Items[i].Name }, toComplete)
}

// CompleteNamespaces returns namespace names starting with toComplete.
func CompleteNamespaces(ctx context.Context, client kubernetes.Interface, toComplete string) []string {
	list, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	return namesWithPrefix(len(list.Items), func(i int) string { return list.Items[i].Name }, toComplete)
}

// namesWithPrefix returns the sorted names among n items that start with prefix.
func namesWithPrefix(n int, name func(i int) string, prefix string) []string {
	var out []string
	for i := range n {
		if s := name(i); strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}
