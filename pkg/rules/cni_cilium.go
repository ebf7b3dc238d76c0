package rules

import "strings"

// Cilium in iptables mode: base chains feed CILIUM_* chains ("cilium-feeder:
// CILIUM_FORWARD"), whose rules ("cilium: any->cluster on cilium_host
// forward accept", "cilium: TPROXY to host cilium-dns-egress proxy", ...)
// accept, mark, NOTRACK or redirect traffic to the L7 proxies. Cilium
// enforces NetworkPolicy in eBPF programs on the interfaces, not in these
// chains: a policy drop never shows in an iptables trace. What the rules
// can name is the L7 proxy a policy redirects traffic to.
const ciliumPrefix = "CILIUM_"

func ciliumFact(chain string, r *Rule, o *ruleOptions) (PolicyFact, bool) {
	inChain := strings.HasPrefix(chain, ciliumPrefix)
	toChain := r != nil && strings.HasPrefix(r.Jump, ciliumPrefix)
	if !inChain && !toChain {
		return PolicyFact{}, false
	}
	f := PolicyFact{CNI: CNICilium, Role: PolicyOther}
	if r == nil {
		f.Role = PolicyEntry
		return f, true
	}
	for _, c := range o.comments {
		switch {
		case strings.HasPrefix(c, "cilium-feeder: "):
			f.Role = PolicyEntry
		case strings.HasPrefix(c, "cilium: TPROXY to host "):
			f.Role = PolicyProxy
			f.Proxy = strings.TrimSuffix(strings.TrimPrefix(c, "cilium: TPROXY to host "), " proxy")
		}
	}
	if f.Role == PolicyOther && toChain {
		f.Role = PolicyEntry
	}
	return f, true
}
