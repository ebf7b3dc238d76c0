package trace

import (
	"slices"
	"time"
)

// Defaults for GroupOptions fields left zero.
const (
	DefaultQuiet           = 100 * time.Millisecond
	DefaultMaxInFlight     = 4096
	DefaultMaxHops         = 512
	DefaultMaxHopsInFlight = 1 << 16
)

// Ending says what a hop's rule (or policy) does to the packet's traversal.
// Legacy traces do not say which target a matched rule ran; a caller that
// knows the ruleset (package rules) can tell the Grouper through
// GroupOptions.Ending, so packets complete without waiting for the quiet
// window.
type Ending uint8

const (
	// EndUnknown lets the Grouper decide: nft verdicts (DROP and STOLEN end
	// the packet, ACCEPT ends the table), and legacy policies (assumed
	// ACCEPT: they end the table).
	EndUnknown Ending = iota
	// EndNone: the traversal goes on in the same table (jump, return,
	// non-terminating targets such as MARK or LOG).
	EndNone
	// EndTable: the table is done with the packet at this hook, which goes
	// on to the next table or hook (ACCEPT, DNAT, SNAT, MASQUERADE, an
	// ACCEPT policy).
	EndTable
	// EndPacket: the packet goes no further (DROP, REJECT, a DROP policy).
	EndPacket
	// EndNAT: the rule translated the packet (DNAT, SNAT, MASQUERADE),
	// ending its table's traversal of the hook, where base chains of other
	// tables may still follow (GroupOptions.HookTables tells which; nf_nat
	// skips the hook's other nat chains now).
	EndNAT
)

// GroupOptions configure a Grouper.
type GroupOptions struct {
	// Quiet is how long a packet may go without a new record before it is
	// emitted as it is (default DefaultQuiet). It is measured on the
	// records' kernel timestamps and on the clock given to Tick.
	Quiet time.Duration
	// Clock, when set, reads the clock given to Tick: a packet's quiet
	// window on it then starts when its last record was added, not at the
	// Tick before (up to a tick period earlier, which shortens the window).
	Clock func() time.Duration
	// ReadTimes says the records' Time is when the reader got them (nft
	// trace events carry none), not when the kernel wrote them: a reader
	// held up between two records of one packet opens a gap that is not
	// the packet's, so the quiet window runs on Tick's clock alone.
	ReadTimes bool
	// StallQuiet, when longer than Quiet, is the quiet window of a packet
	// whose last record leaves it inside a chain's traversal: an nft
	// verdict that goes on (continue, jump, goto, return, break), a return
	// to the calling chain, or a legacy rule (no verdict in its record)
	// that Ending says goes on (EndNone). The kernel evaluates the rest of
	// the chain at once, so only a stalled CPU (a vCPU its hypervisor
	// descheduled, a long interrupt) keeps the next record away; the short
	// window would cut the packet in two. Packets between tables or hooks,
	// where a packet can vanish (a routing drop, rp_filter), keep Quiet.
	StallQuiet time.Duration
	// MaxInFlight caps the packets held at once (default DefaultMaxInFlight);
	// past it the oldest is emitted early and counted as evicted.
	MaxInFlight int
	// MaxHops caps one packet's hops (default DefaultMaxHops); a packet that
	// reaches it is emitted and counted as truncated, and its later records
	// start a new packet.
	MaxHops int
	// MaxHopsInFlight caps the hops held over all packets (default
	// DefaultMaxHopsInFlight), bounding memory; past it the oldest packet
	// is evicted.
	MaxHopsInFlight int
	// Ordered emits packets in the order they started: a complete packet
	// waits until every older one is emitted (at most the quiet window).
	// Without it packets are emitted as soon as they are complete.
	Ordered bool
	// Ending, when set, is asked what each record's rule or policy does; it
	// may return EndUnknown to keep the Grouper's own inference.
	Ending func(ev *Event) Ending
	// HookTables, when set, lists the base chains that run at a hook
	// ("POSTROUTING", "INPUT") for a family (nil: not known). Each base
	// chain a packet traverses ends in one accepting record (a rule's or its
	// policy), and the nat ones all end once one translated it (EndNAT), so
	// a packet past every one at POSTROUTING or INPUT is complete, also where
	// tables share the hook at one priority in an order no record tells
	// (kube-proxy's nftables mode next to iptables-nft).
	HookTables func(family uint8, hook string) []HookChain
	// Emit receives every packet. The *Packet and its Hops are reused once
	// Emit returns: copy what you keep (Packet.Clone). Emit must not call
	// back into the Grouper.
	Emit func(p *Packet)
}

// HookChain is a base chain at a hook: its table, and whether it is of
// type nat.
type HookChain struct {
	Table string
	Nat   bool
}

// GroupStats counts what a Grouper did. Packets is the sum of the emission
// reasons Complete, Quiet, Split, Evicted, Truncated and Flushed.
type GroupStats struct {
	Packets uint64 // packets emitted
	// Complete: emitted at a terminal point (a drop, the end of the last
	// table of the last hook the packet can reach).
	Complete uint64
	// Quiet: emitted after the quiet window without records.
	Quiet uint64
	// Split: emitted because a record showed that a new packet with the same
	// trace id or identity had started.
	Split uint64
	// Evicted: emitted early to respect MaxInFlight or MaxHopsInFlight.
	Evicted uint64
	// Truncated: emitted on reaching MaxHops.
	Truncated uint64
	// Flushed: emitted by Flush (end of input), or because the kernel clock
	// went backwards (another boot or host in the same input).
	Flushed uint64
	// Duplicates: records dropped because they repeat the packet's last
	// record exactly (same kmsg sequence or timestamp).
	Duplicates uint64
	// Joined: records whose new trace id continued a packet in flight
	// under another id (the kernel can change a bridged packet's nft
	// trace id between hooks).
	Joined uint64
}

type finishReason uint8

const (
	reasonComplete finishReason = iota
	reasonQuiet
	reasonSplit
	reasonEvict
	reasonTruncate
	reasonFlush
)

// flowKey is what records of one packet share: the trace id for nft, else
// the fields NAT leaves alone (IPv4 ID or IPv6 flow label, TCP sequence or
// ICMP id and sequence, protocol, length). Addresses and ports are checked
// separately because DNAT and SNAT rewrite them mid-path.
type flowKey struct {
	id            uint32
	hasID         bool
	family, proto uint8
	ipid          uint32
	l4            uint32
	length        uint16
}

func keyOf(ev *Event) flowKey {
	if ev.HasID {
		return flowKey{id: ev.TraceID, hasID: true}
	}
	return identOf(&ev.Header)
}

// identOf is the packet identity part of a flowKey: what a record without
// trace id is grouped by, and what finds the packet a record with a new
// trace id continues.
func identOf(h *Header) flowKey {
	k := flowKey{family: h.Family, proto: h.Proto, ipid: h.IPID, length: h.Len}
	switch h.Proto {
	case ProtoTCP:
		k.l4 = h.TCPSeq
	case ProtoICMP, ProtoICMPv6:
		k.l4 = uint32(h.ICMPID)<<16 | uint32(h.ICMPSeq)
	}
	return k
}

func (k flowKey) hash() uint64 {
	x := uint64(k.id) | uint64(k.ipid)<<32
	y := uint64(k.l4) | uint64(k.length)<<32 | uint64(k.family)<<48 | uint64(k.proto)<<56
	if k.hasID {
		x = ^x
	}
	h := x*0x9E3779B97F4A7C15 ^ y
	h ^= h >> 31
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 29
	h *= 0x94D049BB133111EB
	h ^= h >> 32
	return h
}

// flight is a packet being assembled.
type flight struct {
	pkt  Packet
	key  flowKey
	hash uint64

	cur    Header // the packet as last seen
	hasHdr bool

	// ID packets are also indexed by identity (Grouper.idents) once they
	// show an IP header, so a record with a new trace id can find them.
	ident     flowKey
	identHash uint64
	indexed   bool
	serial    uint64 // start order, to prefer the oldest of equal candidates

	// Position: the hook and table rank of the last record of a known table
	// (records of unknown tables do not move it), and whether that table's
	// traversal has ended.
	hook      hook
	rank      int16
	done      bool
	natSeen   bool
	restarted bool
	// at is the hook Hop.Hook reports: the last base chain's (any table),
	// which user chains inherit.
	at hook
	// ended lists the tables whose base chains' traversal of hook endedAt
	// ended (one entry per base chain), for GroupOptions.HookTables.
	ended   [maxHookTables]string
	nEnded  int
	natDone bool // a nat chain translated the packet at endedAt
	endedAt hook

	lastSeq uint64
	wall    time.Duration
	inChain bool // the last record leaves it inside a chain (StallQuiet)

	live     bool // in the table and the LRU list
	complete bool // Ordered: finished, waiting for older packets

	lprev, lnext *flight // LRU order (least recently active first)
	fprev, fnext *flight // creation order
}

// Grouper assembles Events into Packets. It is not safe for concurrent use.
type Grouper struct {
	opts            GroupOptions
	quiet           time.Duration
	maxInFlight     int
	maxHops         int
	maxHopsInFlight int

	table      flightTable
	idents     flightTable // ID packets by identity; allocated on first use
	serial     uint64
	lruH, lruT *flight
	fifH, fifT *flight
	free       []*flight
	used       int // flights not in free (live, or held by Ordered)
	inflight   int // live flights
	hops       int // hops held by used flights

	now     time.Duration // latest kernel timestamp seen
	wall    time.Duration // latest Tick
	wallSet bool

	stats GroupStats
	cands []*flight
}

// NewGrouper returns a Grouper; zero option fields take their defaults.
func NewGrouper(opts GroupOptions) *Grouper {
	g := &Grouper{opts: opts, quiet: opts.Quiet, maxInFlight: opts.MaxInFlight, maxHops: opts.MaxHops, maxHopsInFlight: opts.MaxHopsInFlight}
	if g.quiet <= 0 {
		g.quiet = DefaultQuiet
	}
	if g.maxInFlight <= 0 {
		g.maxInFlight = DefaultMaxInFlight
	}
	if g.maxHops <= 0 {
		g.maxHops = DefaultMaxHops
	}
	if g.maxHopsInFlight <= 0 {
		g.maxHopsInFlight = DefaultMaxHopsInFlight
	}
	if g.maxHopsInFlight < g.maxHops {
		g.maxHopsInFlight = g.maxHops
	}
	g.table = newFlightTable(g.maxInFlight, false)
	return g
}

// Stats returns the counts so far.
func (g *Grouper) Stats() GroupStats { return g.stats }

// InFlight returns how many packets are being assembled.
func (g *Grouper) InFlight() int { return g.inflight }

// Add adds one record. The Grouper copies what it needs: ev may be reused.
func (g *Grouper) Add(ev *Event) {
	if !g.opts.ReadTimes {
		g.advance(ev.Time)
	}
	key := keyOf(ev)
	hash := key.hash()
	var f *flight
	if ev.HasID {
		f = g.table.find(key, hash)
		if f != nil {
			if isDuplicate(f, ev) {
				g.stats.Duplicates++
				return
			}
			if g.splitsID(f, ev) {
				g.finish(f, reasonSplit)
				f = nil
			}
		}
		if f == nil {
			if f = g.joinID(ev); f != nil {
				g.stats.Joined++
				g.table.remove(f)
				f.key, f.hash = key, hash
				g.table.insert(f)
			}
		}
	} else {
		var dup bool
		f, dup = g.matchLegacy(key, hash, ev)
		if dup {
			g.stats.Duplicates++
			return
		}
	}
	var cont continuation
	truncated := false
	if f != nil && len(f.pkt.Hops) >= g.maxHops {
		// Emit what there is; the rest continues as a new packet that keeps
		// the position and addresses, so it still groups and completes.
		cont = continuation{first: f.pkt.First, cur: f.cur, hasHdr: f.hasHdr, hook: f.hook, rank: f.rank,
			done: f.done, natSeen: f.natSeen, restarted: f.restarted, at: f.at}
		truncated = true
		g.finish(f, reasonTruncate)
		f = nil
	}
	for g.hops >= g.maxHopsInFlight && g.evict() {
	}
	if f != nil && !f.live {
		f = nil // evicted just now
	}
	if f == nil {
		f = g.start(key, hash, ev)
		if truncated {
			f.pkt.First, f.cur, f.hasHdr = cont.first, cont.cur, cont.hasHdr
			f.hook, f.rank, f.done, f.natSeen, f.restarted = cont.hook, cont.rank, cont.done, cont.natSeen, cont.restarted
			f.at = cont.at
			g.index(f)
		}
	}
	g.appendHop(f, ev)
}

// continuation is the state a packet cut at MaxHops hands to its rest.
type continuation struct {
	first, cur Header
	hasHdr     bool
	hook       hook
	rank       int16
	done       bool
	natSeen    bool
	restarted  bool
	at         hook
}

// Tick tells the Grouper the time on a clock of the caller's choice (the
// live agent passes a monotonic wall clock); packets that got no record for
// the quiet window on that clock are emitted. Call it at least every Quiet/2
// while waiting for input.
func (g *Grouper) Tick(now time.Duration) {
	if !g.wallSet {
		// Packets added before the first Tick start their quiet window now.
		g.wallSet = true
		g.wall = now
		for f := g.lruH; f != nil; f = f.lnext {
			f.wall = now
		}
		return
	}
	if now > g.wall {
		g.wall = now
	}
	g.expire()
}

// stamp is the wall time a record added now counts its quiet window from.
func (g *Grouper) stamp() time.Duration {
	if g.opts.Clock != nil && g.wallSet {
		if now := g.opts.Clock(); now > g.wall {
			return now
		}
	}
	return g.wall
}

// Flush emits every packet still being assembled, oldest first (end of
// input).
func (g *Grouper) Flush() {
	for g.fifH != nil {
		g.finish(g.fifH, reasonFlush)
	}
}

// advance moves the kernel clock to t and emits packets quiet since.
func (g *Grouper) advance(t time.Duration) {
	if t == 0 {
		return
	}
	if g.now != 0 && t+g.quiet < g.now {
		// The clock went backwards by more than the quiet window: records of
		// another boot or host. Nothing held can continue.
		g.Flush()
		g.now = t
		return
	}
	if t > g.now {
		g.now = t
		g.expire()
	}
}

// expire emits the packets quiet for their window. The LRU list is in order
// of last activity, so the first packet within the short window ends the
// walk; packets within their StallQuiet are passed over.
func (g *Grouper) expire() {
	for f := g.lruH; f != nil; {
		next := f.lnext
		q := g.quietOf(f)
		byTime := f.pkt.End != 0 && g.now-f.pkt.End >= q
		byWall := g.wallSet && g.wall-f.wall >= q
		switch {
		case byTime || byWall:
			g.finish(f, reasonQuiet)
		case q == g.quiet:
			return
		}
		f = next
	}
}

// quietOf is f's quiet window: StallQuiet inside a chain, else Quiet.
func (g *Grouper) quietOf(f *flight) time.Duration {
	if f.inChain && g.opts.StallQuiet > g.quiet {
		return g.opts.StallQuiet
	}
	return g.quiet
}

// matchLegacy finds the in-flight packet a record without trace id belongs
// to: same flowKey, addresses equal or changed the way NAT at the packet's
// hook can change them, and a position that follows the packet's. Packets
// with the same identity that the record cannot follow are superseded by it
// (a new traversal started) and emitted.
func (g *Grouper) matchLegacy(key flowKey, hash uint64, ev *Event) (f *flight, dup bool) {
	g.cands = g.table.collect(key, hash, g.cands[:0])
	back := 0
	for _, c := range g.cands {
		if !c.tupleFits(ev) {
			continue
		}
		if isDuplicate(c, ev) {
			return nil, true
		}
		if c.placeOf(ev) != moveBack {
			if f == nil {
				f = c
			}
			continue
		}
		g.cands[back] = c
		back++
	}
	if f == nil {
		for _, c := range g.cands[:back] {
			g.finish(c, reasonSplit)
		}
	}
	return f, false
}

// splitsID reports whether a record with f's trace id belongs to a new
// packet: nft reuses trace ids for the packets of a flow.
func (g *Grouper) splitsID(f *flight, ev *Event) bool {
	if !g.opts.ReadTimes && ev.Time != 0 && f.pkt.End != 0 && ev.Time-f.pkt.End >= g.quietOf(f) {
		return true
	}
	if hasHeader(ev) && f.hasHdr && !sameIdentity(&f.cur, &ev.Header) {
		return true
	}
	return f.placeOf(ev) == moveBack
}

// joinID finds the packet in flight that a record with a trace id no packet
// in flight has continues under another id. The kernel can give a bridged
// packet a new nft trace id between hooks: in the local-pod-to-noendpoints
// nft captures, 26731955 covers raw and nat PREROUTING and 5b001a6a the same
// packet's filter FORWARD. The record must show the packet (same identity,
// addresses as NAT at the packet's hook may have left them) at a base chain
// that follows the packet's hook (hooks.go: follows). Of several such
// packets the oldest wins: packets of one flow traverse in order.
func (g *Grouper) joinID(ev *Event) *flight {
	if g.idents.slots == nil || !hasHeader(ev) || ev.Header.Family == 0 {
		return nil
	}
	to := baseHook(ev.Table, ev.Chain)
	if to == hookNone {
		return nil
	}
	k := identOf(&ev.Header)
	g.cands = g.idents.collect(k, k.hash(), g.cands[:0])
	var best *flight
	for _, c := range g.cands {
		from := c.at
		if from == hookNone {
			from = c.hook
		}
		if !follows(from, to) || !sameIdentity(&c.cur, &ev.Header) || !c.tupleFits(ev) {
			continue
		}
		if best == nil || c.serial < best.serial {
			best = c
		}
	}
	return best
}

// index keeps an ID packet's entry in g.idents in step with its current
// header: added once the packet shows an IP header, moved if the identity
// fields it shows change (a decoder filling in a field it lacked before).
func (g *Grouper) index(f *flight) {
	if !f.pkt.HasID || !f.hasHdr {
		return
	}
	k := identOf(&f.cur)
	if f.indexed {
		if k == f.ident {
			return
		}
		g.idents.remove(f)
		f.indexed = false
	}
	if k.family == 0 {
		return // no IP header (ARP in a bridge table): nothing to join by
	}
	if g.idents.slots == nil {
		g.idents = newFlightTable(g.maxInFlight, true)
	}
	f.ident, f.identHash = k, k.hash()
	g.idents.insert(f)
	f.indexed = true
}

// hasHeader reports whether ev shows the packet: the header it carried, or
// one its decoder filled in from earlier records of the same trace id
// (HasHeader false, Header set).
func hasHeader(ev *Event) bool {
	return ev.HasHeader || ev.Header != (Header{})
}

// sameIdentity compares what stays constant along one packet's path.
func sameIdentity(a, b *Header) bool {
	if a.Family != b.Family || a.IPID != b.IPID {
		return false
	}
	if a.Proto != 0 && b.Proto != 0 && a.Proto != b.Proto {
		return false
	}
	if a.Len != 0 && b.Len != 0 && a.Len != b.Len {
		return false
	}
	switch a.Proto {
	case ProtoTCP:
		return a.TCPSeq == b.TCPSeq
	case ProtoICMP, ProtoICMPv6:
		return a.ICMPID == b.ICMPID && a.ICMPSeq == b.ICMPSeq
	}
	return true
}

// isDuplicate reports whether ev repeats f's last record exactly: the same
// kmsg record read twice, or a log line that appears twice.
func isDuplicate(f *flight, ev *Event) bool {
	n := len(f.pkt.Hops)
	if n == 0 {
		return false
	}
	switch {
	case ev.Seq != 0:
		if ev.Seq != f.lastSeq {
			return false
		}
	case ev.Time != 0:
		if ev.Time != f.pkt.End {
			return false
		}
	default:
		return false
	}
	last := &f.pkt.Hops[n-1]
	return last.Table == ev.Table && last.Chain == ev.Chain && last.Kind == ev.Kind &&
		last.Rule == ev.Rule && last.Handle == ev.Handle && last.Text == ev.Text &&
		(!hasHeader(ev) || last.Header == ev.Header)
}

// tupleFits reports whether ev's addresses can be f's: equal, or rewritten
// by DNAT (destination, before the packet left PREROUTING/OUTPUT) or SNAT
// (source, at POSTROUTING/INPUT; seen again only on loopback).
func (f *flight) tupleFits(ev *Event) bool {
	if !hasHeader(ev) || !f.hasHdr {
		return true
	}
	a, b := &f.cur, &ev.Header
	sameSrc := a.Src == b.Src && a.SPort == b.SPort
	sameDst := a.Dst == b.Dst && a.DPort == b.DPort
	if sameSrc && sameDst {
		return true
	}
	dnat := f.hook == hookPre || f.hook == hookOut || f.hook == hookNone
	snat := f.hook == hookPost || f.hook == hookIn
	return (sameDst || dnat) && (sameSrc || snat)
}

type move uint8

const (
	moveOK move = iota
	moveBack
	moveRestart
)

// evPos returns the hook and table rank of ev for a packet at f's position:
// a user chain runs in the hook of the built-in chain that jumped to it.
func (f *flight) evPos(ev *Event) (hook, int16) {
	return f.posAt(baseHook(ev.Table, ev.Chain), ev.Table)
}

// posAt is evPos for a record in table whose chain's own hook is base
// (hookNone for a user chain).
func (f *flight) posAt(base hook, table string) (hook, int16) {
	h := base
	if h == hookNone {
		h = f.hook
	}
	if h == hookNone {
		return hookNone, rankUnknown
	}
	return h, tableRank(table, h)
}

// placeOf says whether ev can follow f's position.
func (f *flight) placeOf(ev *Event) move {
	h, r := f.evPos(ev)
	return f.placeAt(h, r, ev)
}

// placeAt is placeOf for ev at hook h, table rank r. Two exceptions restart
// a packet at PREROUTING: a bridged packet that DNAT sent to another device
// (br_netfilter re-injects it into the IP stack), and a packet sent to lo.
func (f *flight) placeAt(h hook, r int16, ev *Event) move {
	if f.hook == hookNone || h == hookNone || r == rankUnknown || f.rank == rankUnknown {
		return moveOK
	}
	if h != f.hook {
		if stage(h) > stage(f.hook) {
			return moveOK
		}
		if h == hookPre && !f.restarted && f.hook == hookPost && f.cur.Out == "lo" && ev.Header.In == "lo" {
			return moveRestart
		}
		return moveBack
	}
	if r > f.rank || (r == f.rank && !f.done) {
		return moveOK
	}
	if h == hookPre && !f.restarted && f.pkt.First.PhysIn != "" && hasHeader(ev) &&
		(ev.Header.Dst != f.pkt.First.Dst || ev.Header.DPort != f.pkt.First.DPort) {
		return moveRestart
	}
	return moveBack
}

// start begins a packet with ev's key.
func (g *Grouper) start(key flowKey, hash uint64, ev *Event) *flight {
	for g.used >= g.maxInFlight && g.evict() {
	}
	var f *flight
	if n := len(g.free); n > 0 {
		f = g.free[n-1]
		g.free = g.free[:n-1]
	} else {
		f = new(flight)
	}
	g.used++
	g.serial++
	f.key, f.hash, f.serial = key, hash, g.serial
	f.hook, f.rank = hookNone, rankUnknown
	f.pkt.TraceID, f.pkt.HasID = ev.TraceID, ev.HasID
	f.live = true
	f.wall = g.stamp()
	g.table.insert(f)
	g.inflight++
	g.lruPushBack(f)
	// creation order
	f.fprev = g.fifT
	if g.fifT != nil {
		g.fifT.fnext = f
	} else {
		g.fifH = f
	}
	g.fifT = f
	return f
}

// evict emits the oldest packet early: the oldest started one under
// Ordered (so held packets drain), else the least recently active. It
// reports false when there is nothing to evict.
func (g *Grouper) evict() bool {
	victim := g.lruH
	if g.opts.Ordered {
		victim = g.fifH
	}
	if victim == nil {
		return false
	}
	g.finish(victim, reasonEvict)
	return true
}

func (g *Grouper) appendHop(f *flight, ev *Event) {
	// Place the record before f.cur moves to its header.
	base := baseHook(ev.Table, ev.Chain)
	h, r := f.posAt(base, ev.Table)
	mv := f.placeAt(h, r, ev)
	hdr := &f.cur
	if hasHeader(ev) {
		if !f.hasHdr {
			f.pkt.First = ev.Header
			f.hasHdr = true
		}
		f.cur = ev.Header
		hdr = &ev.Header
		g.index(f)
	}
	if base != hookNone {
		f.at = base
	}
	f.pkt.Hops = append(f.pkt.Hops, Hop{
		Table:   ev.Table,
		Chain:   ev.Chain,
		Hook:    f.at.String(),
		Kind:    ev.Kind,
		Rule:    ev.Rule,
		Handle:  ev.Handle,
		Verdict: ev.Verdict,
		Target:  ev.Target,
		Text:    ev.Text,
		Header:  *hdr,
	})
	g.hops++
	if ev.Time != 0 {
		if f.pkt.Start == 0 {
			f.pkt.Start = ev.Time
		}
		f.pkt.End = ev.Time
	}
	if ev.Seq != 0 {
		f.lastSeq = ev.Seq
	}
	f.wall = g.stamp()
	g.lruMoveToBack(f)

	if r != rankUnknown {
		if h != f.hook || r != f.rank || mv == moveRestart {
			f.hook, f.rank, f.done = h, r, false
		}
		if mv == moveRestart {
			f.restarted = true
		}
	}
	if ev.Table == "nat" {
		f.natSeen = true
	}
	end := EndUnknown
	if g.opts.Ending != nil {
		end = g.opts.Ending(ev)
	}
	f.inChain = goesOn(ev, end)
	if end == EndUnknown {
		end = defaultEnding(ev)
	}
	switch end {
	case EndPacket:
		g.finish(f, reasonComplete)
		return
	case EndTable:
		if r != rankUnknown {
			f.done = true
			if isFinal(f.hook, f.rank, f.natSeen, f.cur.Out) {
				g.finish(f, reasonComplete)
				return
			}
		}
	}
	if g.opts.HookTables != nil && (end == EndTable || end == EndNAT || defaultEnding(ev) == EndTable) && g.hookDone(f, ev.Table, end == EndNAT) {
		g.finish(f, reasonComplete)
	}
}

// maxHookTables bounds the base chains a hook may have for HookTables to
// tell when a packet is done there.
const maxHookTables = 8

// hookDone notes that f's traversal of table's base chain at its current
// hook ended (nat: by translating the packet), and reports whether that was
// the last base chain of a final hook (POSTROUTING but to lo, or INPUT) to
// end (GroupOptions.HookTables).
func (g *Grouper) hookDone(f *flight, table string, nat bool) bool {
	if f.at != hookPost && f.at != hookIn || f.at == hookPost && f.cur.Out == "lo" {
		return false
	}
	if f.endedAt != f.at {
		f.endedAt, f.nEnded, f.natDone = f.at, 0, false
	}
	if f.nEnded == maxHookTables {
		return false
	}
	f.ended[f.nEnded] = table
	f.nEnded++
	f.natDone = f.natDone || nat
	want := g.opts.HookTables(f.pkt.First.Family, f.at.String())
	if len(want) == 0 {
		return false
	}
	// Every base chain of want ended: a nat one once any translated the
	// packet, the others each by a record of its table.
	var used [maxHookTables]bool
	for _, w := range want {
		if w.Nat && f.natDone {
			continue
		}
		found := false
		for i := range f.nEnded {
			if !used[i] && f.ended[i] == w.Table {
				used[i], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// defaultEnding infers an Ending from the record alone.
func defaultEnding(ev *Event) Ending {
	switch ev.Verdict {
	case "DROP", "STOLEN":
		return EndPacket
	case "ACCEPT":
		return EndTable
	case "":
		if ev.Kind == KindPolicy {
			return EndTable // legacy traces do not print the policy: assume ACCEPT
		}
	}
	return EndNone
}

// goesOn reports whether the traversal goes on in the kernel at once after
// ev (StallQuiet): a return to the calling chain, an nft verdict that
// continues it, or, for a legacy record (which carries no verdict), a rule
// the caller's Ending says goes on. An nft record's own verdict outranks
// Ending.
func goesOn(ev *Event, caller Ending) bool {
	if ev.Kind == KindReturn {
		return true
	}
	switch ev.Verdict {
	case "CONTINUE", "JUMP", "GOTO", "RETURN", "BREAK":
		return true
	case "":
		return ev.Kind == KindRule && caller == EndNone
	}
	return false
}

// finish stops assembling f and emits it (under Ordered, once every older
// packet is emitted).
func (g *Grouper) finish(f *flight, why finishReason) {
	if !f.live {
		return
	}
	f.live = false
	g.table.remove(f)
	if f.indexed {
		g.idents.remove(f)
		f.indexed = false
	}
	g.lruRemove(f)
	g.inflight--
	switch why {
	case reasonComplete:
		g.stats.Complete++
	case reasonQuiet:
		g.stats.Quiet++
	case reasonSplit:
		g.stats.Split++
	case reasonEvict:
		g.stats.Evicted++
	case reasonTruncate:
		g.stats.Truncated++
	case reasonFlush:
		g.stats.Flushed++
	}
	if !g.opts.Ordered {
		g.fifoRemove(f)
		g.emit(f)
		return
	}
	f.complete = true
	for h := g.fifH; h != nil && h.complete; h = g.fifH {
		g.fifoRemove(h)
		g.emit(h)
	}
}

// recycleHopCap: a flight whose hop slice grew past this gives it back to
// the garbage collector instead of keeping it in the pool.
const recycleHopCap = 128

func (g *Grouper) emit(f *flight) {
	g.stats.Packets++
	if g.opts.Emit != nil {
		g.opts.Emit(&f.pkt)
	}
	g.hops -= len(f.pkt.Hops)
	hops := f.pkt.Hops[:0]
	if cap(hops) > recycleHopCap {
		hops = nil
	}
	*f = flight{}
	f.pkt.Hops = hops
	g.used--
	g.free = append(g.free, f)
}

func (g *Grouper) lruPushBack(f *flight) {
	f.lprev, f.lnext = g.lruT, nil
	if g.lruT != nil {
		g.lruT.lnext = f
	} else {
		g.lruH = f
	}
	g.lruT = f
}

func (g *Grouper) lruRemove(f *flight) {
	if f.lprev != nil {
		f.lprev.lnext = f.lnext
	} else {
		g.lruH = f.lnext
	}
	if f.lnext != nil {
		f.lnext.lprev = f.lprev
	} else {
		g.lruT = f.lprev
	}
	f.lprev, f.lnext = nil, nil
}

func (g *Grouper) lruMoveToBack(f *flight) {
	if g.lruT == f {
		return
	}
	g.lruRemove(f)
	g.lruPushBack(f)
}

func (g *Grouper) fifoRemove(f *flight) {
	if f.fprev != nil {
		f.fprev.fnext = f.fnext
	} else {
		g.fifH = f.fnext
	}
	if f.fnext != nil {
		f.fnext.fprev = f.fprev
	} else {
		g.fifT = f.fprev
	}
	f.fprev, f.fnext = nil, nil
}

// flightTable is an open-addressing hash multimap from flowKey to live
// flights (linear probing, backward-shift deletion): fixed size, so adding
// and removing packets never allocates. It is sized to at least twice
// MaxInFlight, so it never fills. It indexes flights by their key, or with
// byIdent by their identity.
type flightTable struct {
	slots   []tslot
	mask    uint64
	byIdent bool
}

type tslot struct {
	hash uint64
	f    *flight
}

func newFlightTable(n int, byIdent bool) flightTable {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	return flightTable{slots: make([]tslot, size), mask: uint64(size - 1), byIdent: byIdent}
}

// entry returns what f is indexed by in t.
func (t *flightTable) entry(f *flight) (flowKey, uint64) {
	if t.byIdent {
		return f.ident, f.identHash
	}
	return f.key, f.hash
}

func (t *flightTable) insert(f *flight) {
	_, hash := t.entry(f)
	i := hash & t.mask
	for t.slots[i].f != nil {
		i = (i + 1) & t.mask
	}
	t.slots[i] = tslot{hash: hash, f: f}
}

func (t *flightTable) find(k flowKey, hash uint64) *flight {
	for i := hash & t.mask; t.slots[i].f != nil; i = (i + 1) & t.mask {
		if s := &t.slots[i]; s.hash == hash {
			if fk, _ := t.entry(s.f); fk == k {
				return s.f
			}
		}
	}
	return nil
}

// collect appends every flight with key k to dst.
func (t *flightTable) collect(k flowKey, hash uint64, dst []*flight) []*flight {
	for i := hash & t.mask; t.slots[i].f != nil; i = (i + 1) & t.mask {
		if s := &t.slots[i]; s.hash == hash {
			if fk, _ := t.entry(s.f); fk == k {
				dst = append(dst, s.f)
			}
		}
	}
	return dst
}

func (t *flightTable) remove(f *flight) {
	_, hash := t.entry(f)
	i := hash & t.mask
	for t.slots[i].f != f {
		if t.slots[i].f == nil {
			return
		}
		i = (i + 1) & t.mask
	}
	for {
		t.slots[i] = tslot{}
		j := i
		for {
			j = (j + 1) & t.mask
			if t.slots[j].f == nil {
				return
			}
			home := t.slots[j].hash & t.mask
			// The entry at j may move to the hole at i unless its home
			// slot lies cyclically in (i, j].
			if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
				t.slots[i] = t.slots[j]
				i = j
				break
			}
		}
	}
}

// Clone returns a deep copy of p, for Emit callers that keep packets.
func (p *Packet) Clone() *Packet {
	c := *p
	c.Hops = slices.Clone(p.Hops)
	return &c
}
