package rules

import (
	"strings"
)

// Network plugins whose NetworkPolicy rules the package recognises
// (PolicyFact.CNI).
const (
	CNIKubeRouter = "kube-router"
	CNICalico     = "calico"
	CNICilium     = "cilium"
)

// FirewallEntryChains are the filter-table chains each plugin hangs its
// NetworkPolicy enforcement on, by plugin: where they exist tells which
// iptables backend holds a node's policy rules.
var FirewallEntryChains = [...]struct{ CNI, Chain string }{
	{CNIKubeRouter, kubeRouterForward},
	{CNICalico, "cali-FORWARD"},
	{CNICilium, "CILIUM_FORWARD"},
}

// Directions of a NetworkPolicy check, as the policy API names them:
// ingress is traffic the selected pod receives, egress traffic it sends.
const (
	DirIngress = "ingress"
	DirEgress  = "egress"
)

// PolicyRole is what a rule does in a network plugin's NetworkPolicy
// enforcement.
type PolicyRole string

// Policy roles (PolicyFact.Role).
const (
	PolicyRoleNone PolicyRole = ""
	// PolicyEntry: a base chain hands traffic to the plugin's chains.
	PolicyEntry PolicyRole = "entry"
	// PolicyPodFirewall: a jump into one pod's firewall chain (Pod,
	// Direction; Calico: Iface).
	PolicyPodFirewall PolicyRole = "pod-firewall"
	// PolicyJump: a jump into one NetworkPolicy's chain (Policy; Direction
	// when the rule or chain limits it to one).
	PolicyJump PolicyRole = "policy"
	// PolicyNoPolicy: no policy selects the pod in Direction, so the
	// traffic is allowed by default.
	PolicyNoPolicy PolicyRole = "no-policy"
	// PolicyRuleMatch: a rule of a policy's chain; a packet that matches it
	// is admitted by that policy (Policy, Direction, Peer, Sets).
	PolicyRuleMatch PolicyRole = "policy-rule"
	// PolicyRefuse: drops or rejects what no policy admitted (Pod or Iface,
	// Direction when known).
	PolicyRefuse PolicyRole = "refuse"
	// PolicyNotReady refuses traffic of a pod whose firewall is not
	// programmed yet (kube-router --netpol-default-deny).
	PolicyNotReady PolicyRole = "not-ready"
	// PolicyLog logs traffic about to be refused.
	PolicyLog PolicyRole = "log"
	// PolicyAdmit: the pod's firewall (a Calico tier) admitted the packet.
	PolicyAdmit PolicyRole = "admit"
	// PolicyAccept accepts traffic the firewall chains admitted.
	PolicyAccept PolicyRole = "accept"
	// PolicyStateful: conntrack: established or related traffic accepted,
	// invalid traffic dropped.
	PolicyStateful PolicyRole = "stateful"
	// PolicyLocalNode: traffic from the node itself to the pod is allowed.
	PolicyLocalNode PolicyRole = "local-node"
	// PolicyProfile: Calico's per-namespace or service-account profile,
	// which applies when no policy decided (Profile).
	PolicyProfile PolicyRole = "profile"
	// PolicyBypass: traffic the plugin's firewall leaves to others
	// (Service ranges, node ports, ...).
	PolicyBypass PolicyRole = "bypass"
	// PolicyProxy: Cilium redirects the traffic to its L7 proxy (Proxy).
	PolicyProxy PolicyRole = "proxy"
	// PolicyOther: a rule of the plugin with no part in policy decisions
	// (marks, masquerade, ...).
	PolicyOther PolicyRole = "other"
)

// PolicyFact is what a rule (or a chain name) says about NetworkPolicy
// enforcement, read from the plugin's chain names and rule comments.
type PolicyFact struct {
	CNI  string
	Role PolicyRole
	// Direction is DirIngress or DirEgress when the rule concerns one.
	Direction string
	// Pod is "ns/name" of the pod whose firewall this is, when the rules
	// name it.
	Pod string
	// Policy is "ns/name" of a NetworkPolicy (a Calico
	// GlobalNetworkPolicy: its name), when the rules name it.
	Policy string
	// Kind is Calico's policy kind (KubernetesNetworkPolicy,
	// NetworkPolicy, GlobalNetworkPolicy, ...) when the comment says.
	Kind string
	// Peer is what a policy rule matches the other side on: "pods",
	// "any", "cidr" (kube-router), with " named-port" when a named port
	// is involved.
	Peer string
	// Sets are the ipsets a rule matches, in rule order.
	Sets []string
	// Iface is the workload interface of a Calico per-endpoint chain.
	Iface string
	// Tier is the Calico tier a rule starts or ends.
	Tier string
	// Profile is the Calico profile a chain belongs to (kns.NAMESPACE,
	// ksa.NAMESPACE.NAME).
	Profile string
	// Proxy is the Cilium L7 proxy traffic is redirected to.
	Proxy string
}

// PolicyRuleFact says what rule r of chain means for NetworkPolicy
// enforcement (kube-router, Calico, Cilium), from the chain's name and the
// rule's comments, matches and target. The zero PolicyFact means the rule
// belongs to no recognised plugin. r may be nil: then only the chain's
// name speaks (see PolicyChainFact).
func PolicyRuleFact(chain string, r *Rule) PolicyFact {
	var o ruleOptions
	if r != nil {
		o = readOptions(r)
	}
	if f, ok := kubeRouterFact(chain, r, &o); ok {
		return f
	}
	if f, ok := calicoFact(chain, r, &o); ok {
		return f
	}
	if f, ok := ciliumFact(chain, r, &o); ok {
		return f
	}
	return PolicyFact{}
}

// PolicyChainFact says what a chain is from its name alone: a pod's
// firewall chain, a policy chain, a Calico profile, a plugin's entry
// chain. The zero PolicyFact for chains of no recognised plugin.
func PolicyChainFact(chain string) PolicyFact {
	if f, ok := kubeRouterChain(chain); ok {
		return f
	}
	if f, ok := calicoChain(chain); ok {
		return f
	}
	if strings.HasPrefix(chain, ciliumPrefix) {
		return PolicyFact{CNI: CNICilium, Role: PolicyEntry}
	}
	return PolicyFact{}
}

// ruleOptions are the parts of a rule the plugins' rules are told apart by.
type ruleOptions struct {
	comments []string
	sets     []setMatch
	src, dst string // -s / -d
	setMark  string // MARK --set-xmark / --set-mark value
	mark     string // -m mark --mark value (with "!" when negated)
	physdev  bool
	target   string // upper-cased target
	jump     string
}

type setMatch struct {
	name, dir string // dir: "src" / "dst"
	negated   bool
}

// readOptions reads a rule's comments (all of them: Rule.Comment holds only
// the first), ipset matches, addresses and marks, from iptables -S text or
// from an nft rule's comment.
func readOptions(r *Rule) ruleOptions {
	o := ruleOptions{target: strings.ToUpper(r.Target), jump: r.Jump}
	s := r.Text
	if !strings.HasPrefix(s, "-A ") {
		readNftOptions(r, &o)
		return o
	}
	negate := false
	for i := 0; i < len(s); {
		tok, next, err := iptToken(s, i)
		if err != nil || tok == "" {
			break
		}
		i = next
		val := func() string {
			v, n, err := iptToken(s, i)
			if err != nil {
				return ""
			}
			i = n
			return v
		}
		switch tok {
		case "!":
			negate = true
			continue
		case "--comment":
			o.comments = append(o.comments, unquoteIpt(val()))
		case "--match-set":
			name := val()
			o.sets = append(o.sets, setMatch{name: name, dir: val(), negated: negate})
		case "-s", "--source":
			o.src = val()
		case "-d", "--destination":
			o.dst = val()
		case "--set-xmark", "--set-mark":
			o.setMark = val()
		case "--mark":
			v := val()
			if negate {
				v = "!" + v
			}
			o.mark = v
		case "--physdev-is-bridged":
			o.physdev = true
		}
		negate = false
	}
	return o
}

// Comments returns all of a rule's comments, in order (Rule.Comment holds
// only the first; Calico rules carry an id and a description).
func Comments(r *Rule) []string {
	if r == nil {
		return nil
	}
	return readOptions(r).comments
}

// readNftOptions reads an nft rule's comment, addresses and marks, as nft
// lists iptables-nft rules ("meta mark set mark or 0x10000", "meta mark &
// 0x00010000 != 0x00010000", "ip daddr 10.244.0.5") and native ones.
func readNftOptions(r *Rule, o *ruleOptions) {
	if r.Comment != "" {
		o.comments = []string{r.Comment}
	}
	f := strings.Fields(r.Text)
	for i := 0; i < len(f); i++ {
		switch {
		case i+2 < len(f) && (f[i] == "saddr" || f[i] == "daddr") && (f[i-1] == "ip" || f[i-1] == "ip6"):
			if f[i] == "saddr" {
				o.src = f[i+1]
			} else {
				o.dst = f[i+1]
			}
		case i+4 < len(f) && f[i] == "meta" && f[i+1] == "mark" && f[i+2] == "set" && f[i+3] == "mark" && f[i+4] == "or":
			if i+5 < len(f) {
				o.setMark = f[i+5] + "/" + f[i+5]
			}
		case i+5 < len(f) && f[i] == "meta" && f[i+1] == "mark" && f[i+2] == "&":
			v := f[i+5] + "/" + f[i+3]
			if f[i+4] == "!=" {
				v = "!" + v
			}
			o.mark = v
		}
	}
}

// hasComment reports whether one of the rule's comments is c.
func (o *ruleOptions) hasComment(c string) bool {
	for _, x := range o.comments {
		if x == c {
			return true
		}
	}
	return false
}

// setNames lists the rule's positive ipset matches.
func (o *ruleOptions) setNames() []string {
	var out []string
	for _, m := range o.sets {
		if !m.negated {
			out = append(out, m.name)
		}
	}
	return out
}

// markBit reports whether a mark value "V/M" sets (or, for a match, tests)
// bit in both value and mask.
func markBit(v string, bit uint64) bool {
	val, mask, ok := strings.Cut(strings.TrimPrefix(v, "!"), "/")
	if !ok {
		mask = "0xffffffff"
	}
	return parseHex(val)&bit != 0 && parseHex(mask)&bit != 0
}

func parseHex(s string) uint64 {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return n
		}
		n = n<<4 | uint64(d)
	}
	return n
}

// FirewallPolicies are the policies a pod's firewall chain runs, by
// direction, as the ruleset says: for a kube-router KUBE-POD-FW-* chain its
// jumps into KUBE-NWPLCY-* chains (a policy of both types is in both
// lists), for a Calico cali-tw-* (ingress) or cali-fw-* (egress) chain its
// jumps into cali-pi-* / cali-po-* chains.
type FirewallPolicies struct {
	// Pod is "ns/name" when the chain's rules name it.
	Pod     string
	Ingress []FirewallPolicy
	Egress  []FirewallPolicy
}

// FirewallPolicy is one policy a pod's firewall runs in one direction.
type FirewallPolicy struct {
	// Name is "ns/name", or the policy chain's name when the rules do not
	// carry the policy's.
	Name  string
	Chain string
	// Rules counts the policy chain's admitting rules for this direction:
	// 0 means the policy admits nothing (a default deny).
	Rules int
}

// FirewallPolicies reads a pod firewall chain's policies from the ruleset.
func (ix *Index) FirewallPolicies(family uint8, table, chain string) FirewallPolicies {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	tv := ix.views(family, table)
	s, cd := tv.find(chain)
	var fp FirewallPolicies
	if cd == nil {
		return fp
	}
	cf := PolicyChainFact(chain)
	for i := range s.rules[cd.start : cd.start+cd.n] {
		if p := PolicyRuleFact(chain, &s.rules[int(cd.start)+i]).Pod; p != "" {
			fp.Pod = p
			break
		}
	}
	for i := range s.rules[cd.start : cd.start+cd.n] {
		r := &s.rules[int(cd.start)+i]
		f := PolicyRuleFact(chain, r)
		if f.Role != PolicyJump {
			continue
		}
		name := f.Policy
		if name == "" {
			name = policyOfChain(tv, r.Jump)
		}
		if name == "" {
			name = r.Jump
		} else if !strings.Contains(name, "/") && f.CNI == CNIKubeRouter && fp.Pod != "" {
			// kube-router before v2.11 names only the policy: it is in
			// the pod's namespace (a policy selects pods of its own).
			name = namespaceOf(fp.Pod) + "/" + name
		}
		dir := f.Direction
		if dir == "" {
			dir = cf.Direction
		}
		if dir != DirEgress {
			fp.Ingress = appendPolicy(fp.Ingress, FirewallPolicy{Name: name, Chain: r.Jump, Rules: admitting(tv, r.Jump, DirIngress)})
		}
		if dir != DirIngress {
			fp.Egress = appendPolicy(fp.Egress, FirewallPolicy{Name: name, Chain: r.Jump, Rules: admitting(tv, r.Jump, DirEgress)})
		}
	}
	return fp
}

// admitting counts a policy chain's rules that admit traffic in dir (the
// mark-setting rule of each pair).
func admitting(tv *tableViews, chain, dir string) int {
	n := 0
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		cd := s.chain(chain)
		if cd == nil {
			continue
		}
		for i := range s.rules[cd.start : cd.start+cd.n] {
			r := &s.rules[int(cd.start)+i]
			f := PolicyRuleFact(chain, r)
			if f.Role == PolicyRuleMatch && (f.Direction == "" || f.Direction == dir) && !strings.EqualFold(r.Target, "RETURN") {
				n++
			}
		}
		return n
	}
	return n
}

func appendPolicy(list []FirewallPolicy, p FirewallPolicy) []FirewallPolicy {
	for _, x := range list {
		if x.Name == p.Name {
			return list
		}
	}
	return append(list, p)
}

// PolicyOfChain returns the policy ("ns/name") a policy chain
// (KUBE-NWPLCY-*, cali-pi-*, cali-po-*) belongs to, from its rules'
// comments; "" when they do not say (an empty chain: a policy with no rule
// in that direction).
func (ix *Index) PolicyOfChain(family uint8, table, chain string) string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return policyOfChain(ix.views(family, table), chain)
}

func policyOfChain(tv *tableViews, chain string) string {
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		cd := s.chain(chain)
		if cd == nil {
			continue
		}
		for i := range s.rules[cd.start : cd.start+cd.n] {
			if p := PolicyRuleFact(chain, &s.rules[int(cd.start)+i]).Policy; p != "" {
				return p
			}
		}
	}
	return ""
}

// PolicyJumpTo returns the rule's policy jump target's policy name, reading
// the target chain when the jump's own comment does not name it.
func (ix *Index) PolicyJumpTo(family uint8, table, chain string, r *Rule) string {
	if r == nil {
		return ""
	}
	if p := PolicyRuleFact(chain, r).Policy; p != "" {
		return p
	}
	if r.Jump == "" {
		return ""
	}
	return ix.PolicyOfChain(family, table, r.Jump)
}

func namespaceOf(nsName string) string {
	ns, _, _ := strings.Cut(nsName, "/")
	return ns
}
