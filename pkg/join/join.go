package join

import (
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// Options configure a Joiner.
type Options struct {
	// Window bounds how long a leg waits for its other half, measured on
	// the clock the caller passes to Add and Tick (when the records
	// arrived, not when they were traced).
	Window time.Duration
	// MaxPending bounds the legs held at once; beyond it the oldest is
	// released as if its window had ended.
	MaxPending int
	// NodeOf names the node hosting an address (an endpoint pod's, or a
	// node's own), "" when unknown.
	NodeOf func(host string) string
	// Traced reports whether a node has an agent in this session.
	Traced func(node string) bool
}

// Defaults for Options.
const (
	// DefaultWindow is generous: two agents' log streams through the API
	// server can lag each other by a second under load; a leg is printed
	// at once when its other half is already there.
	DefaultWindow     = 3 * time.Second
	DefaultMaxPending = 4096
)

// Joiner joins the legs of packets reported by several nodes' agents.
// It is not safe for concurrent use.
type Joiner struct {
	o       Options
	pending []*leg // in arrival order
}

// leg is a packet record waiting for its other half.
type leg struct {
	p  *record.Packet
	at time.Time
	// out is set on a leg that left its node for another traced node.
	out bool
	// to is the node an outgoing leg was sent to.
	to string
}

// New returns a Joiner.
func New(o Options) *Joiner {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.NodeOf == nil {
		o.NodeOf = func(string) string { return "" }
	}
	if o.Traced == nil {
		o.Traced = func(string) bool { return false }
	}
	return &Joiner{o: o}
}

// Pending is how many legs wait for their other half.
func (j *Joiner) Pending() int { return len(j.pending) }

// Add takes one node's packet record (its Node set, its hops' Node set or
// left empty for Node) and returns the packets that are complete now, in
// order: the record itself when it needs no other half, the joined packet
// when it completes one, or legs released because MaxPending was reached.
func (j *Joiner) Add(p *record.Packet, now time.Time) []*record.Packet {
	prepare(p)
	var done []*record.Packet
	if p.TracedBy == record.TracedEndpoint {
		if i := j.find(p, true); i >= 0 {
			first := j.take(i)
			return append(done, j.settle(merge(first.p, p), now)...)
		}
		return append(done, j.hold(&leg{p: p, at: now})...)
	}
	return append(done, j.settle(p, now)...)
}

// settle emits p, or holds it when it left for another traced node whose
// half has not arrived yet, or joins it with that half when it has.
func (j *Joiner) settle(p *record.Packet, now time.Time) []*record.Packet {
	to, dst := j.destination(p)
	if to == "" {
		return []*record.Packet{p}
	}
	if !j.o.Traced(to) {
		p.Crossings = append(p.Crossings, crossing(p, to, dst, false, nil))
		return []*record.Packet{p}
	}
	if i := j.find(p, false); i >= 0 {
		second := j.take(i)
		return j.settle(merge(p, second.p), now)
	}
	return j.hold(&leg{p: p, at: now, out: true, to: to})
}

// destination is where p went when it left its node for another one: the
// node and the address it was sent to ("" when it stayed, or was not
// accepted).
func (j *Joiner) destination(p *record.Packet) (node, dst string) {
	if p.Verdict == record.VerdictDrop || p.Verdict == record.VerdictReject {
		return "", ""
	}
	dst = finalDst(p)
	node = j.o.NodeOf(record.Host(dst))
	last := lastNode(p)
	if node == "" || node == last {
		return "", ""
	}
	return node, dst
}

func (j *Joiner) hold(l *leg) []*record.Packet {
	var done []*record.Packet
	for len(j.pending) >= j.o.MaxPending {
		done = append(done, release(j.take(0)))
	}
	j.pending = append(j.pending, l)
	return done
}

// find returns the oldest pending leg that is p's other half: an outgoing
// leg p arrived from (arriving true), or an arrived leg p went to.
func (j *Joiner) find(p *record.Packet, arriving bool) int {
	for i, l := range j.pending {
		if l.out != arriving {
			continue
		}
		first, second := l.p, p
		if !arriving {
			first, second = p, l.p
		}
		if sameIdentity(first, second) && finalDst(first) == second.Dst && lastNode(first) != second.Node {
			return i
		}
	}
	return -1
}

func (j *Joiner) take(i int) *leg {
	l := j.pending[i]
	j.pending = append(j.pending[:i], j.pending[i+1:]...)
	return l
}

// Tick releases the legs whose window ended by now.
func (j *Joiner) Tick(now time.Time) []*record.Packet {
	var done []*record.Packet
	for len(j.pending) > 0 && now.Sub(j.pending[0].at) >= j.o.Window {
		done = append(done, release(j.take(0)))
	}
	return done
}

// Flush releases every pending leg (the session ends).
func (j *Joiner) Flush() []*record.Packet {
	var done []*record.Packet
	for len(j.pending) > 0 {
		done = append(done, release(j.take(0)))
	}
	return done
}

// release completes a leg whose other half never came: an outgoing one
// says where it went and that it did not arrive; an arrived one was sent
// to the endpoint directly (or by a node without an agent).
func release(l *leg) *record.Packet {
	p := l.p
	if l.out {
		p.Crossings = append(p.Crossings, crossing(p, l.to, finalDst(p), true, nil))
		// Its fate past the node it left is unknown.
		p.Verdict = record.VerdictUnknown
		p.VerdictHop = -1
		return p
	}
	p.DirectToEndpoint = true
	return p
}

// prepare fills what a single leg lacks: every hop's node and the nodes.
func prepare(p *record.Packet) {
	for i := range p.Hops {
		if p.Hops[i].Node == "" {
			p.Hops[i].Node = p.Node
		}
	}
	if len(p.Nodes) == 0 && p.Node != "" {
		p.Nodes = []string{p.Node}
	}
}

// sameIdentity compares what NAT leaves alone.
func sameIdentity(a, b *record.Packet) bool {
	return a.Proto == b.Proto && a.Family == b.Family && a.IPID == b.IPID &&
		a.TCPSeq == b.TCPSeq && a.ICMPID == b.ICMPID && a.ICMPSeq == b.ICMPSeq
}

// finalDst is the packet's destination after the last NAT seen.
func finalDst(p *record.Packet) string {
	dst := p.Dst
	for _, h := range p.Hops {
		if h.Dst != "" {
			dst = h.Dst
		}
	}
	return dst
}

func lastNode(p *record.Packet) string {
	if n := len(p.Hops); n > 0 && p.Hops[n-1].Node != "" {
		return p.Hops[n-1].Node
	}
	return p.Node
}

// crossing describes how p left for node to (traced: to has an agent);
// second is the leg seen there (nil: none arrived).
func crossing(p *record.Packet, to, dst string, traced bool, second *record.Packet) record.Crossing {
	c := record.Crossing{From: lastNode(p), To: to, Dst: dst, Traced: traced, Hop: -1}
	if e := p.Egress; e != nil {
		c.Out, c.Via, c.Route = e.Out, e.Via, e.Route
	}
	if second != nil {
		c.Arrived = true
		c.Hop = len(p.Hops)
		if len(second.Hops) > 0 {
			c.In = second.Hops[0].In
		}
	}
	return c
}

// merge appends second, the packet as the next node saw it, to first.
func merge(first, second *record.Packet) *record.Packet {
	out := *first
	n := len(first.Hops)
	out.Crossings = append(append([]record.Crossing(nil), first.Crossings...), crossing(first, second.Node, finalDst(first), true, second))
	for _, c := range second.Crossings {
		if c.Hop >= 0 {
			c.Hop += n
		}
		out.Crossings = append(out.Crossings, c)
	}
	out.Hops = append(append(make([]record.Hop, 0, n+len(second.Hops)), first.Hops...), second.Hops...)
	if len(second.Hops) > 0 {
		// The second leg's first hop shows the packet as it arrived, where
		// that differs from how it left (after SNAT on the first node).
		h := &out.Hops[n]
		if second.Src != srcAt(first) {
			h.Src = second.Src
		}
		if second.Dst != finalDst(first) {
			h.Dst = second.Dst
		}
	}
	out.NAT = append(append([]record.NAT{}, first.NAT...), second.NAT...)
	out.Nodes = append([]string(nil), first.Nodes...)
	for _, nd := range second.Nodes {
		if len(out.Nodes) == 0 || out.Nodes[len(out.Nodes)-1] != nd {
			out.Nodes = append(out.Nodes, nd)
		}
	}
	out.Verdict = second.Verdict
	out.VerdictHop = -1
	if second.VerdictHop >= 0 {
		out.VerdictHop = n + second.VerdictHop
	}
	if out.Endpoint == "" {
		out.Endpoint, out.EndpointPod, out.EndpointNode = second.Endpoint, second.EndpointPod, second.EndpointNode
	}
	if out.Service == "" {
		out.Service = second.Service
	}
	out.Egress = second.Egress
	out.DirectToEndpoint = false
	out.Explain = mergeExplain(first.Explain, second.Explain, n)
	return &out
}

// srcAt is the source at the last hop (before any SNAT applied after it).
func srcAt(p *record.Packet) string {
	src := p.Src
	for _, h := range p.Hops {
		if h.Src != "" {
			src = h.Src
		}
	}
	return src
}

// mergeExplain keeps the first leg's analysis (explain.WithCluster rewrites
// it for the whole path) with the second leg's reason, when it has one, and
// both legs' notes and NetworkPolicy checks (the second leg's hops start at
// index offset of the joined path).
func mergeExplain(a, b *record.Explain, offset int) *record.Explain {
	out := &record.Explain{}
	if a != nil {
		*out = *a
		out.Notes = append([]string(nil), a.Notes...)
		out.Policies = append([]record.PolicyCheck(nil), a.Policies...)
	}
	if b != nil {
		if b.Reason != "" {
			out.Reason = b.Reason
		}
		out.Notes = append(out.Notes, b.Notes...)
		for _, c := range b.Policies {
			c.Hop += offset
			out.Policies = append(out.Policies, c)
		}
		// The first leg's refusal decides (the packet would not have
		// left); else the second leg's check, which is nearer the verdict.
		if b.Policy != nil && (out.Policy == nil || out.Policy.Effect != record.PolicyRefused) {
			d := *b.Policy
			d.Hop += offset
			out.Policy = &d
		}
	}
	return out
}
