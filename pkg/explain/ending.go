package explain

import (
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// Ending returns a trace.GroupOptions.Ending that reads from the ruleset
// snapshot what each traced rule or policy does, so the Grouper completes
// packets at their real end instead of waiting for the quiet window. With a
// nil index it returns nil (the Grouper infers on its own).
func Ending(ix *rules.Index) func(ev *trace.Event) trace.Ending {
	if ix == nil {
		return nil
	}
	return func(ev *trace.Event) trace.Ending {
		fam := ev.Header.Family
		switch ev.Kind {
		case trace.KindReturn:
			return trace.EndNone
		case trace.KindPolicy:
			p, ok := ix.Policy(fam, ev.Table, ev.Chain)
			if !ok {
				return trace.EndUnknown
			}
			if p == "DROP" {
				return trace.EndPacket
			}
			return tableEnding(ix, ev)
		}
		var r *rules.Rule
		var ok bool
		if ev.Handle != 0 {
			r, ok = ix.RuleByHandle(fam, ev.Table, ev.Chain, ev.Handle)
		} else {
			r, ok = ix.Rule(fam, ev.Table, ev.Chain, ev.Rule)
		}
		if !ok {
			if ev.Text == "" {
				return trace.EndUnknown
			}
			// A rule the snapshot lacks, as the trace prints it (nft
			// monitor and xtables-monitor name no handle).
			parsed := rules.ParseRuleText(ev.Text)
			r = &parsed
		}
		switch end := targetEnding(r); end {
		case trace.EndTable, trace.EndNAT:
			if tableEnding(ix, ev) == trace.EndTable {
				return trace.EndTable
			}
			if end == trace.EndNAT {
				return trace.EndNAT // other base chains follow; the nat ones are skipped now
			}
			return trace.EndNone
		default:
			return end
		}
	}
}

// HookTables returns a trace.GroupOptions.HookTables that reads from the
// ruleset snapshot which nft tables' base chains run at POSTROUTING and
// INPUT, so the Grouper completes a packet accepted in all of them (where
// kube-proxy's nftables table shares the hook with iptables-nft's, their
// order is not known and Ending cannot end the packet). With a nil index it
// returns nil.
func HookTables(ix *rules.Index) func(family uint8, hook string) []trace.HookChain {
	if ix == nil {
		return nil
	}
	type key struct {
		fam  uint8
		hook string
	}
	known := map[key][]trace.HookChain{}
	for _, fam := range []uint8{rules.FamilyIPv4, rules.FamilyIPv6} {
		for _, h := range []string{"POSTROUTING", "INPUT"} {
			var cs []trace.HookChain
			for _, c := range ix.HookTables(fam, strings.ToLower(h)) {
				cs = append(cs, trace.HookChain{Table: c.Table, Nat: c.Nat})
			}
			known[key{fam, h}] = cs
		}
	}
	return func(family uint8, hook string) []trace.HookChain { return known[key{family, hook}] }
}

// tableEnding is what an accepting rule or policy means for the traversal:
// the table is done with the packet, unless a base chain of another nft
// table (kube-proxy's nftables mode next to iptables-nft) hangs off the same
// hook after it and may still trace, or drop, the packet.
func tableEnding(ix *rules.Index, ev *trace.Event) trace.Ending {
	if ix.LaterBaseChain(ev.Header.Family, ev.Table, ev.Chain) {
		return trace.EndNone
	}
	return trace.EndTable
}

// targetEnding says what a rule's target does to the traversal.
func targetEnding(r *rules.Rule) trace.Ending {
	if r.Jump != "" {
		return trace.EndNone
	}
	switch strings.ToUpper(r.Target) {
	case "VMAP":
		// A verdict map decides (kube-proxy nftables mode: goto a
		// Service chain, goto reject-chain, drop): the traced verdict says.
		return trace.EndUnknown
	case "ACCEPT":
		return trace.EndTable
	case "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP":
		return trace.EndNAT
	case "DROP", "REJECT":
		return trace.EndPacket
	case "RETURN", "":
		return trace.EndUnknown
	}
	return trace.EndNone
}

// PendingEnding is the Ending to use while no ruleset snapshot is read yet
// (the agent traces before it lists the rules). With kube-proxy in nftables
// mode its table's base chains hang off the same hooks as the iptables-nft
// tables, at the same priorities (filter-input next to filter INPUT,
// nat-postrouting next to nat POSTROUTING), so an accept in another table
// does not end the packet's traversal of that hook: kube-proxy may still
// reject or drop it there. Otherwise the Grouper infers on its own.
func PendingEnding(kubeProxyNftables bool) func(ev *trace.Event) trace.Ending {
	return func(ev *trace.Event) trace.Ending {
		if !kubeProxyNftables || ev.Table == rules.KubeProxyTable {
			return trace.EndUnknown
		}
		if (ev.Kind == trace.KindPolicy || ev.Kind == trace.KindRule) && ev.Verdict == "ACCEPT" {
			return trace.EndNone
		}
		return trace.EndUnknown
	}
}
