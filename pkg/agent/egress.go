//go:build linux

package agent

import (
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// egress adds where a packet left the node (record.Egress): its outgoing
// interface and the route the kernel picks for its destination, the facts
// the plugin shows where the packet crosses to the next node. Used by the
// session's writer goroutine only.
type egress struct {
	// lookup asks the node's kernel for a route (rtnetlink).
	lookup func(kernel.RouteQuery) (kernel.Route, error)
	cache  ttlCache[kernel.RouteQuery, kernel.Route]
	now    func() time.Time
}

// egressQuery is the route lookup for a packet that left the node: the
// packet as its last hop with an outgoing interface shows it (after DNAT),
// with its mark (policy routing may use it). ok is false for a packet that
// did not leave, or left through lo.
func egressQuery(p *trace.Packet) (q kernel.RouteQuery, out string, ok bool) {
	for i := len(p.Hops) - 1; i >= 0; i-- {
		h := &p.Hops[i].Header
		if h.Out == "" {
			continue
		}
		if h.Out == "lo" || !h.Dst.IsValid() {
			return kernel.RouteQuery{}, "", false
		}
		return kernel.RouteQuery{Dst: h.Dst, Mark: h.Mark}, h.Out, true
	}
	return kernel.RouteQuery{}, "", false
}

// add fills rec.Egress for p, when it left the node. A failed lookup
// leaves the route out: the interface is still known.
func (e *egress) add(rec *record.Packet, p *trace.Packet) {
	if rec.Verdict == record.VerdictDrop || rec.Verdict == record.VerdictReject {
		return
	}
	q, out, ok := egressQuery(p)
	if !ok {
		return
	}
	eg := &record.Egress{Out: out, Dst: q.Dst.String()}
	now := e.now()
	rt, hit := e.cache.get(q, now)
	if !hit {
		var err error
		if rt, err = e.lookup(q); err == nil {
			e.cache.put(q, rt, now)
			hit = true
		}
	}
	if hit {
		eg.Route = rt.String()
		if rt.Gateway.IsValid() {
			eg.Via = rt.Gateway.String()
		}
	}
	// The source it left with: after SNAT when there was one (and its
	// address is known), else as the last hop shows it.
	eg.Src = p.Hops[len(p.Hops)-1].Header.Src.String()
	for _, n := range rec.NAT {
		if n.Kind == record.NATSNAT || n.Kind == record.NATMasquerade {
			eg.Src = ""
			if a, ok := hostAddr(n.To); ok {
				eg.Src = a.String()
			}
		}
	}
	rec.Egress = eg
}
