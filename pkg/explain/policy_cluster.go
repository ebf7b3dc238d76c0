package explain

import (
	"fmt"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// What the plugin finds when it matches a packet against the cluster's
// NetworkPolicy objects (pkg/kube fills these facts; the sentences are
// written here).

// PolicyMatch is one NetworkPolicy selecting the checked pod, matched
// against the packet's peer in the check's direction.
type PolicyMatch struct {
	// Policy is "ns/name".
	Policy string
	// Rules are the policy's ingress (or egress) rules in order; none
	// means the policy admits nothing in this direction.
	Rules []RuleMatch
}

// RuleMatch is one ingress or egress rule of a policy.
type RuleMatch struct {
	// Admits reports that the rule admits the packet (a peer and the
	// ports match).
	Admits bool
	// Peers are the rule's from (to) entries; none means every peer.
	Peers []PeerMatch
	// PortsMatch reports that the rule's ports admit the packet's port
	// (true when the rule lists none).
	PortsMatch bool
	// Ports are the rule's ports as "80/TCP", "http/TCP", "8000-8080/TCP".
	Ports []string
}

// PeerMatch is one from/to entry of a rule.
type PeerMatch struct {
	Matches bool
	// PodSelector and NamespaceSelector are label selectors as kubectl
	// prints them ("role=frontend", "" when absent, "<all>" when empty).
	PodSelector       string
	NamespaceSelector string
	// IPBlock is the entry's CIDR, Except its exceptions.
	IPBlock string
	Except  []string
}

// PolicyPeer is the other side of the packet as the cluster knows it.
type PolicyPeer struct {
	// IP is the peer's address as the policy sees it.
	IP string
	// Pod is "ns/name" when the address is a pod's; "" for nodes,
	// masqueraded sources and addresses outside the cluster.
	Pod string
	// Labels are the peer pod's labels ("app=client,tier=web").
	Labels string
	// NamespaceLabels are the peer pod's namespace's labels; Unknown when
	// the plugin could not read them.
	NamespaceLabels        string
	NamespaceLabelsUnknown bool
	// Port is the packet's destination port as "80/TCP".
	Port string
}

// WithPolicyMatches adds what the cluster's NetworkPolicies say to check i
// of the packet: for a refusal, why no rule of each policy admitted the
// peer; for an admission, which rule did. The reason and notes are
// rewritten from the new facts.
func WithPolicyMatches(rec *record.Packet, i int, matches []PolicyMatch, peer PolicyPeer) {
	ex := rec.Explain
	if ex == nil || i < 0 || i >= len(ex.Policies) {
		return
	}
	c := &ex.Policies[i]
	c.PeerPod = peer.Pod
	if len(matches) > 0 {
		var names []string
		for _, m := range matches {
			names = append(names, m.Policy)
		}
		c.Policies = names
	}
	c.Why = nil
	for _, m := range matches {
		if c.Effect == record.PolicyAdmitted {
			for r, rm := range m.Rules {
				if rm.Admits && (c.Name == "" || c.Namespace+"/"+c.Name == m.Policy) {
					c.Namespace, c.Name = splitName(m.Policy)
					c.Rule = r + 1
					break
				}
			}
			if c.Rule > 0 {
				break
			}
			continue
		}
		c.Why = append(c.Why, policyWhy(c.Direction, m, peer)...)
	}
	refresh(rec)
}

// WithPolicyRule records which rule (1-based) of the admitting policy let
// the packet through, as the plugin read it from the rule's ipsets.
func WithPolicyRule(rec *record.Packet, i, rule int) {
	if rec.Explain == nil || i < 0 || i >= len(rec.Explain.Policies) || rule <= 0 {
		return
	}
	rec.Explain.Policies[i].Rule = rule
	refresh(rec)
}

// WithPolicyPod names the pod ("ns/name") of check i when the rules named
// only its interface.
func WithPolicyPod(rec *record.Packet, i int, pod string) {
	if rec.Explain == nil || i < 0 || i >= len(rec.Explain.Policies) || rec.Explain.Policies[i].Pod != "" {
		return
	}
	rec.Explain.Policies[i].Pod = pod
	refresh(rec)
}

// WithPolicyMissing records that the plugin could not read the policies of
// check i: the reason then says which permission would let it tell why.
func WithPolicyMissing(rec *record.Packet, i int, permission string) {
	if rec.Explain == nil || i < 0 || i >= len(rec.Explain.Policies) {
		return
	}
	rec.Explain.Policies[i].Missing = permission
	refresh(rec)
}

// refresh rewrites the decisive check, the reason and the admission notes
// from the packet's checks.
func refresh(rec *record.Packet) {
	ex := rec.Explain
	var notes []string
	for _, n := range ex.Notes {
		if !isAdmissionNote(n) {
			notes = append(notes, n)
		}
	}
	ex.Notes = notes
	// The refusal decides; else the last policy that admitted the packet;
	// else the last check.
	decisive := len(ex.Policies) - 1
	for i := len(ex.Policies) - 1; i >= 0; i-- {
		if ex.Policies[i].Effect == record.PolicyAdmitted {
			decisive = i
			break
		}
	}
	for i, c := range ex.Policies {
		if c.Effect == record.PolicyRefused || c.Effect == record.PolicyNotReady {
			decisive = i
			break
		}
	}
	d := ex.Policies[decisive]
	ex.Policy = &d
	if (d.Effect == record.PolicyRefused || d.Effect == record.PolicyNotReady) && d.Hop == rec.VerdictHop {
		ex.Reason = PolicyReason(&d)
	}
	for i := range ex.Policies {
		if ex.Policies[i].Effect == record.PolicyAdmitted {
			ex.Notes = append(ex.Notes, PolicyAdmission(&ex.Policies[i]))
		}
	}
}

func isAdmissionNote(n string) bool {
	return strings.HasPrefix(n, "admitted by NetworkPolicy ") || strings.HasPrefix(n, "admitted by the NetworkPolicies (")
}

// policyWhy says why no rule of policy m admitted the peer.
func policyWhy(dir string, m PolicyMatch, peer PolicyPeer) []string {
	if len(m.Rules) == 0 {
		return []string{fmt.Sprintf("%s has no %s rules: it admits no %s to the pods it selects (a default deny)", m.Policy, orText(dir, "such"), orText(dir, "traffic"))}
	}
	var out []string
	for i, r := range m.Rules {
		what := fmt.Sprintf("%s %s rule %d", m.Policy, orText(dir, ""), i+1)
		if !r.PortsMatch {
			out = append(out, fmt.Sprintf("%s admits only port %s, not %s", what, strings.Join(r.Ports, ", "), orText(peer.Port, "this port")))
			continue
		}
		var misses []string
		for _, p := range r.Peers {
			if !p.Matches {
				misses = append(misses, peerMiss(dir, p, peer, namespaceOf(m.Policy)))
			}
		}
		if len(misses) > 0 {
			out = append(out, what+" admits "+strings.Join(misses, "; or "))
		}
	}
	return out
}

// peerMiss says what one from/to entry admits and why the peer is not it.
func peerMiss(dir string, p PeerMatch, peer PolicyPeer, policyNS string) string {
	who := "source"
	if dir == "egress" {
		who = "destination"
	}
	if p.IPBlock != "" {
		s := "ipBlock " + p.IPBlock
		if len(p.Except) > 0 {
			s += " except " + strings.Join(p.Except, ", ")
		}
		return fmt.Sprintf("%s, and the %s %s is not in it", s, who, orText(peer.IP, "address"))
	}
	sel := "pods"
	if p.PodSelector != "" && p.PodSelector != "<all>" {
		sel = "pods with " + p.PodSelector
	}
	switch {
	case p.NamespaceSelector == "":
		sel += " in namespace " + policyNS
	case p.NamespaceSelector == "<all>":
		sel += " in any namespace"
	default:
		sel += " in namespaces with " + p.NamespaceSelector
	}
	if peer.Pod == "" {
		return fmt.Sprintf("%s, and the %s %s is no pod (a node's address, a masqueraded source or an outside client): only an ipBlock can admit it", sel, who, orText(peer.IP, "address"))
	}
	var why []string
	ns := namespaceOf(peer.Pod)
	switch {
	case p.NamespaceSelector == "" && ns != policyNS:
		why = append(why, "it is in namespace "+ns)
	case p.NamespaceSelector != "" && p.NamespaceSelector != "<all>" && peer.NamespaceLabelsUnknown:
		why = append(why, "its namespace "+ns+"'s labels could not be read (grant get on namespaces)")
	case p.NamespaceSelector != "" && p.NamespaceSelector != "<all>":
		why = append(why, fmt.Sprintf("its namespace %s has labels %s", ns, orText(peer.NamespaceLabels, "(none)")))
	}
	if p.PodSelector != "" && p.PodSelector != "<all>" {
		why = append(why, "its labels are "+orText(peer.Labels, "(none)"))
	}
	return fmt.Sprintf("%s, and the %s pod %s does not match: %s", sel, who, peer.Pod, strings.Join(why, ", "))
}

func namespaceOf(nsName string) string {
	ns, _ := splitName(nsName)
	return ns
}
