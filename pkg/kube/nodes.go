package kube

import (
	"fmt"
	"slices"
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
	// Follow adds every Ready node hosting an endpoint, so the packet is
	// followed to the endpoint's node (on by default; --no-follow).
	Follow bool
	// MaxNodes caps how many nodes get an agent (0: DefaultMaxNodes).
	MaxNodes int
}

// DefaultMaxNodes is the default --max-nodes. Every node costs a
// privileged pod and two long-lived API streams (log and attach) for the
// session; endpoints on more than a handful of nodes add little to one
// packet's story (kube-proxy programs every node alike), so following stops
// there unless asked for more.
const DefaultMaxNodes = 10

// Roles a node plays in a session (NodeRole.Roles).
const (
	RoleClient   = "client"   // the test connection starts there (--probe, --from)
	RoleEntry    = "entry"    // the traffic enters there (--node, or the only node)
	RoleEndpoint = "endpoint" // hosts endpoints: traces the packets arriving for them
	RoleAll      = "any"      // --all-nodes: every node, whatever it does
)

// NodeRole is one chosen node and what it plays.
type NodeRole struct {
	Node  string
	Roles []string
	// Endpoints counts the Service's ready endpoints on the node.
	Endpoints int
}

// NodeChoice is the nodes to trace on and why, in words for stderr.
type NodeChoice struct {
	Nodes  []string
	Reason string
	// Roles says what each of Nodes plays, in the same order.
	Roles []NodeRole
	// Follow is set when the endpoint nodes were added: their agents trace
	// the packets arriving for their endpoints.
	Follow bool
}

// HasRole reports whether node plays role.
func (c NodeChoice) HasRole(node, role string) bool {
	for _, r := range c.Roles {
		if r.Node == node {
			for _, x := range r.Roles {
				if x == role {
					return true
				}
			}
		}
	}
	return false
}

// Probes reports whether node sends the test connection (--probe, --from):
// the client's node when one plays the client, else every node.
func (c NodeChoice) Probes(node string) bool {
	for _, r := range c.Roles {
		if slices.Contains(r.Roles, RoleClient) {
			return c.HasRole(node, RoleClient)
		}
	}
	return true
}

// Describe says which node plays which part, for stderr:
// "svctrace-node (client), svctrace-node2 (endpoint: 2 endpoints)".
func (c NodeChoice) Describe() string {
	parts := make([]string, len(c.Roles))
	for i, r := range c.Roles {
		roles := strings.Join(r.Roles, ", ")
		if r.Endpoints > 0 {
			roles += fmt.Sprintf(": %d endpoint(s)", r.Endpoints)
		}
		parts[i] = fmt.Sprintf("%s (%s)", r.Node, roles)
	}
	return strings.Join(parts, ", ")
}

// ChooseNodes picks the nodes to run agents on. It is pure: it uses the
// nodes Resolve listed into t.Nodes.
//
// Service traffic is rewritten on the node where it enters netfilter (the
// client pod's node, or the node receiving NodePort/LoadBalancer traffic),
// so that is where a trace is useful. Without --node, --all-nodes or --probe
// that node is only known for single-node clusters and for external traffic
// to externalTrafficPolicy: Local Services; otherwise the user must say.
//
// With o.Follow, every Ready node hosting an endpoint joins the chosen
// one(s): a packet DNATed on its client's node is traced again where it
// arrives. o.MaxNodes caps the total (the endpoint nodes beyond it are
// named in the reason); --all-nodes beyond the cap is an error.
func ChooseNodes(t *Target, o NodeOptions) (NodeChoice, error) {
	max := o.MaxNodes
	if max <= 0 {
		max = DefaultMaxNodes
	}
	c, err := choosePrimary(t, o)
	if err != nil {
		return c, err
	}
	perNode := map[string]int{}
	for _, ep := range t.Endpoints {
		if ep.Ready && ep.Node != "" {
			perNode[ep.Node]++
		}
	}
	role := RoleEntry
	switch {
	case o.AllNodes:
		role = RoleAll
	case o.Probe || o.From != nil:
		role = RoleClient
	case t.ExternalLocal && len(c.Nodes) > 1:
		role = RoleEndpoint
	}
	if o.AllNodes && len(c.Nodes) > max {
		return NodeChoice{}, fmt.Errorf("--all-nodes would start %d agents, more than --max-nodes %d: raise --max-nodes, or pick nodes with --node", len(c.Nodes), max)
	}
	chosen := map[string]bool{}
	for _, n := range c.Nodes {
		chosen[n] = true
		roles := []string{role}
		if perNode[n] > 0 && role != RoleEndpoint && o.Follow {
			roles = append(roles, RoleEndpoint)
		}
		c.Roles = append(c.Roles, NodeRole{Node: n, Roles: roles, Endpoints: perNode[n]})
	}
	if !o.Follow {
		return c, nil
	}
	c.Follow = true
	if o.AllNodes {
		return c, nil
	}
	isReady := map[string]bool{}
	for _, n := range t.Nodes {
		isReady[n.Name] = n.Ready
	}
	var added, left []string
	for _, n := range t.EndpointNodes() {
		switch {
		case chosen[n] || !isReady[n]:
		case len(c.Nodes) >= max:
			left = append(left, n)
		default:
			chosen[n] = true
			added = append(added, n)
			c.Nodes = append(c.Nodes, n)
			c.Roles = append(c.Roles, NodeRole{Node: n, Roles: []string{RoleEndpoint}, Endpoints: perNode[n]})
		}
	}
	if len(added) > 0 {
		c.Reason += fmt.Sprintf(", following the packets to the endpoints on %s", nameList(added))
	}
	if len(left) > 0 {
		c.Reason += fmt.Sprintf("; not following to %s (--max-nodes %d)", nameList(left), max)
	}
	return c, nil
}

// choosePrimary picks the node(s) where the traffic starts or enters.
func choosePrimary(t *Target, o NodeOptions) (NodeChoice, error) {
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
