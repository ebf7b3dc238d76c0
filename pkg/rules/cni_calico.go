package rules

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
)

// Calico (felix, iptables data plane): every rule carries a "cali:<hash>"
// comment (the rule's id, which names nothing). The filter chains dispatch
// per workload interface into cali-tw-<iface> (traffic to the pod: ingress)
// and cali-fw-<iface> (from the pod: egress); those run, tier by tier
// ("Start of tier default" ... "End of tier default. Drop if no policies
// passed packet"), the policy chains cali-pi-<id> (ingress) and
// cali-po-<id> (egress), whose rules set the accept mark 0x10000 for what a
// policy admits ("Return if policy accepted"), and then the namespace and
// service-account profiles cali-pri-* / cali-pro-* ("Drop if no profiles
// matched"). A policy chain's first rule carries the policy's name in a
// second comment: "Policy <ns>/knp.default.<name> ingress" (Kubernetes
// NetworkPolicy, Calico up to v3.29), "KubernetesNetworkPolicy <ns>/<name>
// ingress" (later versions), "NetworkPolicy <ns>/<tier>.<name> egress",
// "GlobalNetworkPolicy <name> ingress". Chain names are the policy's id
// when it fits in 28 characters, else "_" and a hash of it.
const (
	calicoPrefix         = "cali-"
	calicoToWorkload     = "cali-tw-"
	calicoFromWorkload   = "cali-fw-"
	calicoPolicyIn       = "cali-pi-"
	calicoPolicyOut      = "cali-po-"
	calicoProfileIn      = "cali-pri-"
	calicoProfileOut     = "cali-pro-"
	calicoAcceptMark     = 0x10000
	calicoKNPPrefix      = "knp.default."
	calicoKindKubernetes = "KubernetesNetworkPolicy"
)

func calicoChain(chain string) (PolicyFact, bool) {
	if !strings.HasPrefix(chain, calicoPrefix) {
		return PolicyFact{}, false
	}
	f := PolicyFact{CNI: CNICalico, Role: PolicyOther}
	switch {
	case chain == "cali-INPUT" || chain == "cali-FORWARD" || chain == "cali-OUTPUT" ||
		chain == "cali-to-wl-dispatch" || chain == "cali-from-wl-dispatch" ||
		strings.HasPrefix(chain, "cali-to-wl-dispatch-") || strings.HasPrefix(chain, "cali-from-wl-dispatch-"):
		f.Role = PolicyEntry
	case strings.HasPrefix(chain, calicoToWorkload):
		f.Role, f.Direction, f.Iface = PolicyPodFirewall, DirIngress, chain[len(calicoToWorkload):]
	case strings.HasPrefix(chain, calicoFromWorkload):
		f.Role, f.Direction, f.Iface = PolicyPodFirewall, DirEgress, chain[len(calicoFromWorkload):]
	case strings.HasPrefix(chain, calicoPolicyIn):
		f.Role, f.Direction = PolicyJump, DirIngress
	case strings.HasPrefix(chain, calicoPolicyOut):
		f.Role, f.Direction = PolicyJump, DirEgress
	case strings.HasPrefix(chain, calicoProfileIn):
		f.Role, f.Direction, f.Profile = PolicyProfile, DirIngress, chain[len(calicoProfileIn):]
	case strings.HasPrefix(chain, calicoProfileOut):
		f.Role, f.Direction, f.Profile = PolicyProfile, DirEgress, chain[len(calicoProfileOut):]
	}
	return f, true
}

func calicoFact(chain string, r *Rule, o *ruleOptions) (PolicyFact, bool) {
	cf, inChain := calicoChain(chain)
	var jf PolicyFact
	if r != nil && r.Jump != "" {
		jf, _ = calicoChain(r.Jump)
	}
	if !inChain && jf.CNI == "" && !calicoRuleID(o) {
		return PolicyFact{}, false
	}
	if r == nil {
		return cf, true
	}
	f := PolicyFact{CNI: CNICalico, Role: PolicyOther, Direction: cf.Direction, Iface: cf.Iface}
	for _, c := range o.comments {
		if kind, policy, dir, ok := calicoPolicyComment(c); ok && cf.Role == PolicyJump {
			f.Kind, f.Policy, f.Direction = kind, policy, dir
		}
		if tier, ok := strings.CutPrefix(c, "Start of tier "); ok {
			f.Tier = tier
		}
		if rest, ok := strings.CutPrefix(c, "End of tier "); ok {
			f.Tier, _, _ = strings.Cut(rest, ".")
		}
	}
	switch {
	case jf.CNI == CNICalico && jf.Role == PolicyPodFirewall:
		f.Role, f.Direction, f.Iface = PolicyPodFirewall, jf.Direction, jf.Iface
	case jf.CNI == CNICalico && jf.Role == PolicyJump:
		f.Role, f.Direction = PolicyJump, jf.Direction
	case jf.CNI == CNICalico && jf.Role == PolicyProfile:
		f.Role, f.Direction, f.Profile = PolicyProfile, jf.Direction, jf.Profile
	case jf.CNI == CNICalico && jf.Role == PolicyEntry:
		f.Role = PolicyEntry
	case cf.Role == PolicyJump && (markBit(o.setMark, calicoAcceptMark) || o.target == "RETURN" && markBit(o.mark, calicoAcceptMark)):
		f.Role = PolicyRuleMatch
		f.Sets = o.setNames()
	case o.hasComment("Return if policy accepted") || o.hasComment("Return if profile accepted"):
		f.Role = PolicyAdmit
	case o.target == "ACCEPT" && markBit(o.mark, calicoAcceptMark):
		f.Role = PolicyAccept
	case o.target == "DROP" || o.target == "REJECT":
		f.Role = PolicyRefuse
		if strings.Contains(strings.Join(o.comments, " "), "INVALID") || strings.Contains(r.Text, "--ctstate INVALID") {
			f.Role = PolicyStateful
		}
	case o.target == "ACCEPT" && strings.Contains(r.Text, "RELATED,ESTABLISHED"):
		f.Role = PolicyStateful
	case o.target == "NFLOG" || o.target == "LOG":
		f.Role = PolicyLog
	}
	return f, true
}

// calicoRuleID reports whether the rule carries Calico's "cali:<id>"
// comment (Calico's rules in the base chains).
func calicoRuleID(o *ruleOptions) bool {
	for _, c := range o.comments {
		if strings.HasPrefix(c, "cali:") {
			return true
		}
	}
	return false
}

// calicoPolicyComment reads "KIND ID ingress|egress" (KIND "Policy" before
// v3.30): the policy as "ns/name" for namespaced kinds (a Kubernetes
// NetworkPolicy without Calico's "knp.default." prefix).
func calicoPolicyComment(c string) (kind, policy, dir string, ok bool) {
	f := strings.Fields(c)
	if len(f) != 3 || (f[2] != DirIngress && f[2] != DirEgress) {
		return "", "", "", false
	}
	kind, id, dir := f[0], f[1], f[2]
	if kind == "Profile" || !strings.HasSuffix(kind, "Policy") {
		return "", "", "", false
	}
	ns, name, namespaced := strings.Cut(id, "/")
	if !namespaced {
		return kind, id, dir, true
	}
	if n, ok := strings.CutPrefix(name, calicoKNPPrefix); ok {
		kind, name = calicoKindKubernetes, n
	} else if kind == "Policy" {
		kind = "NetworkPolicy"
	}
	return kind, ns + "/" + name, dir, true
}

// CalicoWorkloadIface returns the host-side interface Calico's CNI plugin
// names for a pod (the default "cali" prefix and the first 11 hex digits
// of sha1("namespace.pod")), so cali-tw-<iface> chains map to pods.
func CalicoWorkloadIface(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}
