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
			return trace.EndTable
		}
		var r *rules.Rule
		var ok bool
		if ev.Handle != 0 {
			r, ok = ix.RuleByHandle(fam, ev.Table, ev.Chain, ev.Handle)
		} else {
			r, ok = ix.Rule(fam, ev.Table, ev.Chain, ev.Rule)
		}
		if !ok {
			return trace.EndUnknown
		}
		return targetEnding(r)
	}
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
	case "ACCEPT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP":
		return trace.EndTable
	case "DROP", "REJECT":
		return trace.EndPacket
	case "RETURN", "":
		return trace.EndUnknown
	}
	return trace.EndNone
}
