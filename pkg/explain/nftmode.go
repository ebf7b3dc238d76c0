package explain

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// kube-proxy's nftables mode decides with verdict maps: the rule
// "ip daddr . meta l4proto . th dport vmap @service-ips" looks the packet up
// and the element found is the verdict (goto the Service's chain, goto
// reject-chain, drop). The trace names only the verdict, so the element is
// found again here: the packet's own addresses and ports at that hop form
// the key, the ruleset snapshot lists the map's elements and their comments
// (kube-proxy names the Service of every no-endpoints element).

// mapLookup is a verdict map lookup a hop's rule made, and the element the
// packet matched (found reports whether the snapshot listed it).
type mapLookup struct {
	set   string
	elem  rules.SetElement
	found bool
}

// vmapLookup returns the verdict map lookup of hop i, if its rule makes one.
func (a *annotator) vmapLookup(i int) (mapLookup, bool) {
	r := a.rules[i]
	if r == nil || a.rec.Hops[i].Kind != "rule" {
		return mapLookup{}, false
	}
	l := a.hopFacts[i].Vmap // read once per hop
	if l == nil {
		return mapLookup{}, false
	}
	m := mapLookup{set: l.Set}
	if a.ix == nil {
		return m, true
	}
	if key, ok := a.lookupKey(i, l.Key); ok {
		m.elem, m.found = a.ix.SetElement(a.fam, a.rec.Hops[i].Table, l.Set, key...)
	}
	return m, true
}

// lookupKey gives the values of nft selectors for the packet at hop i.
func (a *annotator) lookupKey(i int, selectors []string) ([]string, bool) {
	hd := a.p.Hops[i].Header
	key := make([]string, 0, len(selectors))
	for _, s := range selectors {
		var v string
		switch s {
		case "ip daddr", "ip6 daddr":
			if hd.Dst.IsValid() {
				v = hd.Dst.String()
			}
		case "ip saddr", "ip6 saddr":
			if hd.Src.IsValid() {
				v = hd.Src.String()
			}
		case "meta l4proto", "ip protocol", "ip6 nexthdr":
			v = protoName(hd.Proto)
		case "th dport", "tcp dport", "udp dport", "sctp dport":
			v = strconv.Itoa(int(hd.DPort))
		case "th sport", "tcp sport", "udp sport", "sctp sport":
			v = strconv.Itoa(int(hd.SPort))
		}
		if v == "" {
			return nil, false
		}
		key = append(key, v)
	}
	return key, true
}

// dstInSet reports whether the snapshot's set holds the packet's destination
// at hop i (kube-proxy's cluster-ips, nodeport-ips).
func (a *annotator) dstInSet(i int, set string) bool {
	dst := a.p.Hops[i].Header.Dst
	if a.ix == nil || !dst.IsValid() {
		return false
	}
	_, ok := a.ix.SetElement(a.fam, a.rec.Hops[i].Table, set, dst.String())
	return ok
}

// elementSuffix names the element a lookup matched.
func (m mapLookup) elementSuffix() string {
	if !m.found {
		return ""
	}
	return fmt.Sprintf(" (@%s element %s)", m.set, m.elem.Key)
}

// mapService names the Service a verdict map lookup of hop i concerns: the
// element's comment (no-endpoints elements), else the chain it went to.
func (a *annotator) mapService(i int) string {
	m, ok := a.vmapLookup(i)
	if !ok {
		return ""
	}
	if s := rules.ServiceFromComment(m.elem.Comment); s != "" {
		return s
	}
	h := &a.rec.Hops[i]
	if h.Target != "" && (h.Verdict == verdictGoto || h.Verdict == verdictJump) {
		return a.chainInfo(h.Table, h.Target).Service
	}
	return ""
}

// vmapMeaning explains a hop whose verdict a kube-proxy verdict map gave.
func (a *annotator) vmapMeaning(i int, m mapLookup) string {
	h := &a.rec.Hops[i]
	svc := a.mapService(i)
	name := "Service " + orUnknown(svc)
	dst := a.p.Hops[i].Header
	at := a.endpoint(dst.Dst, dst.DPort, dst.Proto)
	switch m.set {
	case rules.MapServiceIPs:
		to := a.chainInfo(h.Table, h.Target)
		switch to.Kind {
		case rules.ChainService:
			return name + ": cluster IP matched" + m.elementSuffix()
		case rules.ChainServiceLocal:
			return name + ": cluster IP matched (local endpoints only: internalTrafficPolicy: Local)" + m.elementSuffix()
		case rules.ChainExternal:
			return name + ": external or load-balancer IP matched" + m.elementSuffix()
		}
	case rules.MapServiceNodePorts:
		return fmt.Sprintf("%s: NodePort %d matched%s", name, dst.DPort, m.elementSuffix())
	case rules.MapFirewallIPs:
		return name + ": load-balancer IP with loadBalancerSourceRanges: check the source" + m.elementSuffix()
	case rules.MapNoEndpointServices, rules.MapNoEndpointNodePorts:
		if svc == "" {
			name = "the Service at " + at
		}
		switch h.Verdict {
		case record.VerdictDrop:
			return name + " has no endpoint on this node (" + a.noLocalPolicy(i, m.set) + "): dropped" + m.elementSuffix()
		case verdictGoto, verdictJump:
			if a.chainInfo(h.Table, h.Target).Kind == rules.ChainReject {
				return name + " has no endpoints: reject" + m.elementSuffix()
			}
		}
	}
	s := "verdict map @" + m.set
	if m.found {
		s += " element " + m.elem.Key
		if m.elem.Comment != "" {
			s += " (" + m.elem.Comment + ")"
		}
	}
	return s + ": " + strings.ToLower(strings.TrimSpace(h.Verdict+" "+h.Target))
}

// noLocalPolicy says which traffic policy left a Service's traffic without
// an endpoint on this node: kube-proxy drops cluster IP traffic for
// internalTrafficPolicy: Local, external (NodePort, external and
// load-balancer IP) traffic for externalTrafficPolicy: Local.
func (a *annotator) noLocalPolicy(i int, set string) string {
	if set == rules.MapNoEndpointServices && a.dstInSet(i, rules.SetClusterIPs) {
		return "internalTrafficPolicy: Local"
	}
	return "externalTrafficPolicy: Local"
}

// sentFrom returns the hop that sent the packet to hop i's chain (a
// goto reject-chain from a no-endpoints verdict map), or -1.
func (a *annotator) sentFrom(i int) int {
	chain := a.rec.Hops[i].Chain
	for j := i - 1; j >= 0; j-- {
		h := &a.rec.Hops[j]
		if h.Target == chain && (h.Verdict == verdictGoto || h.Verdict == verdictJump) {
			return j
		}
	}
	return -1
}

// usesAffinitySet reports an nft rule that matches the client against a
// sessionAffinity set ("ip saddr @affinity-...").
func usesAffinitySet(text string) bool {
	for _, s := range rules.NftSetMatches(text) {
		if strings.HasPrefix(s, rules.AffinitySetPrefix) && !strings.Contains(text, "update @") {
			return true
		}
	}
	return false
}

// updatesAffinitySet reports the endpoint-chain rule that records the client
// for sessionAffinity ("update @affinity-... { ip saddr }").
func updatesAffinitySet(text string) bool {
	return strings.Contains(text, "update @"+rules.AffinitySetPrefix)
}
