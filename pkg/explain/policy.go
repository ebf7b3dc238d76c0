package explain

import (
	"fmt"
	"sort"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// NetworkPolicy enforcement by the network plugin (kube-router, Calico,
// Cilium): what each of its rules means, which policy checks the packet
// went through (record.PolicyCheck) and, for a packet a policy refused,
// why.

// policyFact is what hop i's rule (or, for returns and policies, its
// chain) says about NetworkPolicy enforcement.
func (a *annotator) policyFact(i int) rules.PolicyFact {
	h := &a.rec.Hops[i]
	f := &a.hopFacts[i] // read once per hop (Index.Hop, rules.RuleFacts)
	if h.Kind != "rule" {
		return *f.CNIChain
	}
	if f.CNIRule == nil {
		if f.CNIChain.CNI != "" {
			return rules.PolicyFact{CNI: f.CNIChain.CNI, Role: rules.PolicyRoleNone}
		}
		return rules.PolicyFact{}
	}
	return *f.CNIRule
}

// policyName names the policy a jump enters, reading the target chain's
// comments when the jump's own do not say.
func (a *annotator) policyName(h *record.Hop, r *rules.Rule, f rules.PolicyFact) string {
	if f.Policy != "" {
		return f.Policy
	}
	if a.ix != nil && r != nil {
		return a.ix.PolicyJumpTo(a.fam, h.Table, h.Chain, r)
	}
	return ""
}

// chainPolicy names the policy a policy chain belongs to.
func (a *annotator) chainPolicy(table, chain string) string {
	if a.ix != nil {
		return a.ix.PolicyOfChain(a.fam, table, chain)
	}
	return ""
}

// policyMeaning says what hop i means when it is a network plugin's rule,
// "" otherwise.
func (a *annotator) policyMeaning(i int, r *rules.Rule) string {
	f := a.policyFact(i)
	if f.CNI == "" {
		return ""
	}
	h := &a.rec.Hops[i]
	who := cniName(f.CNI)
	if h.Kind == "return" {
		switch f.Role {
		case rules.PolicyJump:
			if p := a.chainPolicy(h.Table, h.Chain); p != "" {
				return "NetworkPolicy " + p + ": none of its rules matched this packet"
			}
			return "this policy's rules did not match this packet"
		case rules.PolicyStateful:
			return "not an established connection: on to the policies"
		case rules.PolicyPodFirewall:
			return "end of the pod's firewall chain: back to " + who + "'s chain"
		}
		return ""
	}
	if h.Kind != "rule" {
		return ""
	}
	dir := dirWord(f.Direction)
	switch f.Role {
	case rules.PolicyRoleNone:
		return who + "'s NetworkPolicy chain " + h.Chain + " (give the ruleset to name what it does)"
	case rules.PolicyEntry:
		if f.CNI == rules.CNICilium {
			return "Cilium: " + ciliumComment(r, h.Target)
		}
		return who + ": NetworkPolicy firewall chains"
	case rules.PolicyPodFirewall:
		switch {
		case f.Pod != "" && f.Direction == rules.DirIngress:
			return fmt.Sprintf("traffic to pod %s: check its NetworkPolicies (ingress)", f.Pod)
		case f.Pod != "" && f.Direction == rules.DirEgress:
			return fmt.Sprintf("traffic from pod %s: check its NetworkPolicies (egress)", f.Pod)
		case f.Iface != "" && f.Direction == rules.DirIngress:
			return fmt.Sprintf("traffic to the pod on %s: check its policies (ingress)", f.Iface)
		case f.Iface != "" && f.Direction == rules.DirEgress:
			return fmt.Sprintf("traffic from the pod on %s: check its policies (egress)", f.Iface)
		}
		if f.Direction != "" {
			return "a pod's firewall: check its NetworkPolicies (" + f.Direction + ")"
		}
		return "a pod's firewall: check its NetworkPolicies"
	case rules.PolicyNoPolicy:
		if f.Direction != "" {
			return "no NetworkPolicy selects this pod for " + f.Direction + ": allowed"
		}
		return "no NetworkPolicy selects this pod in this direction: allowed"
	case rules.PolicyJump:
		p := a.policyName(h, r, f)
		if p == "" {
			return "run a NetworkPolicy's rules" + dir
		}
		return "run NetworkPolicy " + p + dir
	case rules.PolicyRuleMatch:
		p := f.Policy
		if p == "" {
			p = a.chainPolicy(h.Table, h.Chain)
		}
		if strings.EqualFold(commentTarget(r), "RETURN") {
			return "admitted by NetworkPolicy " + orUnknown(p) + ": back to the pod's firewall"
		}
		if f.Peer != "" {
			return fmt.Sprintf("NetworkPolicy %s: %s rule (%s) matches: admitted", orUnknown(p), orText(f.Direction, "a"), peerWords(f.Peer))
		}
		return "NetworkPolicy " + orUnknown(p) + ": a rule matches: admitted"
	case rules.PolicyLocalNode:
		return "from the node itself: a node may always reach its pods"
	case rules.PolicyStateful:
		if h.Verdict == record.VerdictDrop {
			return "conntrack state INVALID: dropped"
		}
		if h.Verdict == record.VerdictAccept {
			return "established or related connection: accepted"
		}
		return "conntrack checks: established connections pass, invalid ones drop"
	case rules.PolicyLog:
		return "log: no NetworkPolicy admitted this packet"
	case rules.PolicyRefuse:
		switch {
		case f.Pod != "":
			return "no NetworkPolicy of pod " + f.Pod + " admitted this packet: " + verdictWord(h.Verdict)
		case f.Tier != "":
			return "end of tier " + f.Tier + ": no policy admitted this packet: " + verdictWord(h.Verdict)
		case f.CNI == rules.CNICalico && strings.Contains(strings.Join(rules.Comments(r), " "), "profiles"):
			return "no profile admitted this packet: " + verdictWord(h.Verdict)
		case f.CNI == rules.CNICalico && a.chainPolicy(h.Table, h.Chain) != "":
			return "NetworkPolicy " + a.chainPolicy(h.Table, h.Chain) + " denies this packet: " + verdictWord(h.Verdict)
		}
		return "no NetworkPolicy admitted this packet: " + verdictWord(h.Verdict)
	case rules.PolicyNotReady:
		return "kube-router default deny: this pod's firewall is not programmed yet: " + verdictWord(h.Verdict)
	case rules.PolicyAdmit:
		if strings.Contains(describe(r), "profile") {
			return "the profile admitted this packet"
		}
		return "the pod's NetworkPolicies admitted this packet"
	case rules.PolicyAccept:
		if h.Verdict == record.VerdictAccept {
			return "admitted by the NetworkPolicies: accepted"
		}
		return who + ": accept what the NetworkPolicies admitted"
	case rules.PolicyProfile:
		return "no policy decided: profile " + f.Profile + " applies"
	case rules.PolicyBypass:
		return who + ": not filtered here (" + describe(r) + ")"
	case rules.PolicyProxy:
		return "Cilium L7 policy: redirect to its " + f.Proxy + " proxy"
	}
	if f.CNI == rules.CNICilium {
		return "Cilium: " + ciliumComment(r, h.Target)
	}
	if t := h.Target; t != "" && (h.Verdict == verdictJump || h.Verdict == verdictGoto) {
		return who + " chain " + t
	}
	if d := describe(r); d != "" {
		return who + ": " + d
	}
	if r != nil && strings.EqualFold(r.Target, "MARK") {
		return who + ": packet marks for its policy decisions"
	}
	return who + " rule"
}

// describe returns a rule's descriptive comment, without the plugins'
// rule ids (Calico's "cali:<id>", kube-router's " - <hash>" suffix).
func describe(r *rules.Rule) string {
	for _, c := range rules.Comments(r) {
		if d := trimRuleID(c); d != "" {
			return d
		}
	}
	return ""
}

// policyChecks derives the packet's NetworkPolicy checks from its hops and
// puts them, and for a packet a policy refused the reason, in rec.Explain.
func (a *annotator) policyChecks() {
	a.ciliumNotes()
	var checks []record.PolicyCheck
	cur := -1 // index in checks of the open check
	open := func(i int, f rules.PolicyFact, chain string) {
		c := record.PolicyCheck{CNI: f.CNI, Direction: f.Direction, Pod: f.Pod, Iface: f.Iface, Chain: chain, Hop: i}
		checks = append(checks, c)
		cur = len(checks) - 1
	}
	for i := range a.rec.Hops {
		h := &a.rec.Hops[i]
		f := a.policyFact(i)
		if f.CNI == "" || f.CNI == rules.CNICilium {
			continue
		}
		if h.Kind != "rule" {
			continue
		}
		if f.Role == rules.PolicyPodFirewall && (h.Verdict == verdictJump || h.Verdict == verdictGoto) {
			open(i, f, h.Target)
			continue
		}
		if cf := *a.hopFacts[i].CNIChain; cf.Role == rules.PolicyPodFirewall && (cur < 0 || checks[cur].Chain != h.Chain) {
			// In a pod's firewall without a traced jump into it (the
			// trace started there, or the jump's rule is unknown).
			open(i, cf, h.Chain)
		} else if f.Role == rules.PolicyNotReady && (cur < 0 || checks[cur].Effect != "") {
			open(i, f, h.Chain)
		}
		if cur < 0 {
			continue
		}
		c := &checks[cur]
		if c.Direction == "" && f.Direction != "" && f.Role != rules.PolicyRefuse {
			c.Direction = f.Direction
		}
		if c.Pod == "" && f.Pod != "" {
			c.Pod = f.Pod
		}
		switch f.Role {
		case rules.PolicyJump:
			if p := a.policyName(h, a.rules[i], f); p != "" {
				if !strings.Contains(p, "/") && f.CNI == rules.CNIKubeRouter && c.Pod != "" {
					// kube-router before v2.11 names only the policy: it
					// is in the pod's namespace.
					p = namespaceOf(c.Pod) + "/" + p
				}
				c.Policies = appendNew(c.Policies, p)
			}
		case rules.PolicyNoPolicy, rules.PolicyProfile:
			// Calico's profiles decide only when no policy did.
			if c.Effect == "" {
				c.Effect, c.Hop = record.PolicyNone, i
			}
		case rules.PolicyRuleMatch:
			if c.Effect == "" {
				p := f.Policy
				if p == "" {
					p = a.chainPolicy(h.Table, h.Chain)
				}
				c.Effect, c.Hop, c.Match = record.PolicyAdmitted, i, f.Peer
				c.Namespace, c.Name = splitName(p)
			}
		case rules.PolicyLocalNode:
			if c.Effect == "" {
				c.Effect, c.Hop, c.Match = record.PolicyAdmitted, i, "local-node"
			}
		case rules.PolicyAdmit:
			if c.Effect == "" {
				c.Effect, c.Hop = record.PolicyAdmitted, i
				if len(c.Policies) > 0 {
					// Calico returns from the tier right after the policy
					// that admitted the packet.
					c.Namespace, c.Name = splitName(c.Policies[len(c.Policies)-1])
				}
			}
		case rules.PolicyRefuse:
			if h.Verdict == record.VerdictDrop || h.Verdict == record.VerdictReject {
				c.Effect, c.Hop = record.PolicyRefused, i
				if p := a.chainPolicy(h.Table, h.Chain); p != "" && f.CNI == rules.CNICalico {
					c.Policies = appendNew(c.Policies, p) // an explicit deny rule
				}
			}
		case rules.PolicyNotReady:
			if h.Verdict == record.VerdictDrop || h.Verdict == record.VerdictReject {
				c.Effect, c.Hop = record.PolicyNotReady, i
			}
		}
	}
	var out []record.PolicyCheck
	for _, c := range checks {
		if c.Effect == "" {
			continue // the trace ended inside the check
		}
		a.completeCheck(&c)
		if n := len(out); n > 0 && sameCheck(out[n-1], c) {
			// kube-router sends bridged traffic through the pod's
			// chain twice (plain and physdev rules): one decision.
			continue
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return
	}
	a.rec.Explain.Policies = out
	refresh(a.rec)
}

// completeCheck adds what the ruleset says: every policy selecting the pod
// in the check's direction, and the peer address.
func (a *annotator) completeCheck(c *record.PolicyCheck) {
	h := &a.rec.Hops[c.Hop]
	if a.ix != nil && c.Chain != "" {
		fp := a.ix.FirewallPolicies(a.fam, h.Table, c.Chain)
		if c.Pod == "" {
			c.Pod = fp.Pod
		}
		list := fp.Ingress
		if c.Direction == rules.DirEgress {
			list = fp.Egress
		}
		var all []string
		for _, p := range list {
			all = appendNew(all, p.Name)
		}
		for _, p := range c.Policies {
			all = appendNew(all, p)
		}
		if c.Direction != "" {
			c.Policies = all
		}
	}
	if c.Effect == record.PolicyRefused && c.Name == "" && len(c.Policies) > 0 {
		c.Namespace, c.Name = splitName(c.Policies[0])
	}
	hdr := a.p.Hops[c.Hop].Header
	switch c.Direction {
	case rules.DirIngress:
		c.Peer = hdr.Src.String()
	case rules.DirEgress:
		c.Peer = hdr.Dst.String()
	}
	if !hdr.Src.IsValid() {
		c.Peer = ""
	}
}

func sameCheck(x, y record.PolicyCheck) bool {
	return x.CNI == y.CNI && x.Pod == y.Pod && x.Iface == y.Iface && x.Direction == y.Direction && x.Effect == y.Effect
}

// PolicyReason says why a NetworkPolicy check refused a packet: which
// policies selected the pod, in which direction, and, when the plugin could
// read the cluster's policies (PolicyCheck.Why), why none admitted the peer.
func PolicyReason(c *record.PolicyCheck) string {
	if c.Effect == record.PolicyNotReady {
		return fmt.Sprintf("rejected by %s's default deny: the firewall of %s was not programmed yet (kube-router --netpol-default-deny); retry once kube-router has synced", cniName(c.CNI), orText(c.Pod, "the pod"))
	}
	var b strings.Builder
	b.WriteString("refused by ")
	switch len(c.Policies) {
	case 0:
		b.WriteString("the NetworkPolicies")
	case 1:
		b.WriteString("NetworkPolicy " + c.Policies[0])
	default:
		b.WriteString("NetworkPolicies " + strings.Join(c.Policies, ", "))
	}
	b.WriteString(" (" + checkWhere(c) + ")")
	rulesWord := "rule"
	switch c.Direction {
	case rules.DirIngress:
		rulesWord = "ingress rule"
	case rules.DirEgress:
		rulesWord = "egress rule"
	}
	peer := peerPhrase(c)
	switch {
	case len(c.Policies) == 1:
		fmt.Fprintf(&b, ": it selects the pod and no %s of it admits %s", rulesWord, peer)
	case len(c.Policies) > 1:
		fmt.Fprintf(&b, ": they all select the pod and no %s of any of them admits %s", rulesWord, peer)
	default:
		fmt.Fprintf(&b, ": policies select the pod and none admits %s", peer)
	}
	for _, w := range c.Why {
		b.WriteString("; " + w)
	}
	if c.Missing != "" {
		fmt.Fprintf(&b, "; to see why no rule matched, svctrace needs permission to %s", c.Missing)
	}
	return b.String()
}

// PolicyAdmission says which policy admitted a packet, for the notes.
func PolicyAdmission(c *record.PolicyCheck) string {
	where := checkWhere(c)
	switch {
	case c.Effect == record.PolicyNone:
		return fmt.Sprintf("no NetworkPolicy selects %s for %s: allowed", orText(c.Pod, "the pod"), orText(c.Direction, "this direction"))
	case c.Match == "local-node":
		return fmt.Sprintf("%s: from the node itself, allowed whatever the policies say", where)
	case c.Name != "":
		rule := ""
		if c.Rule > 0 {
			rule = fmt.Sprintf(" %s rule %d", orText(c.Direction, ""), c.Rule)
			rule = strings.Replace(rule, "  ", " ", 1)
		}
		how := ""
		if c.Match != "" {
			how = " (" + peerWords(c.Match) + ")"
		}
		return fmt.Sprintf("admitted by NetworkPolicy %s/%s%s%s (%s)", c.Namespace, c.Name, rule, how, where)
	}
	return fmt.Sprintf("admitted by the NetworkPolicies (%s)", where)
}

// checkWhere says which pod and direction a check is about.
func checkWhere(c *record.PolicyCheck) string {
	pod := c.Pod
	if pod == "" && c.Iface != "" {
		pod = "on " + c.Iface
	}
	switch {
	case c.Direction == rules.DirIngress && pod != "":
		return "ingress to pod " + pod
	case c.Direction == rules.DirEgress && pod != "":
		return "egress from pod " + pod
	case c.Direction != "":
		return c.Direction
	case pod != "":
		return "pod " + pod
	}
	return "a pod's firewall"
}

func peerPhrase(c *record.PolicyCheck) string {
	what := "source"
	if c.Direction == rules.DirEgress {
		what = "destination"
	}
	switch {
	case c.PeerPod != "" && c.Peer != "":
		return fmt.Sprintf("%s %s (pod %s)", what, c.Peer, c.PeerPod)
	case c.Peer != "":
		return what + " " + c.Peer
	}
	return "this " + what
}

// policyDropKey is the summary's drop reason for a policy refusal: the
// policies and the pod, without the packet's addresses.
func policyDropKey(c *record.PolicyCheck) string {
	if c.Effect == record.PolicyNotReady {
		return "rejected by kube-router's default deny (" + checkWhere(c) + ")"
	}
	if len(c.Policies) == 0 {
		return "refused by the NetworkPolicies (" + checkWhere(c) + ")"
	}
	if len(c.Policies) == 1 {
		return "refused by NetworkPolicy " + c.Policies[0] + " (" + checkWhere(c) + ")"
	}
	return "refused by NetworkPolicies " + strings.Join(c.Policies, ", ") + " (" + checkWhere(c) + ")"
}

func peerWords(peer string) string {
	base, np := strings.CutSuffix(peer, " named-port")
	w := map[string]string{"pods": "selected pods", "any": "any peer", "cidr": "ipBlock", "local-node": "the node itself"}[base]
	if w == "" {
		w = base
	}
	if np {
		w += ", named port"
	}
	return w
}

func dirWord(d string) string {
	if d == "" {
		return ""
	}
	return " (" + d + ")"
}

func cniName(cni string) string {
	switch cni {
	case rules.CNICalico:
		return "Calico"
	case rules.CNICilium:
		return "Cilium"
	}
	return cni
}

func verdictWord(v string) string {
	switch v {
	case record.VerdictReject:
		return "rejected"
	case record.VerdictDrop:
		return "dropped"
	}
	return "refused"
}

// ciliumComment is a Cilium rule's own words without its "cilium: " tag.
func ciliumComment(r *rules.Rule, target string) string {
	for _, c := range rules.Comments(r) {
		if rest, ok := strings.CutPrefix(c, "cilium: "); ok {
			return rest
		}
		if rest, ok := strings.CutPrefix(c, "cilium-feeder: "); ok {
			return "hand traffic to " + rest
		}
	}
	if target != "" {
		return "chain " + target
	}
	return "rule"
}

// trimRuleID drops the " - HASH" kube-router appends to its top-level
// rules' comments and Calico's "cali:HASH" ids.
func trimRuleID(c string) string {
	if strings.HasPrefix(c, "cali:") {
		return ""
	}
	if i := strings.LastIndex(c, " - "); i >= 0 && len(c)-i-3 == 16 {
		return c[:i]
	}
	return c
}

func commentTarget(r *rules.Rule) string {
	if r == nil {
		return ""
	}
	return r.Target
}

func splitName(p string) (ns, name string) {
	if ns, name, ok := strings.Cut(p, "/"); ok {
		return ns, name
	}
	return "", p
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// policyDrops counts refused packets by the policies that refused them.
type policyDrops struct {
	counts map[string]*record.PolicyDrop // by policyDropKey
}

// add counts p if a NetworkPolicy check refused it, and returns the
// summary's drop reason for it ("" when no policy refused it).
func (d *policyDrops) add(p *record.Packet) string {
	if p.Explain == nil || p.Explain.Policy == nil {
		return ""
	}
	c := p.Explain.Policy
	if c.Effect != record.PolicyRefused && c.Effect != record.PolicyNotReady {
		return ""
	}
	key := policyDropKey(c)
	if d.counts == nil {
		d.counts = map[string]*record.PolicyDrop{}
	}
	e := d.counts[key]
	if e == nil {
		e = &record.PolicyDrop{Policies: c.Policies, Direction: c.Direction, Pod: orText(c.Pod, c.Iface)}
		if e.Policies == nil {
			e.Policies = []string{}
		}
		d.counts[key] = e
	}
	e.Count++
	return key
}

// list returns the counts, most first.
func (d *policyDrops) list() []record.PolicyDrop {
	var out []record.PolicyDrop
	for _, e := range d.counts {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return strings.Join(out[i].Policies, ",")+out[i].Pod < strings.Join(out[j].Policies, ",")+out[j].Pod
	})
	return out
}

// ciliumNotes says what Cilium's chains can and cannot tell: Cilium
// enforces NetworkPolicy in eBPF, so its drops never show in a netfilter
// trace; an L7 policy shows as a redirect to its proxy.
func (a *annotator) ciliumNotes() {
	seen := false
	for i := range a.rec.Hops {
		f := a.policyFact(i)
		if f.CNI != rules.CNICilium {
			continue
		}
		seen = true
		if f.Role == rules.PolicyProxy {
			a.rec.Explain.Notes = append(a.rec.Explain.Notes, fmt.Sprintf(
				"a Cilium L7 policy redirects this connection to its %s proxy (%s:%s rule %d): the proxy, not the client, connects to the endpoint",
				f.Proxy, a.rec.Hops[i].Table, a.rec.Hops[i].Chain, a.rec.Hops[i].Rule))
		}
	}
	if seen {
		a.rec.Explain.Notes = append(a.rec.Explain.Notes,
			"Cilium enforces NetworkPolicy in eBPF, not in these chains: a policy drop does not show in this trace; on the node, `cilium monitor --type drop` (or `hubble observe --verdict DROPPED`) shows it")
	}
}
