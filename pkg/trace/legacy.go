package trace

import "bytes"

// splitLegacyID splits the "table:chain:type:num" token of a legacy TRACE
// record. The chain is everything between the first and the next-to-last
// colon, so odd chain names survive.
func splitLegacyID(tok []byte) (table, chain []byte, kind Kind, num int, ok bool) {
	c1 := bytes.IndexByte(tok, ':')
	last := bytes.LastIndexByte(tok, ':')
	if c1 <= 0 || last <= c1 {
		return nil, nil, 0, 0, false
	}
	prev := bytes.LastIndexByte(tok[:last], ':')
	if prev <= c1+1 {
		return nil, nil, 0, 0, false
	}
	switch string(tok[prev+1 : last]) {
	case "rule":
		kind = KindRule
	case "return":
		kind = KindReturn
	case "policy":
		kind = KindPolicy
	default:
		return nil, nil, 0, 0, false
	}
	n, good := parseUint(tok[last+1:])
	if !good || n > 1<<31-1 {
		return nil, nil, 0, 0, false
	}
	return tok[:c1], tok[c1+1 : prev], kind, int(n), true
}

// legacy field-parsing state: which fields were seen, so that a record cut
// short is reported as malformed instead of as a packet without ports.
type legacySeen uint16

const (
	seenSrc legacySeen = 1 << iota
	seenDst
	seenProto
	seenSPT
	seenDPT
	seenSeq
	seenType
	seenFrag       // non-first fragment: no transport header
	seenIncomplete // transport header cut short by the kernel
)

// parseLegacy parses a legacy TRACE record after its "TRACE: " prefix (see
// nf_log_syslog: fields in a fixed order, each followed by a space). Unknown
// fields and flags are ignored; a missing SRC/DST/PROTO or missing ports for
// TCP/UDP make the record malformed (truncated).
func (d *Decoder) parseLegacy(b []byte, ev *Event) bool {
	id, i := nextField(b, 0)
	table, chain, kind, num, ok := splitLegacyID(id)
	if !ok {
		return false
	}
	*ev = Event{}
	ev.Table = d.names.Get(table)
	ev.Chain = d.names.Get(chain)
	ev.Kind = kind
	ev.Rule = num
	ev.HasHeader = true
	h := &ev.Header

	var seen legacySeen
	l4 := false // after PROTO=: ID, SEQ and LEN belong to the transport header
	for i < len(b) {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i >= len(b) {
			break
		}
		switch b[i] {
		case '[':
			// ICMP error: the offending packet in brackets (may nest).
			depth := 0
			for ; i < len(b); i++ {
				if b[i] == '[' {
					depth++
				} else if b[i] == ']' {
					depth--
					if depth == 0 {
						i++
						break
					}
				}
			}
			continue
		case '(':
			// OPT (hex...) value.
			k := bytes.IndexByte(b[i:], ')')
			if k < 0 {
				i = len(b)
			} else {
				i += k + 1
			}
			continue
		}
		// Keys are upper-case words; a token without '=' after its
		// letters is a flag (DF, SYN, FRAG:n, OPT, INCOMPLETE).
		start := i
		var key uint64 // packed as packKey does, while scanning
		for i < len(b) && b[i] >= 'A' && b[i] <= 'Z' {
			key = key<<8 | uint64(b[i])
			i++
		}
		if i == len(b) || b[i] != '=' {
			for i < len(b) && b[i] != ' ' {
				i++
			}
			legacyFlag(b[start:i], h, &seen)
			continue
		}
		if i-start > 8 {
			key = 0
		}
		i++
		vstart := i
		if key == kMAC {
			if k := bytes.IndexByte(b[i:], ' '); k >= 0 {
				i += k
			} else {
				i = len(b)
			}
			ev.HasLink = parseLinkHeader(b[vstart:i], &ev.LinkDst, &ev.LinkSrc)
			continue
		}
		for i < len(b) && b[i] != ' ' {
			i++
		}
		val := b[vstart:i]
		good := true
		// Unlisted keys (TOS PREC TTL TC HOPLIMIT ACK WINDOW RES URGP UID
		// GID MTU ...) are not needed to follow or show the packet.
		switch key {
		case kIN:
			h.In = d.names.Get(val)
		case kOUT:
			h.Out = d.names.Get(val)
		case kPHYSIN:
			h.PhysIn = d.names.Get(val)
		case kPHYSOUT:
			h.PhysOut = d.names.Get(val)
		case kSRC:
			if !l4 { // after PROTO= it is an ICMP error's inner packet
				h.Src, good = parseAddr(val)
				h.Family = familyOf(h.Src)
				seen |= seenSrc
			}
		case kDST:
			if !l4 {
				h.Dst, good = parseAddr(val)
				seen |= seenDst
			}
		case kLEN:
			if !l4 { // after PROTO= it is the UDP length
				var n uint32
				n, good = parseUint32(val)
				h.Len = uint16(min(n, 1<<16-1))
			}
		case kID:
			if l4 {
				h.ICMPID, good = parseUint16(val)
			} else {
				h.IPID, good = parseUint32(val)
			}
		case kFLOWLBL:
			h.IPID, good = parseUint32(val)
		case kPROTO:
			l4 = true
			seen |= seenProto
			h.Proto, good = legacyProto(val)
		case kSPT:
			h.SPort, good = parseUint16(val)
			seen |= seenSPT
		case kDPT:
			h.DPort, good = parseUint16(val)
			seen |= seenDPT
		case kSEQ:
			if h.Proto == ProtoTCP {
				h.TCPSeq, good = parseUint32(val)
			} else {
				h.ICMPSeq, good = parseUint16(val)
			}
			seen |= seenSeq
		case kTYPE:
			h.ICMPType, good = parseUint8(val)
			seen |= seenType
		case kCODE:
			h.ICMPCode, good = parseUint8(val)
		case kMARK:
			h.Mark, good = parseHex32(val)
		}
		if !good {
			return false
		}
		continue
		// TOS PREC TTL TC HOPLIMIT ACK WINDOW RES URGP UID GID MTU ...:
		// not needed to follow or show the packet.
	}
	if seen&(seenSrc|seenDst|seenProto) != seenSrc|seenDst|seenProto {
		return false
	}
	if seen&(seenFrag|seenIncomplete) == 0 {
		switch h.Proto {
		case ProtoTCP:
			if seen&(seenSPT|seenDPT|seenSeq) != seenSPT|seenDPT|seenSeq {
				return false
			}
		case ProtoUDP, protoUDPLite:
			if seen&(seenSPT|seenDPT) != seenSPT|seenDPT {
				return false
			}
		case ProtoICMP, ProtoICMPv6:
			if seen&seenType == 0 {
				return false
			}
		}
	}
	return true
}

const (
	protoUDPLite uint8 = 136
	protoAH      uint8 = 51
	protoESP     uint8 = 50
)

// legacyProto maps the PROTO= value (a name nf_log_syslog knows, else the
// protocol number).
func legacyProto(v []byte) (uint8, bool) {
	switch string(v) {
	case "TCP":
		return ProtoTCP, true
	case "UDP":
		return ProtoUDP, true
	case "UDPLITE":
		return protoUDPLite, true
	case "ICMP":
		return ProtoICMP, true
	case "ICMPv6":
		return ProtoICMPv6, true
	case "SCTP":
		return ProtoSCTP, true
	case "AH":
		return protoAH, true
	case "ESP":
		return protoESP, true
	}
	return parseUint8(v)
}

// legacyFlag handles a token without '=': IP and TCP flags, FRAG:n,
// INCOMPLETE, OPT.
func legacyFlag(tok []byte, h *Header, seen *legacySeen) {
	switch packKey(tok) {
	case kSYN:
		h.TCPFlags |= TCPSyn
	case kACK:
		h.TCPFlags |= TCPAck
	case kFIN:
		h.TCPFlags |= TCPFin
	case kRST:
		h.TCPFlags |= TCPRst
	case kPSH:
		h.TCPFlags |= TCPPsh
	case kURG:
		h.TCPFlags |= TCPUrg
	case kECE:
		h.TCPFlags |= TCPEce
	case kCWR:
		h.TCPFlags |= TCPCwr
	default:
		switch {
		case string(tok) == "INCOMPLETE" || string(tok) == "TRUNCATED":
			*seen |= seenIncomplete
		case hasPrefix(tok, "FRAG:"):
			if n, ok := parseUint(tok[len("FRAG:"):]); ok && n != 0 {
				*seen |= seenFrag
			}
		}
	}
}

// packKey packs a key or flag of up to 8 bytes into an integer, so that
// field dispatch is an integer switch instead of string comparisons. Longer
// words pack to 0 (no case matches them).
func packKey(b []byte) uint64 {
	if len(b) > 8 {
		return 0
	}
	var k uint64
	for _, c := range b {
		k = k<<8 | uint64(c)
	}
	return k
}

// Packed keys and flags (see packKey).
const (
	kIN      = 'I'<<8 | 'N'
	kID      = 'I'<<8 | 'D'
	kOUT     = 'O'<<16 | 'U'<<8 | 'T'
	kSRC     = 'S'<<16 | 'R'<<8 | 'C'
	kDST     = 'D'<<16 | 'S'<<8 | 'T'
	kLEN     = 'L'<<16 | 'E'<<8 | 'N'
	kSPT     = 'S'<<16 | 'P'<<8 | 'T'
	kDPT     = 'D'<<16 | 'P'<<8 | 'T'
	kSEQ     = 'S'<<16 | 'E'<<8 | 'Q'
	kTYPE    = 'T'<<24 | 'Y'<<16 | 'P'<<8 | 'E'
	kCODE    = 'C'<<24 | 'O'<<16 | 'D'<<8 | 'E'
	kMARK    = 'M'<<24 | 'A'<<16 | 'R'<<8 | 'K'
	kMAC     = 'M'<<16 | 'A'<<8 | 'C'
	kPROTO   = 'P'<<32 | 'R'<<24 | 'O'<<16 | 'T'<<8 | 'O'
	kPHYSIN  = 'P'<<40 | 'H'<<32 | 'Y'<<24 | 'S'<<16 | 'I'<<8 | 'N'
	kPHYSOUT = 'P'<<48 | 'H'<<40 | 'Y'<<32 | 'S'<<24 | 'O'<<16 | 'U'<<8 | 'T'
	kFLOWLBL = 'F'<<48 | 'L'<<40 | 'O'<<32 | 'W'<<24 | 'L'<<16 | 'B'<<8 | 'L'
	kSYN     = 'S'<<16 | 'Y'<<8 | 'N'
	kACK     = 'A'<<16 | 'C'<<8 | 'K'
	kFIN     = 'F'<<16 | 'I'<<8 | 'N'
	kRST     = 'R'<<16 | 'S'<<8 | 'T'
	kPSH     = 'P'<<16 | 'S'<<8 | 'H'
	kURG     = 'U'<<16 | 'R'<<8 | 'G'
	kECE     = 'E'<<16 | 'C'<<8 | 'E'
	kCWR     = 'C'<<16 | 'W'<<8 | 'R'
)

// parseLinkHeader reads an Ethernet MAC= value, "dst:src:type" as 14 or
// more colon-separated hex bytes, into its destination and source
// addresses; false for anything else (an empty or shorter link header).
func parseLinkHeader(v []byte, dst, src *[6]byte) bool {
	if len(v) < 14*3-1 {
		return false
	}
	for n := 0; n < 12; n++ {
		j := n * 3
		if v[j+2] != ':' {
			return false
		}
		hi, ok1 := unhex(v[j])
		lo, ok2 := unhex(v[j+1])
		if !ok1 || !ok2 {
			return false
		}
		if n < 6 {
			dst[n] = hi<<4 | lo
		} else {
			src[n-6] = hi<<4 | lo
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
