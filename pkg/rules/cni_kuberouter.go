package rules

import (
	"crypto/sha256"
	"encoding/base32"
	"strconv"
	"strings"
)

// kube-router's NetworkPolicy controller (--run-firewall), iptables and
// nftables implementations alike: top-level chains hooked from INPUT,
// FORWARD and OUTPUT jump, per local pod, into the pod's firewall chain
// (KUBE-POD-FW-<hash>, comment "ns/pod in" for traffic to the pod, "ns/pod
// out" for traffic from it); that chain runs the pod's policies'
// KUBE-NWPLCY-<hash> chains (comment "ns/policy policy"), whose rules set
// mark 0x10000 for traffic a policy rule admits ("ns/policy ingress pods",
// "... egress cidr", ...), and ends with a REJECT ("ns/pod reject") of
// unmarked traffic, then the "set netpol-ok mark" rule (0x20000) that the
// top-level chains ACCEPT. Before v2.11 the comments were sentences ("rule
// to jump traffic destined to POD name:web namespace: default to chain
// ...", "run through nw policy allow-app", "rule to ACCEPT traffic from
// source pods to dest pods selected by policy name allow-app namespace
// default"); both forms are read.
//
// Chain names hash the names together with the sync's timestamp, so they
// cannot be mapped back by hashing; the comments name the pods and
// policies. The ipsets a policy rule matches hash only the policy and the
// rule's index (KubeRouterPolicySet), so a plugin that knows the cluster's
// NetworkPolicies can tell which ingress or egress rule admitted a packet.
const (
	kubeRouterPodFwPrefix  = "KUBE-POD-FW-"
	kubeRouterPolicyPrefix = "KUBE-NWPLCY-"
	kubeRouterDefault      = "KUBE-NWPLCY-DEFAULT"
	kubeRouterCommon       = "KUBE-NWPLCY-COMMON"
	kubeRouterTail         = "KUBE-NWPLCY-TAIL"
	kubeRouterInput        = "KUBE-ROUTER-INPUT"
	kubeRouterForward      = "KUBE-ROUTER-FORWARD"
	kubeRouterOutput       = "KUBE-ROUTER-OUTPUT"

	kubeRouterMatchMark = 0x10000 // a policy rule (or the default chain) matched
	kubeRouterOKMark    = 0x20000 // the pod's firewall admitted the packet
)

// isKubeRouterChain reports whether chain is one of kube-router's
// NetworkPolicy chains (they share kube-proxy's "KUBE-" prefix).
func isKubeRouterChain(chain string) bool {
	_, ok := kubeRouterChain(chain)
	return ok
}

func kubeRouterChain(chain string) (PolicyFact, bool) {
	f := PolicyFact{CNI: CNIKubeRouter}
	switch {
	case chain == kubeRouterInput || chain == kubeRouterForward || chain == kubeRouterOutput:
		f.Role = PolicyEntry
	case chain == kubeRouterDefault:
		f.Role = PolicyNoPolicy
	case chain == kubeRouterCommon:
		f.Role = PolicyStateful
	case chain == kubeRouterTail:
		f.Role = PolicyAccept
	case strings.HasPrefix(chain, kubeRouterPodFwPrefix):
		f.Role = PolicyPodFirewall
	case strings.HasPrefix(chain, kubeRouterPolicyPrefix):
		f.Role = PolicyJump
	default:
		return PolicyFact{}, false
	}
	return f, true
}

func kubeRouterFact(chain string, r *Rule, o *ruleOptions) (PolicyFact, bool) {
	cf, inChain := kubeRouterChain(chain)
	var jf PolicyFact
	if r != nil && r.Jump != "" {
		jf, _ = kubeRouterChain(r.Jump)
	}
	if !inChain && jf.CNI == "" {
		return PolicyFact{}, false
	}
	f := PolicyFact{CNI: CNIKubeRouter, Role: PolicyOther}
	if r == nil {
		return cf, true
	}
	comment := ""
	if len(o.comments) > 0 {
		comment = o.comments[0]
	}
	switch {
	case jf.Role == PolicyEntry || strings.HasPrefix(comment, "kube-router netpol"):
		f.Role = PolicyEntry
	case jf.Role == PolicyPodFirewall:
		f.Role = PolicyPodFirewall
		f.Pod, f.Direction = kubeRouterPodJump(comment, o)
	case jf.Role == PolicyNoPolicy && cf.Role == PolicyPodFirewall:
		f.Role = PolicyNoPolicy
		f.Direction = kubeRouterAddrDirection(o)
		if strings.Contains(comment, "ingress") {
			f.Direction = DirIngress
		} else if strings.Contains(comment, "egress") {
			f.Direction = DirEgress
		}
	case jf.Role == PolicyJump:
		f.Role = PolicyJump
		f.Direction = kubeRouterAddrDirection(o)
		if ns, name, kind, ok := kubeRouterIDComment(comment); ok && kind == "policy" {
			f.Policy = ns + "/" + name
		} else if name, ok := strings.CutPrefix(comment, "run through nw policy "); ok {
			f.Policy = name // its namespace is the pod's: see FirewallPolicies
		}
	case jf.Role == PolicyStateful:
		f.Role = PolicyStateful
	case jf.Role == PolicyAccept:
		f.Role = PolicyAccept
	case cf.Role == PolicyJump && markBit(o.setMark, kubeRouterMatchMark) && !inDefault(chain):
		f.Role = PolicyRuleMatch
		f.Policy, f.Direction, f.Peer = kubeRouterRuleComment(comment)
		f.Sets = o.setNames()
	case cf.Role == PolicyJump && o.target == "RETURN" && markBit(o.mark, kubeRouterMatchMark):
		// The RETURN after each policy rule's MARK: back to the pod's chain.
		f.Role = PolicyRuleMatch
		f.Policy, f.Direction, f.Peer = kubeRouterRuleComment(comment)
		f.Sets = o.setNames()
	case chain == kubeRouterDefault:
		f.Role = PolicyNoPolicy
	case chain == kubeRouterCommon || strings.Contains(r.Text, "--ctstate") || strings.Contains(r.Text, "ct state "):
		// Up to v2.1 the pod's chain itself held these conntrack rules.
		f.Role = PolicyStateful
	case o.target == "REJECT" || o.target == "DROP":
		f.Role = PolicyRefuse
		f.Pod = kubeRouterPodComment(comment)
		if chain == kubeRouterTail {
			f.Role = PolicyNotReady
		}
	case o.target == "NFLOG" || o.target == "LOG":
		f.Role = PolicyLog
		f.Pod = kubeRouterPodComment(comment)
	case o.target == "ACCEPT" && cf.Role == PolicyPodFirewall && (strings.Contains(r.Text, "--src-type LOCAL") || strings.Contains(r.Text, "fib saddr type local")):
		// "from local node": the node may always reach its pods.
		f.Role = PolicyLocalNode
	case o.target == "ACCEPT" && markBit(o.mark, kubeRouterOKMark):
		f.Role = PolicyAccept
	case markBit(o.setMark, kubeRouterOKMark):
		f.Role = PolicyAdmit
	case o.target == "RETURN" && cf.Role == PolicyEntry:
		f.Role = PolicyBypass
	}
	if f.Pod == "" && cf.Role == PolicyPodFirewall {
		f.Pod = kubeRouterPodComment(comment)
	}
	return f, true
}

func inDefault(chain string) bool {
	return chain == kubeRouterDefault || chain == kubeRouterCommon || chain == kubeRouterTail
}

// kubeRouterAddrDirection: a rule limited to "-d POD" concerns traffic to
// the pod (ingress), "-s POD" traffic from it (egress).
func kubeRouterAddrDirection(o *ruleOptions) string {
	switch {
	case o.dst != "" && o.src == "":
		return DirIngress
	case o.src != "" && o.dst == "":
		return DirEgress
	}
	return ""
}

// kubeRouterPodJump reads the pod and direction of a jump into a pod's
// firewall chain.
func kubeRouterPodJump(comment string, o *ruleOptions) (pod, dir string) {
	if ns, name, kind, ok := kubeRouterIDComment(comment); ok {
		switch kind {
		case "in":
			return ns + "/" + name, DirIngress
		case "out":
			return ns + "/" + name, DirEgress
		}
	}
	pod = kubeRouterPodComment(comment)
	switch {
	case strings.HasPrefix(comment, "rule to jump traffic destined to POD"):
		dir = DirIngress
	case strings.HasPrefix(comment, "rule to jump traffic from POD"):
		dir = DirEgress
	default:
		dir = kubeRouterAddrDirection(o)
	}
	return pod, dir
}

// kubeRouterPodComment reads the pod a comment names: "ns/pod KIND"
// (v2.11+) or "... POD name:NAME namespace: NS ..." (earlier).
func kubeRouterPodComment(comment string) string {
	if ns, name, kind, ok := kubeRouterIDComment(comment); ok {
		switch kind {
		case "in", "out", "log-drop", "reject":
			return ns + "/" + name
		}
		return ""
	}
	_, rest, ok := strings.Cut(comment, "POD name:")
	if !ok {
		return ""
	}
	name, rest, ok := strings.Cut(rest, " namespace: ")
	if !ok {
		return ""
	}
	ns, _, _ := strings.Cut(rest, " ")
	if name == "" || ns == "" {
		return ""
	}
	return ns + "/" + name
}

// kubeRouterIDComment splits a v2.11+ "ns/name KIND" comment.
func kubeRouterIDComment(comment string) (ns, name, kind string, ok bool) {
	id, kind, ok := strings.Cut(comment, " ")
	if !ok {
		return "", "", "", false
	}
	ns, name, ok = strings.Cut(id, "/")
	if !ok || !isLabel(ns) || name == "" {
		return "", "", "", false
	}
	return ns, name, kind, true
}

// kubeRouterRuleComment reads a policy chain rule's comment: its policy,
// direction and what it matches the peer on.
func kubeRouterRuleComment(comment string) (policy, dir, peer string) {
	if ns, name, kind, ok := kubeRouterIDComment(comment); ok {
		policy = ns + "/" + name
		d, p, _ := strings.Cut(kind, " ")
		switch d {
		case DirIngress, DirEgress:
			dir = d
		}
		if p, np := strings.CutSuffix(p, " np"); np {
			return policy, dir, p + " named-port"
		}
		return policy, dir, p
	}
	// "rule to ACCEPT traffic from source pods to dest pods selected by
	// policy name[:] NAME namespace NS"
	rest, ok := strings.CutPrefix(comment, "rule to ACCEPT traffic from ")
	if !ok {
		return "", "", ""
	}
	what, sel, ok := strings.Cut(rest, " selected by policy name")
	if !ok {
		return "", "", ""
	}
	sel = strings.TrimPrefix(strings.TrimPrefix(sel, ":"), " ")
	name, ns, ok := strings.Cut(sel, " namespace ")
	if ok && name != "" && ns != "" {
		policy = ns + "/" + name
	}
	from, to, _ := strings.Cut(what, " to ")
	switch {
	case to == "dest pods":
		dir = DirIngress
		peer = map[string]string{"source pods": "pods", "all sources": "any", "specified ipBlocks": "cidr"}[from]
	case from == "source pods":
		dir = DirEgress
		peer = map[string]string{"dest pods": "pods", "all destinations": "any", "specified ipBlocks": "cidr"}[to]
	}
	return policy, dir, peer
}

// Peer kinds of KubeRouterPolicySet.
const (
	KubeRouterSetPods    = "pod"
	KubeRouterSetIPBlock = "ipblock"
)

// KubeRouterPolicySet returns the ipset kube-router matches for one rule of
// a NetworkPolicy: for direction ingress, the source pods ("pod") or
// ipBlocks ("ipblock") of ingress rule index (0-based); for egress, the
// destination pods or ipBlocks of egress rule index. index -1 gives the
// policy's own target-pod set (KUBE-DST- for ingress, KUBE-SRC- for
// egress). family is 4 or 6 (IPv6 sets are named "inet6:...").
func KubeRouterPolicySet(namespace, name, direction string, index int, peer string, family uint8) string {
	fam := "IPv4"
	if family == FamilyIPv6 {
		fam = "IPv6"
	}
	var prefix, key string
	switch {
	case index < 0 && direction == DirIngress:
		prefix, key = "KUBE-DST-", namespace+name+fam
	case index < 0:
		prefix, key = "KUBE-SRC-", namespace+name+fam
	case direction == DirIngress:
		prefix, key = "KUBE-SRC-", namespace+name+"ingressrule"+strconv.Itoa(index)+fam+peer
	default:
		prefix, key = "KUBE-DST-", namespace+name+"egressrule"+strconv.Itoa(index)+fam+peer
	}
	sum := sha256.Sum256([]byte(key))
	set := prefix + base32.StdEncoding.EncodeToString(sum[:])[:16]
	if family == FamilyIPv6 {
		return "inet6:" + set
	}
	return set
}
