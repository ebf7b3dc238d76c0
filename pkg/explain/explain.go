package explain

import (
	"fmt"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// explain writes the plain-words analysis of the annotated packet.
func (a *annotator) explain() *record.Explain {
	rec, facts := a.rec, &a.facts
	ex := a.mem.newExplain()
	sum := summary{b: a.buf[:0]}
	if rec.Service != "" {
		sum.part("Service ", rec.Service)
	}
	var dnat, snat *record.NAT
	for i := range rec.NAT {
		switch n := &rec.NAT[i]; n.Kind {
		case record.NATDNAT:
			if dnat == nil {
				dnat = n
			}
		case record.NATSNAT, record.NATMasquerade:
			if snat == nil {
				snat = n
			}
		}
	}
	if dnat != nil && dnat.Chain == "" {
		if connectionOpening(&a.p.First) {
			// A SYN conntrack already tracks: the client's kernel sent it again.
			ex.Retransmit = true
			sum.part("SYN retransmission: translated ", rec.Dst, " -> ", orUnknown(dnat.To), " by conntrack (the nat table saw the connection's first SYN)")
			ex.Notes = append(ex.Notes, "the client sent this SYN again: its first SYN or the answer to it was lost or late (the first SYN's trace names the endpoint chosen)")
		} else {
			sum.part("translated ", rec.Dst, " -> ", orUnknown(dnat.To), " by conntrack (an existing connection: the nat table sees only its first packet)")
		}
	} else if dnat != nil {
		sum.part("DNAT ", rec.Dst, " -> ", orUnknown(dnat.To), " in ", dnat.Chain)
		if why := facts.choiceText(dnat.Chain); why != "" {
			sum.add(" (", why, ")")
		}
	}
	switch {
	case snat != nil:
		sum.part("source masqueraded at POSTROUTING")
		if facts.masq != "" {
			sum.add(" (", facts.masq, ")")
		}
		if snat.To != "" {
			ex.SourceSeenByEndpoint = record.Host(snat.To)
		} else {
			out := lastOut(rec)
			ex.Notes = append(ex.Notes, fmt.Sprintf("the endpoint sees the node's address on %s, not the client's %s", ifaceOr(out, "the outgoing interface"), record.Host(rec.Src)))
		}
	case dnat != nil && dnat.Chain != "" && rec.Verdict == record.VerdictAccept:
		src := record.Host(rec.Src)
		ex.SourceSeenByEndpoint = src
		sum.part("source kept: the endpoint sees the client's address ", src)
	}
	sum.part(rec.Verdict)
	ex.Summary = a.mem.text(sum.b)
	a.buf = sum.b

	switch {
	case rec.Live != nil && rec.Live.Route != nil:
		ex.Reason = routeReason(rec.Live.Route)
	case rec.Verdict == record.VerdictDrop, rec.Verdict == record.VerdictReject:
		h := rec.Hops[rec.VerdictHop]
		ex.Reason = fmt.Sprintf("%s:%s: %s", h.Table, h.Chain, h.Meaning)
	case rec.Verdict == record.VerdictUnknown:
		ex.Reason = stopReason(rec, a.p, a.hooks)
	}
	if rec.Live != nil {
		ex.Notes = append(ex.Notes, liveNotes(rec.Live)...)
	}
	return ex
}

// connectionOpening reports whether h is a TCP connection's first packet:
// SYN without ACK.
func connectionOpening(h *trace.Header) bool {
	return h.Proto == trace.ProtoTCP && h.TCPFlags&(trace.TCPSyn|trace.TCPAck) == trace.TCPSyn
}

// summary writes a packet's summary: its parts with "; " between them.
type summary struct {
	b []byte
	n int // parts so far
}

// part starts a part with words.
func (s *summary) part(words ...string) {
	if s.n > 0 {
		s.b = append(s.b, "; "...)
	}
	s.n++
	s.add(words...)
}

// add appends words to the part.
func (s *summary) add(words ...string) {
	for _, w := range words {
		s.b = append(s.b, w...)
	}
}

// choiceText describes the rule that chose the endpoint, naming its chain
// unless the DNAT happened in the same chain.
func (f *pathFacts) choiceText(dnatChain string) string {
	if f.choice == "" || f.choiceChain == dnatChain {
		return f.choice
	}
	return strings.TrimSpace(f.choiceChain+" "+f.choiceRule) + " " + f.choice
}

// stopReason explains a path that ends without a verdict.
func stopReason(rec *record.Packet, p *trace.Packet, hooks []string) string {
	if len(hooks) == 0 {
		return "no hops were traced"
	}
	if hooks[len(hooks)-1] == "PREROUTING" {
		last := p.Hops[len(p.Hops)-1].Header
		dst := last.Dst
		in := last.In
		fam := ""
		if last.Family == 6 {
			fam = "-6 "
		}
		cmd := fmt.Sprintf("ip %sroute get from %s to %s iif %s", fam, last.Src, dst, ifaceOr(in, "IFACE"))
		rp := "net.ipv4.conf.all.rp_filter"
		if in != "" {
			rp += " net.ipv4.conf." + in + ".rp_filter"
		}
		return fmt.Sprintf("the trace stops after PREROUTING: netfilter accepted the packet but neither INPUT nor FORWARD saw it, so the routing decision discarded it (no route, or the reverse-path filter); on the node run: %s; sysctl %s", cmd, rp)
	}
	return "the trace ends in " + hooks[len(hooks)-1] + " without a verdict (trace output lost, or the packet left netfilter's view)"
}

func lastOut(rec *record.Packet) string {
	for i := len(rec.Hops) - 1; i >= 0; i-- {
		if rec.Hops[i].Out != "" {
			return rec.Hops[i].Out
		}
	}
	return ""
}
