package kube

import (
	"fmt"
	"strings"
)

// NodeOptions is how the user asked to pick nodes.
type NodeOptions struct {
	// Node pins the trace to one node (--node).
	Node string
	// AllNodes runs one agent per Ready node (--all-nodes).
	AllNodes bool
	// Probe means the agent itself sends the traffic (--probe), so any Ready
	// node will do.
	Probe bool
	// From is the pod the test connection comes from (--from): its node is
	// where the packets enter netfilter, so the trace runs there.
	From *FromPod
}

// NodeChoice is the nodes to trace on and why, in words for stderr.
type NodeChoice struct {
	Nodes  []string
	Reason string
}

// ChooseNodes picks the nodes to run agents on. It is pure: it uses the
// nodes Resolve listed into t.Nodes.
//
// Service traffic is rewritten on the node where it enters netfilter (the
// client pod's node, or the node receiving NodePort/LoadBalancer traffic),
// so that is where a trace is useful. Without --node, --all-nodes or --probe
// that node is only known for single-node clusters and for external traffic
// to externalTrafficPolicy: Local Services; otherwise the user must say.
func ChooseNodes(t *Target, o NodeOptions) (NodeChoice, error) {
	var ready, notReady []string
	for _, n := range t.Nodes {
		if n.Ready {
			ready = append(ready, n.Name)
		} else {
			notReady = append(notReady, n.Name)
		}
	}
	switch {
	case o.Node != "" && o.AllNodes:
		return NodeChoice{}, fmt.Errorf("--node and --all-nodes cannot be used together: pick one")
	case o.From != nil:
		return chooseFromNode(t, o)
	case o.Node != "":
		for _, n := range t.Nodes {
			if n.Name != o.Node {
				continue
			}
			if !n.Ready {
				return NodeChoice{}, fmt.Errorf("node %q is NotReady, so the agent pod cannot run there: fix the node or pick a Ready one with --node (%s)", o.Node, nameList(ready))
			}
			return NodeChoice{Nodes: []string{o.Node}, Reason: fmt.Sprintf("on node %s (--node)", o.Node)}, nil
		}
		return NodeChoice{}, fmt.Errorf("node %q not found: list nodes with `kubectl get nodes`", o.Node)
	}
	if len(ready) == 0 {
		if len(t.Nodes) == 0 {
			return NodeChoice{}, fmt.Errorf("the cluster has no nodes to run the agent on")
		}
		return NodeChoice{}, fmt.Errorf("no node is Ready (NotReady: %s): the agent pod needs a Ready node; check `kubectl get nodes`", nameList(notReady))
	}
	if o.AllNodes {
		reason := fmt.Sprintf("on all %d Ready nodes (--all-nodes)", len(ready))
		if len(notReady) > 0 {
			reason += fmt.Sprintf("; skipping NotReady %s", nameList(notReady))
		}
		return NodeChoice{Nodes: ready, Reason: reason}, nil
	}
	isReady := map[string]bool{}
	for _, n := range ready {
		isReady[n] = true
	}
	var epReady []string
	for _, n := range t.EndpointNodes() {
		if isReady[n] {
			epReady = append(epReady, n)
		}
	}
	if o.Probe {
		if len(epReady) > 0 {
			return NodeChoice{Nodes: epReady[:1], Reason: fmt.Sprintf("on node %s: --probe sends the test connection from there, and it hosts an endpoint of the Service", epReady[0])}, nil
		}
		return NodeChoice{Nodes: ready[:1], Reason: fmt.Sprintf("on node %s: --probe sends the test connection from there (no Ready node hosts an endpoint)", ready[0])}, nil
	}
	if len(ready) == 1 {
		return NodeChoice{Nodes: ready, Reason: fmt.Sprintf("on node %s, the cluster's only Ready node", ready[0])}, nil
	}
	if t.ExternalLocal && len(epReady) > 0 {
		return NodeChoice{Nodes: epReady, Reason: fmt.Sprintf("on %s: externalTrafficPolicy is Local, so only nodes with endpoints serve the Service's external traffic", nameList(epReady))}, nil
	}
	return NodeChoice{}, fmt.Errorf("the cluster has %d Ready nodes and a Service's packets are rewritten on the node where they enter (the client pod's node, or the node that receives NodePort/LoadBalancer traffic): pick it with --node (%s), trace every node with --all-nodes, or let the agent send a test connection with --probe",
		len(ready), nameList(ready))
}

// chooseFromNode picks the node of the --from pod.
func chooseFromNode(t *Target, o NodeOptions) (NodeChoice, error) {
	f := o.From
	switch {
	case o.AllNodes:
		return NodeChoice{}, fmt.Errorf("--from and --all-nodes cannot be used together: --from traces on the node of pod %s (%s)", f.DisplayName(), f.Node)
	case o.Node != "" && o.Node != f.Node:
		return NodeChoice{}, fmt.Errorf("--node %s, but pod %s runs on node %s: drop --node (--from traces on the pod's node)", o.Node, f.DisplayName(), f.Node)
	}
	for _, n := range t.Nodes {
		if n.Name == f.Node && !n.Ready {
			return NodeChoice{}, fmt.Errorf("node %s of pod %s is NotReady, so the agent pod cannot run there: fix the node or pick a pod on a Ready node", f.Node, f.DisplayName())
		}
	}
	return NodeChoice{Nodes: []string{f.Node}, Reason: fmt.Sprintf("on node %s, where pod %s runs (--from)", f.Node, f.DisplayName())}, nil
}

// nameList joins names for a message, eliding long lists.
func nameList(names []string) string {
	const max = 8
	if len(names) == 0 {
		return "none"
	}
	if len(names) > max {
		return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
	}
	return strings.Join(names, ", ")
}
