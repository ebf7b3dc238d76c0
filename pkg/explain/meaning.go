package explain

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// pathFacts are what the hops' meanings found out for the packet's
// explanation: which rule chose the endpoint and why the source is
// masqueraded (the first such hop of the path).
type pathFacts struct {
	// choiceChain and choiceRule locate the rule that chose the endpoint
	// ("KUBE-SVC-X", "rule 3" / "handle 12" / ""), choice says how
	// ("chose endpoint 10.244.0.5:80 (share 33.3%)").
	choiceChain, choiceRule, choice string
	// masq is why the connection is masqueraded ("source outside the
	// cluster CIDR").
	masq string
}

// Why kube-proxy masquerades a connection, in iptables and nftables mode alike.
const (
	masqOutsideCIDR = "source outside the cluster CIDR"
	masqAll         = "kube-proxy masquerades all cluster IP traffic (--masquerade-all)"
	masqExternal    = "external traffic (externalTrafficPolicy: Cluster)"
	masqNodeLocal   = "traffic from the node itself to an external address (masqueraded even with externalTrafficPolicy: Local)"
	masqHairpin     = "hairpin: the endpoint calls its own Service"
)

func (f *pathFacts) setMasq(why string) {
	if f.masq == "" {
		f.masq = why
	}
}

func (f *pathFacts) setChoice(h *record.Hop, choice string) {
	if f.choice != "" {
		return
	}
	f.choiceChain, f.choice = h.Chain, choice
	switch {
	case h.Rule != 0:
		f.choiceRule = "rule " + strconv.Itoa(h.Rule)
	case h.Handle != 0:
		f.choiceRule = "handle " + strconv.FormatUint(h.Handle, 10)
	}
}

// markMeaning is what a hop that marks the connection for masquerade means.
func (a *annotator) markMeaning(why string) string {
	a.facts.setMasq(why)
	return why + ": mark for masquerade"
}

// builtinPolicy begins the meaning of a built-in chain's policy hop.
const builtinPolicy = "end of built-in chain: policy "

// meaning says in a few words what hop i means for the packet.
func (a *annotator) meaning(i int, r *rules.Rule) string {
	h := &a.rec.Hops[i]
	if m := a.policyMeaning(i, r); m != "" {
		return m
	}
	info := a.hopFacts[i].Chain
	switch h.Kind {
	case "policy":
		switch h.Verdict {
		case "":
			return "end of built-in chain: its policy applies"
		case record.VerdictAccept: // the usual ones, as constants
			return builtinPolicy + record.VerdictAccept
		case record.VerdictDrop:
			return builtinPolicy + record.VerdictDrop
		}
		return builtinPolicy + h.Verdict
	case "return":
		return returnMeaning(h.Table, info)
	}
	if m, ok := a.vmapLookup(i); ok {
		return a.vmapMeaning(i, m)
	}
	if h.Verdict == verdictJump || h.Verdict == verdictGoto {
		return a.jumpMeaning(i, info, r)
	}
	text := ruleText(h, r)
	switch h.Verdict {
	case verdictReturn:
		return returnMeaning(h.Table, info)
	case verdictDNAT:
		return a.dnatMeaning(h, info, r)
	case verdictMasquerade:
		out := ifaceOr(h.Out, "the outgoing interface")
		switch {
		case info.Kind == rules.ChainPostrouting && strings.Contains(text, "@"+rules.SetHairpinConnections):
			// v1.36+: hairpin connections are masqueraded by a set, not marked.
			a.facts.setMasq(masqHairpin)
			return masqHairpin + ": SNAT to the address of " + out
		case info.Kind == rules.ChainPostrouting:
			return "masquerade marked traffic: SNAT to the address of " + out
		}
		return "SNAT to the address of " + out
	case verdictSNAT:
		return "SNAT to " + h.Target
	case record.VerdictReject:
		return a.rejectMeaning(i, info, r)
	case record.VerdictDrop:
		return a.dropMeaning(i, info, r)
	}
	switch info.Kind {
	case rules.ChainMarkMasq:
		return "mark 0x4000: masquerade (SNAT) this connection at POSTROUTING"
	case rules.ChainPostrouting:
		if strings.Contains(text, "0x4000/0x0") || strings.Contains(text, "xor 0x4000") || strings.Contains(text, "mark ^ 0x") {
			return "clear the masquerade mark before SNAT"
		}
	case rules.ChainServices:
		if strings.Contains(text, "@"+rules.SetClusterIPs) && rules.SetsMasqueradeMark(text) {
			if strings.Contains(text, "saddr != ") || strings.Contains(text, "! -s ") {
				return a.markMeaning(masqOutsideCIDR)
			}
			return a.markMeaning(masqAll)
		}
	case rules.ChainExternal:
		if rules.SetsMasqueradeMark(text) {
			if strings.Contains(text, "fib saddr type local") {
				return a.markMeaning(masqNodeLocal)
			}
			return a.markMeaning(masqExternal)
		}
	case rules.ChainEndpoint:
		if updatesAffinitySet(text) {
			return "sessionAffinity: ClientIP: remember this client for endpoint " + orUnknown(info.Endpoint)
		}
	case rules.ChainSvctrace:
		return "svctrace's TRACE rule: this packet is traced from here"
	}
	if strings.Contains(text, "-j TRACE") || strings.Contains(text, "nftrace set 1") {
		return "TRACE rule: this packet is traced from here"
	}
	return commentOf(r)
}

// ruleText is the hop's rule as known: the snapshot's, else the trace's.
func ruleText(h *record.Hop, r *rules.Rule) string {
	if r != nil {
		return r.Text
	}
	return h.Text
}

// jumpMeaning explains why a rule sent the packet to another chain.
func (a *annotator) jumpMeaning(i int, from rules.ChainInfo, r *rules.Rule) string {
	h := &a.rec.Hops[i]
	to := a.targetInfo(i)
	comment := commentOf(r)
	text := ruleText(h, r)
	switch to.Kind {
	case rules.ChainServices:
		return "kube-proxy: check Service portals"
	case rules.ChainNodePorts:
		if from.Kind == rules.ChainServices {
			return "destination is a local address: check NodePorts"
		}
		return "kube-proxy: check NodePorts"
	case rules.ChainService, rules.ChainServiceLocal:
		svc := "Service " + orUnknown(to.Service)
		if from.Kind == rules.ChainExternal {
			// The external chain's short cuts around the traffic policy
			// (iptables-mode and nftables-mode comments).
			switch {
			case strings.Contains(comment, "short-circuit pod traffic") || strings.HasPrefix(comment, "pod traffic for "):
				return svc + ": pod traffic to an external address goes to any endpoint (the traffic policy does not apply)"
			case strings.Contains(comment, "short-circuit local traffic") || strings.HasPrefix(comment, "route LOCAL traffic for "):
				return svc + ": traffic from the node itself goes to any endpoint (the traffic policy does not apply)"
			}
		}
		what := "cluster IP"
		switch {
		case from.Kind == rules.ChainNodePorts:
			what = "NodePort"
		case strings.Contains(comment, "loadbalancer IP"):
			what = "load-balancer IP"
		case strings.Contains(comment, "external IP"):
			what = "external IP"
		case from.Kind == rules.ChainExternal:
			what = "external traffic"
		}
		local := ""
		if to.Kind == rules.ChainServiceLocal {
			local = " (local endpoints only)"
		}
		if to.Service == "" {
			return fmt.Sprintf("a Service's %s matched%s (give the ruleset to name it)", what, local)
		}
		return fmt.Sprintf("%s: %s matched%s", svc, what, local)
	case rules.ChainExternal:
		return "Service " + orUnknown(to.Service) + ": traffic from outside the node or cluster"
	case rules.ChainFirewall:
		return "Service " + orUnknown(to.Service) + ": load-balancer source ranges check"
	case rules.ChainEndpoint:
		ep := to.Endpoint
		if _, after, ok := strings.Cut(comment, " -> "); ep == "" && ok {
			ep = after
		}
		if ep == "" {
			ep = orUnknown(a.rec.Endpoint)
		}
		var choice string
		switch {
		case strings.Contains(text, "--rcheck") || usesAffinitySet(text):
			choice = "chose endpoint " + ep + " again (sessionAffinity: ClientIP: this client's earlier endpoint)"
		case h.Share > 0:
			choice = fmt.Sprintf("chose endpoint %s (share %s)", ep, sharePct(h.Share))
		case r != nil && r.Probability > 0:
			// Without the chain's other rules only this rule's own
			// (conditional) probability is known.
			choice = fmt.Sprintf("chose endpoint %s (rule probability %s)", ep, strconv.FormatFloat(r.Probability, 'f', 3, 64))
		default:
			choice = "chose endpoint " + ep
		}
		a.facts.setChoice(h, choice)
		return choice
	case rules.ChainMarkMasq:
		switch {
		case from.Kind == rules.ChainEndpoint:
			return a.markMeaning(masqHairpin)
		case from.Kind == rules.ChainExternal && (strings.Contains(text, "--src-type LOCAL") || strings.Contains(text, "fib saddr type local")):
			return a.markMeaning(masqNodeLocal)
		case from.Kind == rules.ChainExternal:
			return a.markMeaning(masqExternal)
		case strings.Contains(text, "! -s ") || strings.Contains(text, "saddr != "):
			return a.markMeaning(masqOutsideCIDR)
		case from.Kind == rules.ChainServices && strings.Contains(text, "@"+rules.SetClusterIPs):
			return a.markMeaning(masqAll)
		}
		return "mark for masquerade"
	case rules.ChainPostrouting:
		return "kube-proxy: SNAT marked traffic"
	case rules.ChainForward:
		return "kube-proxy: forwarding rules"
	case rules.ChainProxyFirewall:
		return "kube-proxy: load-balancer source ranges firewall"
	case rules.ChainEndpointsCheck:
		if strings.HasPrefix(h.Target, "nodeport") {
			return "kube-proxy: reject or drop NodePort traffic that has no endpoint"
		}
		return "kube-proxy: reject or drop traffic to Services without endpoints"
	case rules.ChainClusterIPsCheck:
		return "kube-proxy: reject unknown ports of cluster IPs, drop unallocated cluster IPs"
	case rules.ChainReject:
		return "kube-proxy: reject"
	case rules.ChainExternalServices:
		return "kube-proxy: externally-visible Service checks"
	case rules.ChainKubeletFirewall:
		return "kubelet: block martian localhost traffic"
	case rules.ChainCalico:
		return "Calico chain " + h.Target
	case rules.ChainCilium:
		return "Cilium chain " + h.Target
	}
	return comment
}

// dnatMeaning explains a DNAT hop. kube-proxy's nftables mode (v1.36+)
// chooses the endpoint and DNATs in one rule: "dnat to numgen random mod N
// map { ... }".
func (a *annotator) dnatMeaning(h *record.Hop, info rules.ChainInfo, r *rules.Rule) string {
	switch info.Kind {
	case rules.ChainEndpoint, rules.ChainService, rules.ChainServiceLocal:
	default:
		return "DNAT to " + h.Target
	}
	text := ruleText(h, r)
	if h.Target == "" {
		// nft traces do not say which element numgen picked: only a later
		// header shows it, and this packet has none (dropped right after,
		// by routing or a later hook).
		if eps := rules.NftNumgenTargets(text); len(eps) > 0 {
			return "DNAT to one of " + strings.Join(eps, ", ") + svcSuffix(info.Service) + " at random: the trace ends before the chosen one shows"
		}
		return "DNAT to an endpoint" + svcSuffix(info.Service) + " (the trace ends before it shows)"
	}
	s := "DNAT to endpoint " + h.Target + svcSuffix(info.Service)
	if r != nil && r.Probability > 0 && strings.Contains(text, "numgen ") {
		choice := fmt.Sprintf("chose endpoint %s (rule probability %s)", h.Target, strconv.FormatFloat(r.Probability, 'f', 3, 64))
		if h.Share > 0 {
			choice = fmt.Sprintf("chose endpoint %s (share %s)", h.Target, sharePct(h.Share))
		}
		a.facts.setChoice(h, choice)
		return choice + ": " + s
	}
	if strings.Contains(text, "--set") && strings.Contains(text, "-m recent") {
		s += " (remembered for sessionAffinity: ClientIP)"
	}
	return s
}

// rejectMeaning explains a REJECT hop.
func (a *annotator) rejectMeaning(i int, info rules.ChainInfo, r *rules.Rule) string {
	if s := serviceFromComment(commentOf(r)); s != "" {
		return "Service " + s + " has no endpoints: connection rejected"
	}
	hd := a.p.Hops[i].Header
	dst := a.endpoint(hd.Dst, hd.DPort, hd.Proto)
	switch info.Kind {
	case rules.ChainServices, rules.ChainExternalServices:
		// kube-proxy rejects in these chains only for Services
		// without endpoints (nft monitor prints no comment).
		return "the Service at " + dst + " has no endpoints: connection rejected"
	case rules.ChainReject:
		// kube-proxy's nftables mode: a no-endpoints element sent the
		// packet here; its comment names the Service.
		if j := a.sentFrom(i); j >= 0 {
			if s := a.mapService(j); s != "" {
				return "Service " + s + " has no endpoints: connection rejected"
			}
		}
		return "the Service at " + dst + " has no endpoints: connection rejected"
	case rules.ChainClusterIPsCheck:
		return fmt.Sprintf("cluster IP %s has no Service port %d/%s: connection rejected", hd.Dst, hd.DPort, protoName(hd.Proto))
	}
	return "rejected" + ownerSuffix(info)
}

func returnMeaning(table string, info rules.ChainInfo) string {
	switch info.Kind {
	case rules.ChainMarkMasq:
		return "marked: back to the Service chain"
	case rules.ChainPostrouting:
		return "not marked for masquerade: source kept"
	case rules.ChainServices:
		if table == "filter" {
			return "no reject or drop rule for this destination"
		}
		return "not a Service address or NodePort: no DNAT"
	case rules.ChainExternalServices:
		return "no reject or drop rule for this destination"
	case rules.ChainEndpointsCheck:
		return "not a Service without endpoints"
	case rules.ChainClusterIPsCheck:
		return "not a cluster IP"
	case rules.ChainProxyFirewall:
		return "no source-range restriction matched"
	case rules.ChainKubeletFirewall:
		return "not martian localhost traffic"
	case rules.ChainForward:
		return "no forwarding rule matched"
	}
	return "end of chain: back to the caller"
}

func (a *annotator) dropMeaning(i int, info rules.ChainInfo, r *rules.Rule) string {
	comment := commentOf(r)
	text := ruleText(&a.rec.Hops[i], r)
	switch {
	case strings.HasSuffix(comment, " has no local endpoints"):
		return "Service " + serviceFromComment(comment) + " has no endpoint on this node (externalTrafficPolicy: Local): dropped"
	case info.Kind == rules.ChainForward && strings.Contains(text, "INVALID"):
		return "conntrack state INVALID: dropped"
	case info.Kind == rules.ChainProxyFirewall || info.Kind == rules.ChainFirewall:
		return "source not in the Service's loadBalancerSourceRanges: dropped" + svcSuffixParen(info.Service)
	case info.Kind == rules.ChainClusterIPsCheck:
		return a.p.Hops[i].Header.Dst.String() + " is in the Service CIDR but no Service has it: dropped"
	case info.Kind == rules.ChainKubeletFirewall:
		return "kubelet: martian localhost traffic dropped"
	}
	return "dropped" + ownerSuffix(info)
}

// ownerSuffix names a chain's owner when it is recognisable.
func ownerSuffix(info rules.ChainInfo) string {
	switch info.Kind {
	case rules.ChainCalico:
		return " by a Calico chain (NetworkPolicy)"
	case rules.ChainCilium:
		return " by a Cilium chain"
	case rules.ChainKubeletFirewall:
		return " by kubelet's KUBE-FIREWALL"
	}
	return ""
}

func commentOf(r *rules.Rule) string {
	if r == nil {
		return ""
	}
	return r.Comment
}

// sharePct writes a share as a percentage: "33.3%".
func sharePct(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" }

func svcSuffix(svc string) string {
	if svc == "" {
		return ""
	}
	return " of " + svc
}

func svcSuffixParen(svc string) string {
	if svc == "" {
		return ""
	}
	return " (Service " + svc + ")"
}

func ifaceOr(iface, fallback string) string {
	if iface == "" {
		return fallback
	}
	return iface
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
