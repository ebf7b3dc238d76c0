package explain

import (
	"net/netip"

	"github.com/svctrace/kubectl-svctrace/pkg/intern"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// recordMem is the memory of packet records that are dropped together (a
// Parallel batch's): their hops, translations and explanations are cut
// from a few slices that the next records reuse after reset, and the
// strings annotation formats (addresses, summaries) are interned, so every
// record formatting the same one shares it. A nil *recordMem allocates
// each record its own. It is not safe for concurrent use.
type recordMem struct {
	hops     []record.Hop
	nat      []record.NAT
	explains []record.Explain
	strs     intern.Table
}

// maxMemStrings bounds the strings a recordMem keeps.
const maxMemStrings = 1 << 12

func newRecordMem() *recordMem { return &recordMem{strs: intern.New(maxMemStrings)} }

// reset makes the memory of every record handed out so far free for the
// next ones: those records must no longer be used.
func (m *recordMem) reset() {
	m.hops, m.nat, m.explains = m.hops[:0], m.nat[:0], m.explains[:0]
}

// newHops returns n hops for a record (their contents are stale: the
// caller sets every one).
func (m *recordMem) newHops(n int) []record.Hop {
	if m == nil {
		return make([]record.Hop, n)
	}
	k := len(m.hops)
	if k+n > cap(m.hops) {
		// The records already given keep the old slice.
		m.hops, k = make([]record.Hop, 0, max(2*cap(m.hops), n, 1024)), 0
	}
	m.hops = m.hops[:k+n]
	return m.hops[k : k+n : k+n]
}

// newNAT returns an empty, non-nil slice with room for the translations of
// a path of n hops (inferNAT appends at most one per hop from its rule,
// one inferred DNAT and one inferred SNAT); keepNAT then takes what was
// appended.
func (m *recordMem) newNAT(n int) []record.NAT {
	if m == nil {
		return []record.NAT{}
	}
	k, room := len(m.nat), n+2
	if k+room > cap(m.nat) {
		m.nat, k = make([]record.NAT, 0, max(2*cap(m.nat), room, 256)), 0
	}
	return m.nat[k : k : k+room]
}

// keepNAT takes the translations appended to the slice newNAT gave and
// returns them, capped so that a later append copies them out of m.
func (m *recordMem) keepNAT(nat []record.NAT) []record.NAT {
	if m == nil {
		return nat
	}
	if k := len(m.nat) + len(nat); k <= cap(m.nat) {
		m.nat = m.nat[:k]
	}
	return nat[:len(nat):len(nat)]
}

// newExplain returns a zero Explain for a record.
func (m *recordMem) newExplain() *record.Explain {
	if m == nil {
		return &record.Explain{}
	}
	if len(m.explains) == cap(m.explains) {
		m.explains = make([]record.Explain, 0, max(2*cap(m.explains), 128))
	}
	m.explains = append(m.explains, record.Explain{})
	return &m.explains[len(m.explains)-1]
}

// text returns b as a string, interned in m.
func (m *recordMem) text(b []byte) string {
	if m == nil {
		return string(b)
	}
	return m.strs.Get(b)
}

// appendEndpoint appends "ip:port" ("[ip]:port" for IPv6), or "ip" for
// protocols without ports, to b; nothing for an invalid address.
func appendEndpoint(b []byte, ip netip.Addr, port uint16, proto uint8) []byte {
	if !ip.IsValid() {
		return b
	}
	switch proto {
	case trace.ProtoTCP, trace.ProtoUDP, trace.ProtoSCTP:
		return netip.AddrPortFrom(ip, port).AppendTo(b)
	}
	return ip.AppendTo(b)
}
