//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// These tests check the multi-node local cluster itself: pod CIDRs and BGP routes between the
// nodes, pod traffic across nodes, every node's NodePorts and the LoadBalancer IP from the
// gateway, and the seed-003 set (hack/manifests/multi-node). They skip on a single node.

// requireNodes skips unless the cluster has at least n nodes and commands can run on each.
func requireNodes(t *testing.T, n int) []Node {
	t.Helper()
	env.RequireExec(t)
	if len(env.ExecNode) == 0 {
		t.Skip("SVCTRACE_EXEC_NODE is not set: these tests need a shell on each node (the local cluster)")
	}
	nodes := env.Nodes(t)
	if len(nodes) < n {
		t.Skipf("%d nodes, this test needs %d: hack/local-cluster.sh up --nodes %d", len(nodes), n, n)
	}
	return nodes
}

func TestNodesPodRoutes(t *testing.T) {
	nodes := requireNodes(t, 2)
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	seen := map[netip.Prefix]string{}
	for _, n := range nodes {
		p, err := netip.ParsePrefix(n.PodCIDR)
		if err != nil || p.Bits() != 24 || !cluster.Contains(p.Addr()) {
			t.Errorf("node %s has pod CIDR %q, want a /24 of %s (%v)", n.Name, n.PodCIDR, cluster, err)
			continue
		}
		if other, ok := seen[p]; ok {
			t.Errorf("nodes %s and %s share pod CIDR %s", other, n.Name, p)
		}
		seen[p] = n.Name
	}
	for _, n := range nodes {
		for _, other := range nodes {
			if other.Name == n.Name {
				continue
			}
			// kube-router's BGP route: "10.244.1.0/24 via 10.199.0.3 dev eth0 proto 17".
			res := env.OnNode(t, n.Name, "ip", "route", "show", other.PodCIDR)
			if want := "via " + other.InternalIP + " dev eth0 proto 17"; !strings.Contains(res.Stdout, want) {
				t.Errorf("node %s: route to %s (%s's pods) lacks %q:\n%s", n.Name, other.PodCIDR, other.Name, want, res)
			}
		}
	}
}

func TestNodesTraffic(t *testing.T) {
	nodes := requireNodes(t, 2)
	pods := env.ListPods(t, "app=sourceip")
	if len(pods) != 1 || pods[0].Spec.NodeName != nodes[1].Name || pods[0].Status.PodIP == "" {
		t.Fatalf("want the one sourceip pod on %s with an IP, got %+v: run hack/local-cluster.sh demo-apps", nodes[1].Name, pods)
	}
	server, serverIP := pods[0].Metadata.Name, pods[0].Status.PodIP
	client := env.ListPods(t, "app=client")
	if len(client) != 1 || client[0].Spec.NodeName != nodes[0].Name {
		t.Fatalf("want the client pod on %s, got %+v", nodes[0].Name, client)
	}
	clientIP := client[0].Status.PodIP
	sourceip := env.GetService(t, "sourceip").Spec.ClusterIP
	lb := env.GetService(t, "myapp-lb")
	if len(lb.Status.LoadBalancer.Ingress) != 1 {
		t.Fatalf("service myapp-lb has ingress %+v, want one IP: run hack/local-cluster.sh lb", lb.Status.LoadBalancer.Ingress)
	}
	lbIP := lb.Status.LoadBalancer.Ingress[0].IP
	if a, err := netip.ParseAddr(lbIP); err != nil || !netip.MustParsePrefix("10.199.0.0/24").Contains(a) || a.As4()[3] < 200 || a.As4()[3] > 250 {
		t.Errorf("LoadBalancer IP %q is not in 10.199.0.200-250", lbIP)
	}
	fromClient := func(t *testing.T, url string) string {
		t.Helper()
		res := env.TryKubectl(t, "exec", "-n", "default", "client", "--", "timeout", "10", "wget", "-q", "-O", "-", url)
		if res.ExitCode != 0 {
			t.Fatalf("wget %s from the client pod failed:\n%s", url, res)
		}
		return res.Stdout
	}
	gateway := interfaceIPv4(t, env.External, "eth0")

	t.Run("pod to pod on another node keeps its address", func(t *testing.T) {
		path := fmt.Sprintf("/e2e-nodes-pod-%d", time.Now().UnixNano())
		if got := servedBy(t, fromClient(t, "http://"+serverIP+path)); got != server {
			t.Errorf("served by %s, want %s", got, server)
		}
		if got := clientSeenBy(t, server, path); got != clientIP {
			t.Errorf("%s saw client %s, want the client pod's %s", server, got, clientIP)
		}
	})
	t.Run("pod to ClusterIP with its endpoint on another node keeps its address", func(t *testing.T) {
		path := fmt.Sprintf("/e2e-nodes-svc-%d", time.Now().UnixNano())
		if got := servedBy(t, fromClient(t, "http://"+sourceip+path)); got != server {
			t.Errorf("served by %s, want %s", got, server)
		}
		if got := clientSeenBy(t, server, path); got != clientIP {
			t.Errorf("%s saw client %s, want the client pod's %s", server, got, clientIP)
		}
	})
	for _, n := range nodes {
		t.Run("gateway to NodePort 30080 on "+n.Name, func(t *testing.T) {
			body, code, res := curl(t, env.External, "http://"+n.InternalIP+":30080/e2e-nodes")
			if code != 200 || !strings.HasPrefix(servedBy(t, body), "myapp-") {
				t.Errorf("want HTTP 200 from a myapp pod:\n%s", res)
			}
		})
	}
	t.Run("gateway to the LoadBalancer IP", func(t *testing.T) {
		body, code, res := curl(t, env.External, "http://"+lbIP+"/e2e-nodes-lb")
		if code != 200 || !strings.HasPrefix(servedBy(t, body), "myapp-") {
			t.Errorf("want HTTP 200 from a myapp pod:\n%s", res)
		}
	})
	// Seed 003: which client address the endpoint sees depends on the node the traffic
	// enters and on externalTrafficPolicy.
	tests := []struct {
		name       string
		node       Node
		port       string
		wantClient string // "": no answer
	}{
		{name: "Cluster via the other node is masqueraded to that node's address", node: nodes[0], port: "30082", wantClient: nodes[0].InternalIP},
		{name: "Local via the endpoint's node keeps the client's address", node: nodes[1], port: "30083", wantClient: gateway},
		{name: "Local via a node without an endpoint is dropped", node: nodes[0], port: "30083"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/e2e-nodes-003-%d-%d", time.Now().UnixNano(), i)
			res := env.External(t, "curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", "http://"+tc.node.InternalIP+":"+tc.port+path)
			if tc.wantClient == "" {
				// curl exit code 28: timed out, no answer at all.
				if res.ExitCode != 28 {
					t.Errorf("want no answer (curl exit code 28):\n%s", res)
				}
				return
			}
			if res.Stdout != "200" {
				t.Fatalf("want HTTP 200:\n%s", res)
			}
			if got := clientSeenBy(t, server, path); got != tc.wantClient {
				t.Errorf("%s saw client %s, want %s", server, got, tc.wantClient)
			}
		})
	}
}
