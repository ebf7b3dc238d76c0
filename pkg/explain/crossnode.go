package explain

import (
	"fmt"
	"slices"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// Cluster is what the plugin knows about the cluster around a live packet:
// the facts WithCluster needs to explain a path across nodes.
type Cluster struct {
	// NodeByIP maps node addresses to node names.
	NodeByIP map[string]string
	// EndpointNodes are the nodes hosting a ready endpoint of the Service.
	EndpointNodes []string
	// ExternalLocal is externalTrafficPolicy: Local.
	ExternalLocal bool
	// ClusterIPs are the Service's cluster IPs: other traced addresses
	// (node addresses for NodePorts, load-balancer and external IPs) are
	// external traffic.
	ClusterIPs []string
}

// WithCluster explains a live packet as the cluster sees it: its moves
// between nodes (and one that never arrived), the source the endpoint's
// node observed against the one the first node's rules predicted, why the
// source was or was not masqueraded, NodePort traffic forwarded to another
// node, externalTrafficPolicy: Local drops, hairpin connections and packets
// sent to an endpoint directly.
func WithCluster(rec *record.Packet, c Cluster) {
	ex := rec.Explain
	if ex == nil {
		ex = &record.Explain{}
		defer func() {
			if ex.Summary != "" || ex.Reason != "" || len(ex.Notes) > 0 || ex.SourceSeenByEndpoint != "" {
				rec.Explain = ex
			}
		}()
	}
	src := record.Host(rec.Src)
	entry := rec.Node
	external := isExternal(rec, c)

	var moves []string
	for _, x := range rec.Crossings {
		switch {
		case x.Arrived:
			moves = append(moves, fmt.Sprintf("left %s via %s and arrived at %s on %s", x.From, leftBy(x), x.To, orUnknown(x.In)))
		case x.Traced:
			ex.Reason = fmt.Sprintf("left %s via %s and never reached %s: the agent there saw no packet for %s within the join window; check the route to it, the MTU and any firewall between the nodes",
				x.From, leftBy(x), x.To, x.Dst)
		default:
			ex.Notes = append(ex.Notes, fmt.Sprintf("it left %s via %s for %s, which is not traced (following is off or the node cap was reached): its path there is not shown", x.From, leftBy(x), x.To))
		}
	}
	if len(moves) > 0 {
		ex.Summary = withVerdict(ex.Summary, strings.Join(moves, "; "), rec.Verdict+" on "+lastNode(rec))
	}

	observed, ok := observedSource(rec)
	if ok {
		predicted := ex.SourceSeenByEndpoint
		ex.SourceSeenByEndpoint = observed
		if predicted != "" && predicted != observed {
			ex.SourcePredicted = predicted
			ex.Notes = append(ex.Notes, fmt.Sprintf("%s's rules predicted the endpoint would see %s, but %s observed %s: something on the way rewrote the source", entry, predicted, rec.EndpointNode, observed))
		}
		masq := hasSourceNAT(rec)
		switch {
		case ex.Retransmit:
			// The nat table skipped it: its rules say nothing of its source.
			ex.Notes = append(ex.Notes, fmt.Sprintf("conntrack gave this retransmission the first SYN's translation, so the endpoint on %s sees %s", rec.EndpointNode, observed))
		case external && masq && entry != rec.EndpointNode:
			ex.Notes = append(ex.Notes, fmt.Sprintf("external traffic entering %s was forwarded to the endpoint on %s (externalTrafficPolicy: Cluster) and source-NATed to %s's address %s, so the reply returns through %s: the endpoint sees %s, not the client %s; externalTrafficPolicy: Local would keep the client's address but serve only on %s",
				entry, rec.EndpointNode, entry, observed, entry, observed, src, nodeList(c.EndpointNodes)))
		case masq:
			not := ", not " + src
			if observed == src {
				not = ", the address the node sent it from"
			}
			ex.Notes = append(ex.Notes, fmt.Sprintf("masqueraded on %s (%s): replies must come back through %s, so the endpoint on %s sees %s%s",
				entry, orUnknown(masqMarkReason(rec)), entry, rec.EndpointNode, observed, not))
		case observed == src:
			ex.Notes = append(ex.Notes, fmt.Sprintf("not masqueraded on %s: nothing marked the connection for SNAT (a pod source, inside the cluster CIDR, reaching a ClusterIP needs none), so the endpoint on %s sees the client %s itself",
				entry, rec.EndpointNode, src))
		}
	}

	if c.ExternalLocal && external {
		local := slices.Contains(c.EndpointNodes, entry)
		switch {
		case (rec.Verdict == record.VerdictDrop || rec.Verdict == record.VerdictReject) && !local:
			ex.Reason = strings.TrimSpace(ex.Reason + fmt.Sprintf(" (externalTrafficPolicy: Local: %s has no local endpoint, so kube-proxy drops external traffic there; nodes with one: %s: send the traffic to one of them, or use externalTrafficPolicy: Cluster at the cost of the client's address)",
				entry, nodeList(c.EndpointNodes)))
		case rec.Verdict == record.VerdictAccept && local:
			ex.Notes = append(ex.Notes, fmt.Sprintf("externalTrafficPolicy: Local: %s serves this traffic with its own endpoint and keeps the client's address", entry))
		}
	}

	if ep := record.Host(rec.Endpoint); ep != "" && ep == src {
		ex.Notes = append(ex.Notes, fmt.Sprintf("hairpin: %s reached itself through its Service; kube-proxy masquerades such a connection (its KUBE-SEP chain marks source %s) so the reply goes back through the node, and the pod sees %s; the node's bridge must send the packet back out the port it came in on (hairpin mode)",
			orText(rec.EndpointPod, src), src, orUnknown(ex.SourceSeenByEndpoint)))
	}

	if rec.DirectToEndpoint {
		ex.Notes = append(ex.Notes, fmt.Sprintf("caught on %s by the rule for the endpoint's own address, and no traced node sent it through the Service: it was addressed to %s directly (a connection straight to the pod's address, or from a node svctrace does not trace), so no Service rule chose this endpoint",
			rec.Node, rec.Dst))
	}
}

// leftBy says how a packet left a node: "eth0 for 10.199.0.3 (route ...)".
func leftBy(x record.Crossing) string {
	s := orUnknown(x.Out) + " for " + orText(x.Via, record.Host(x.Dst))
	if x.Route != "" {
		s += " (route " + x.Route + ")"
	}
	return s
}

// withVerdict continues the first node's summary, which closes with the
// verdict there (a packet that left the node was accepted by it), with
// what happened after it and the final verdict.
func withVerdict(summary, middle, verdict string) string {
	base, ok := strings.CutSuffix(summary, record.VerdictAccept)
	if !ok {
		base += "; "
	}
	return base + middle + "; " + verdict
}

// observedSource is the source of the packet as the endpoint's node saw it
// arrive, when that node's leg was traced.
func observedSource(rec *record.Packet) (string, bool) {
	if rec.EndpointNode == "" {
		return "", false
	}
	src := rec.Src
	for i, h := range rec.Hops {
		if h.Src != "" {
			src = h.Src
		}
		if h.Node == rec.EndpointNode && i > 0 && rec.Hops[i-1].Node != h.Node {
			return record.Host(src), true
		}
	}
	return "", false
}

func hasSourceNAT(rec *record.Packet) bool {
	for _, n := range rec.NAT {
		if n.Kind == record.NATSNAT || n.Kind == record.NATMasquerade {
			return true
		}
	}
	return false
}

// isExternal reports traffic to a traced address that is not a cluster IP
// (a NodePort on a node address, a load-balancer or external IP).
func isExternal(rec *record.Packet, c Cluster) bool {
	dst := record.Host(rec.Dst)
	if len(c.ClusterIPs) == 0 && c.NodeByIP[dst] == "" {
		return false
	}
	return rec.TracedBy != record.TracedEndpoint && !slices.Contains(c.ClusterIPs, dst)
}

func lastNode(rec *record.Packet) string {
	if n := len(rec.Nodes); n > 0 {
		return rec.Nodes[n-1]
	}
	return rec.Node
}

func nodeList(nodes []string) string {
	if len(nodes) == 0 {
		return "none"
	}
	return strings.Join(nodes, ", ")
}

// masqMarkReason is why the first node marked the connection for
// masquerade: its masquerade-mark hop's meaning (markMeaning) without the
// action.
func masqMarkReason(rec *record.Packet) string {
	for _, h := range rec.Hops {
		if h.Role == record.RoleMasqueradeMark {
			return strings.TrimSuffix(h.Meaning, ": mark for masquerade")
		}
	}
	return ""
}
