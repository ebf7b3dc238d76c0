package trace

import (
	"bytes"
	"net/netip"
)

// decodeXtmon decodes `xtables-monitor --trace` lines:
//
//	PACKET: 2 0b6f6c71 OUT=kcn0 SRC=... DST=... LEN=60 TOS=0x0 TTL=64 ID=58119 DF SPORT=56720 DPORT=80 SYN
//	 TRACE: 2 0b6f6c71 nat:KUBE-SERVICES:rule:0x74:JUMP:KUBE-SVC-XJWXQFJLXSXKRMSG  -4 -t nat -A KUBE-SERVICES ...
//	 TRACE: 2 0b6f6c71 raw:OUTPUT:policy:ACCEPT
//
// The PACKET line (one per base chain traversal) is remembered per trace id
// and copied into the id's following TRACE records.
func (d *Decoder) decodeXtmon(line []byte, ev *Event) Result {
	b := trimSpace(line)
	switch {
	case hasPrefix(b, "PACKET: "):
		return d.xtmonPacket(b[len("PACKET: "):])
	case hasPrefix(b, "TRACE: "):
		return d.xtmonTrace(b[len("TRACE: "):], ev)
	}
	return ResultSkip // EVENT:, NEWGEN:, rule dumps, blank lines
}

// xtmonIDs parses the "FAMILY HEXID " pair.
func xtmonIDs(b []byte) (id uint32, rest int, ok bool) {
	fam, i := nextField(b, 0)
	if _, ok := parseUint8(fam); !ok {
		return 0, 0, false
	}
	tok, i := nextField(b, i)
	id, ok = parseHex32(tok)
	return id, i, ok
}

func (d *Decoder) xtmonPacket(b []byte) Result {
	id, i, ok := xtmonIDs(b)
	if !ok {
		return ResultMalformed
	}
	var h Header
	tcpFlags, ports := false, false
	for i < len(b) {
		var tok []byte
		tok, i = nextField(b, i)
		if len(tok) == 0 {
			break
		}
		if tok[0] == '(' { // OPT (hex)
			continue
		}
		eq := bytes.IndexByte(tok, '=')
		if eq < 0 {
			bit := TCPFlagBit(tok)
			if bit == 0 {
				continue
			}
			h.TCPFlags |= bit
			tcpFlags = true
			continue
		}
		key, val := tok[:eq], tok[eq+1:]
		var good bool
		switch string(key) {
		case "IN":
			h.In = d.names.Get(val)
			good = true
		case "OUT":
			h.Out = d.names.Get(val)
			good = true
		case "SRC":
			h.Src, good = parseAddr(val)
			h.Family = familyOf(h.Src)
		case "DST":
			h.Dst, good = parseAddr(val)
		case "LEN":
			var n uint32
			n, good = parseUint32(val)
			if n > 1<<16-1 {
				n = 1<<16 - 1
			}
			h.Len = uint16(n)
		case "ID":
			// Older releases print "ID=123DF " (no space before the flags).
			k := 0
			for k < len(val) && val[k] >= '0' && val[k] <= '9' {
				k++
			}
			h.IPID, good = parseUint32(val[:k])
		case "FLOWLBL":
			h.IPID, good = parseUint32(val)
		case "SPORT":
			h.SPort, good = parseUint16(val)
			ports = true
		case "DPORT":
			h.DPort, good = parseUint16(val)
			ports = true
		case "MARK":
			h.Mark, good = parseHex32(val)
		default:
			good = true
		}
		if !good {
			return ResultMalformed
		}
	}
	if h.Src.IsValid() != h.Dst.IsValid() {
		return ResultMalformed // cut short; no address at all is ARP or a non-IP family
	}
	// xtables-monitor prints no protocol: TCP shows flags, UDP (and SCTP,
	// DCCP, UDP-Lite, reported as UDP here) only ports, others nothing.
	switch {
	case tcpFlags:
		h.Proto = ProtoTCP
	case ports:
		h.Proto = ProtoUDP
	}
	d.setHeader(id, &h)
	return ResultHeader
}

// xtmonTypes are the record types in "table:chain:TYPE:...".
var xtmonTypes = [...]struct {
	marker string
	kind   Kind
}{
	{":rule:", KindRule},
	{":policy:", KindPolicy},
	{":return:", KindReturn},
}

func (d *Decoder) xtmonTrace(b []byte, ev *Event) Result {
	id, i, ok := xtmonIDs(b)
	if !ok {
		return ResultMalformed
	}
	spec, i := nextField(b, i)
	c1 := bytes.IndexByte(spec, ':')
	if c1 <= 0 {
		return ResultMalformed
	}
	m, kind, mlen := -1, Kind(0), 0
	for _, t := range xtmonTypes {
		if k := bytes.Index(spec[c1:], []byte(t.marker)); k > 1 && (m < 0 || c1+k < m) { // k > 1: a non-empty chain
			m, kind, mlen = c1+k, t.kind, len(t.marker)
		}
	}
	if m < 0 {
		return ResultMalformed
	}
	*ev = Event{
		TraceID: id,
		HasID:   true,
		Table:   d.names.Get(spec[:c1]),
		Chain:   d.names.Get(spec[c1+1 : m]),
		Kind:    kind,
	}
	rest := spec[m+mlen:]
	if kind == KindRule {
		k := bytes.IndexByte(rest, ':')
		if k < 0 {
			k = len(rest)
		}
		ev.Handle, ok = parseHex(rest[:k])
		if !ok {
			return ResultMalformed
		}
		if k < len(rest) {
			rest = rest[k+1:]
		} else {
			rest = nil
		}
	}
	// VERDICT[:TARGET]; a return record prints at most a target.
	k := bytes.IndexByte(rest, ':')
	verdict, target := rest, []byte(nil)
	if k >= 0 {
		verdict, target = rest[:k], rest[k+1:]
	}
	if kind == KindReturn && k < 0 && len(rest) > 0 && xtmonVerdict(rest) == "" {
		verdict, target = nil, rest
	}
	if len(verdict) > 0 {
		ev.Verdict = xtmonVerdict(verdict)
		if ev.Verdict == "" {
			return ResultMalformed
		}
	}
	ev.Target = d.names.Get(target)
	if kind == KindRule {
		ev.Text = d.texts.Get(xtmonRuleText(trimSpace(b[i:])))
	}
	d.fillHeader(id, ev)
	return ResultEvent
}

// xtmonVerdict maps xtables-monitor's verdict words (and the hex it prints
// for nft verdict codes it has no word for) to Event.Verdict.
func xtmonVerdict(v []byte) string {
	switch string(v) {
	case "ACCEPT":
		return "ACCEPT"
	case "DROP":
		return "DROP"
	case "QUEUE":
		return "QUEUE"
	case "STOLEN":
		return "STOLEN"
	case "BREAK":
		return "BREAK"
	case "CONTINUE", "0xffffffff":
		return "CONTINUE"
	case "JUMP", "0xfffffffd":
		return "JUMP"
	case "GOTO", "0xfffffffc":
		return "GOTO"
	case "RETURN", "0xfffffffb":
		return "RETURN"
	case "0xfffffffe":
		return "BREAK"
	}
	return ""
}

// xtmonRuleText turns "-4 -t nat -A CHAIN ..." (or iptables 1.8.11's
// "iptables -t nat -A CHAIN ...") into the "-A CHAIN ..." form iptables -S
// prints.
func xtmonRuleText(t []byte) []byte {
	first, i := nextField(t, 0)
	switch string(first) {
	case "-4", "-6", "-0", "iptables", "ip6tables", "arptables", "ebtables":
		opt, j := nextField(t, i)
		if string(opt) == "-t" {
			_, j = nextField(t, j)
			return trimSpace(t[j:])
		}
		return trimSpace(t[i:])
	}
	return t
}

func familyOf(a netip.Addr) uint8 {
	switch {
	case a.Is4():
		return 4
	case a.Is6():
		return 6
	}
	return 0
}
