package trace

import (
	"bytes"
)

// decodeNftmon decodes `nft monitor trace` lines:
//
//	trace id 0b6f6c71 ip raw OUTPUT packet: oif "kcn0" ip saddr 10.199.0.2 ip daddr 10.96.173.227 ... tcp sport 56720 tcp dport 80 tcp flags == syn ...
//	trace id 0b6f6c71 ip nat KUBE-SERVICES rule meta l4proto tcp ... jump KUBE-SVC-XJWXQFJLXSXKRMSG (verdict jump KUBE-SVC-XJWXQFJLXSXKRMSG)
//	trace id 0b6f6c71 ip filter OUTPUT policy accept meta mark 0x00004000
//	trace id a95ea7ef ip filter trace_chain verdict continue
//
// Chain names may contain '/' (kube-proxy nftables mode). The "packet:" line
// is remembered per trace id; "conntrack:" lines are skipped.
func (d *Decoder) decodeNftmon(line []byte, ev *Event) Result {
	if !hasPrefix(line, "trace id ") {
		return ResultSkip
	}
	b := line[len("trace id "):]
	idTok, i := nextField(b, 0)
	id, ok := parseHex32(idTok)
	if !ok {
		return ResultMalformed
	}
	family, i := nextField(b, i)
	table, i := nextField(b, i)
	chain, i := nextField(b, i)
	word, i := nextField(b, i)
	if len(family) == 0 || len(table) == 0 || len(chain) == 0 || len(word) == 0 {
		return ResultMalformed
	}
	switch string(word) {
	case "packet:":
		return d.nftPacket(id, b[i:])
	case "conntrack:":
		return ResultSkip
	}
	*ev = Event{
		TraceID: id,
		HasID:   true,
		Table:   d.names.Get(table),
		Chain:   d.names.Get(chain),
	}
	rest := b[i:]
	switch string(word) {
	case "rule":
		ev.Kind = KindRule
		if !d.nftRule(rest, ev) {
			return ResultMalformed
		}
	case "unknown": // "unknown rule handle N (verdict ...)"
		ev.Kind = KindRule
		if !hasPrefix(trimSpace(rest), "rule handle ") || !d.nftRule(rest, ev) {
			return ResultMalformed
		}
		ev.Text = ""
	case "policy":
		ev.Kind = KindPolicy
		v, j := nextField(rest, 0)
		ev.Verdict = nftVerdict(v)
		if ev.Verdict == "" {
			return ResultMalformed
		}
		rest = rest[j:]
	case "verdict":
		// End of a regular chain: an implicit return, with the verdict
		// that applies (continue, or what the chain's last rule said).
		ev.Kind = KindReturn
		v, j := nextField(rest, 0)
		ev.Verdict = nftVerdict(v)
		if ev.Verdict == "" {
			return ResultMalformed
		}
		rest = rest[j:]
		if ev.Verdict == "JUMP" || ev.Verdict == "GOTO" {
			var t []byte
			t, j = nextField(rest, 0)
			ev.Target = d.names.Get(t)
			rest = rest[j:]
		}
	case "return":
		ev.Kind = KindReturn
	default:
		return ResultMalformed
	}
	d.fillHeader(id, ev)
	// Policy and return records end with the packet mark, when set.
	if ev.Kind != KindRule {
		if k := bytes.Index(rest, []byte("meta mark ")); k >= 0 {
			v, _ := nextField(rest, k+len("meta mark "))
			if m, ok := parseHex32(v); ok {
				ev.Header.Mark = m
				if h := d.header(id); h != nil {
					h.Mark = m
				}
			}
		}
	}
	return ResultEvent
}

// nftRule parses "TEXT [# handle N] (verdict V [TARGET])" into ev.
func (d *Decoder) nftRule(b []byte, ev *Event) bool {
	b = trimSpace(b)
	k := bytes.LastIndex(b, []byte("(verdict "))
	if k < 0 || b[len(b)-1] != ')' {
		return false
	}
	v := b[k+len("(verdict ") : len(b)-1]
	text := trimSpace(b[:k])
	word, j := nextField(v, 0)
	ev.Verdict = nftVerdict(word)
	if ev.Verdict == "" {
		return false
	}
	if t, _ := nextField(v, j); len(t) > 0 {
		ev.Target = d.names.Get(t)
	}
	if h := bytes.LastIndex(text, []byte("# handle ")); h >= 0 {
		n, ok := parseUint(trimSpace(text[h+len("# handle "):]))
		if !ok {
			return false
		}
		ev.Handle = n
		text = trimSpace(text[:h])
	} else if hasPrefix(text, "rule handle ") { // "unknown rule handle N"
		n, ok := parseUint(trimSpace(text[len("rule handle "):]))
		if !ok {
			return false
		}
		ev.Handle = n
		return true
	}
	ev.Text = d.texts.Get(d.normalizeNftText(text))
	return true
}

// normalizeNftText drops the counter values ("counter packets 6 bytes 360"
// becomes "counter") and collapses runs of spaces: the text then matches
// across packets (and interns) and reads like the ruleset listing.
func (d *Decoder) normalizeNftText(t []byte) []byte {
	out := d.scratch[:0]
	for i := 0; i < len(t); {
		if t[i] == ' ' {
			if len(out) > 0 && out[len(out)-1] != ' ' {
				out = append(out, ' ')
			}
			i++
			continue
		}
		if hasPrefix(t[i:], "counter packets ") && (i == 0 || t[i-1] == ' ') {
			j := i + len("counter packets ")
			n1, j := nextField(t, j)
			bw, j2 := nextField(t, j)
			n2, j3 := nextField(t, j2)
			if _, ok := parseUint(n1); ok && string(bw) == "bytes" {
				if _, ok := parseUint(n2); ok {
					out = append(out, "counter"...)
					i = j3
					continue
				}
			}
		}
		out = append(out, t[i])
		i++
	}
	for len(out) > 0 && out[len(out)-1] == ' ' {
		out = out[:len(out)-1]
	}
	d.scratch = out
	return out
}

// nftVerdict maps nft's verdict words to Event.Verdict.
func nftVerdict(v []byte) string {
	switch string(v) {
	case "accept":
		return "ACCEPT"
	case "drop":
		return "DROP"
	case "continue":
		return "CONTINUE"
	case "jump":
		return "JUMP"
	case "goto":
		return "GOTO"
	case "return":
		return "RETURN"
	case "queue":
		return "QUEUE"
	case "stolen":
		return "STOLEN"
	case "break":
		return "BREAK"
	}
	return ""
}

// nftPacket parses the "packet:" statement list (iif/oif, ip/ip6, tcp, udp,
// icmp, icmpv6 fields; ether, vlan, meta and others are skipped) and keeps
// it as the trace id's current header. A packet without an IP header (ARP
// in a bridge or inet table) keeps a header without addresses.
func (d *Decoder) nftPacket(id uint32, b []byte) Result {
	var h Header
	sawMark, sawIP := false, false
	i := 0
	for i < len(b) {
		var proto []byte
		proto, i = nextField(b, i)
		if len(proto) == 0 {
			break
		}
		switch string(proto) {
		case "iif", "oif":
			var v []byte
			v, i = nextField(b, i)
			v = bytes.Trim(v, `"`)
			if proto[0] == 'i' {
				h.In = d.names.Get(v)
			} else {
				h.Out = d.names.Get(v)
			}
			continue
		case "ip", "ip6", "tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6", "meta", "ether", "vlan", "arp", "th":
		default:
			continue // not a "proto field value" triple: resynchronise
		}
		var field, val []byte
		field, i = nextField(b, i)
		val, i = nextField(b, i)
		if string(val) == "==" || string(val) == "!=" {
			val, i = nextField(b, i)
		}
		if len(field) == 0 || len(val) == 0 {
			return ResultMalformed
		}
		if !d.nftPacketField(&h, string(proto), field, val) {
			return ResultMalformed
		}
		switch {
		case string(proto) == "meta" && string(field) == "mark":
			sawMark = true
		case string(proto) == "ip" || string(proto) == "ip6":
			sawIP = true // then both addresses must be there
		}
		if string(proto) == "tcp" && string(field) == "flags" {
			// "syn | ack", "syn|ack", "syn,ack": more flags may follow.
			for {
				next, j := nextField(b, i)
				if len(next) == 0 {
					break
				}
				if next[0] == '|' || next[0] == ',' || val[len(val)-1] == '|' || val[len(val)-1] == ',' {
					h.TCPFlags |= nftTCPFlags(next)
					val, i = next, j
					continue
				}
				break
			}
		}
	}
	if sawIP && (!h.Src.IsValid() || !h.Dst.IsValid()) {
		return ResultMalformed // cut short
	}
	if !sawMark {
		// nft monitor prints the mark on policy and return lines only: a
		// later base chain of the same packet still carries it.
		if prev := d.header(id); prev != nil && prev.Family == h.Family && prev.IPID == h.IPID && prev.Len == h.Len {
			h.Mark = prev.Mark
		}
	}
	d.setHeader(id, &h)
	return ResultHeader
}

func (d *Decoder) nftPacketField(h *Header, proto string, field, val []byte) bool {
	var ok bool
	switch proto {
	case "ip", "ip6":
		switch string(field) {
		case "saddr":
			h.Src, ok = parseAddr(val)
			h.Family = familyOf(h.Src)
			return ok
		case "daddr":
			h.Dst, ok = parseAddr(val)
			return ok
		case "id", "flowlabel":
			h.IPID, ok = parseUint32(val)
			return ok
		case "length":
			var n uint32
			n, ok = parseUint32(val)
			if n > 1<<16-1 {
				n = 1<<16 - 1
			}
			h.Len = uint16(n)
			return ok
		case "protocol", "nexthdr":
			if p := protoByName(val); p != 0 {
				h.Proto = p
			}
			return true
		}
		return true
	case "tcp", "udp", "udplite", "sctp", "dccp", "th":
		if h.Proto == 0 {
			h.Proto = protoByName([]byte(proto))
		}
		switch string(field) {
		case "sport":
			h.SPort, ok = parseUint16(val)
			return ok
		case "dport":
			h.DPort, ok = parseUint16(val)
			return ok
		case "sequence":
			if proto == "tcp" {
				h.TCPSeq, ok = parseUint32(val)
				return ok
			}
		case "flags":
			if proto == "tcp" {
				h.TCPFlags |= nftTCPFlags(val)
			}
		}
		return true
	case "icmp", "icmpv6":
		if h.Proto == 0 {
			h.Proto = protoByName([]byte(proto))
		}
		switch string(field) {
		case "type":
			if n, ok := parseUint8(val); ok {
				h.ICMPType = n
			} else {
				h.ICMPType = icmpTypeByName(proto == "icmpv6", val)
			}
		case "code":
			if n, ok := parseUint8(val); ok {
				h.ICMPCode = n
			} else {
				h.ICMPCode = icmpCodeByName(proto == "icmpv6", val)
			}
		case "id":
			h.ICMPID, ok = parseUint16(val)
			return ok
		case "sequence":
			h.ICMPSeq, ok = parseUint16(val)
			return ok
		}
		return true
	case "meta":
		if string(field) == "mark" {
			h.Mark, ok = parseHex32(val)
			return ok
		}
	}
	return true
}

// nftTCPFlags maps "syn", "syn|ack", "syn,ack", "|ack" or "0x12" to flag bits.
func nftTCPFlags(v []byte) uint8 {
	if n, ok := parseHex(v); ok && hasPrefix(v, "0x") {
		return uint8(n)
	}
	var f uint8
	for len(v) > 0 {
		k := bytes.IndexAny(v, "|,")
		w := v
		if k >= 0 {
			w, v = v[:k], v[k+1:]
		} else {
			v = nil
		}
		f |= TCPFlagBit(w)
	}
	return f
}

func protoByName(v []byte) uint8 {
	switch string(v) {
	case "tcp":
		return ProtoTCP
	case "udp":
		return ProtoUDP
	case "icmp":
		return ProtoICMP
	case "icmpv6", "ipv6-icmp":
		return ProtoICMPv6
	case "sctp":
		return ProtoSCTP
	case "udplite":
		return protoUDPLite
	case "dccp":
		return 33
	case "esp":
		return protoESP
	case "ah":
		return protoAH
	case "gre":
		return 47
	}
	if n, ok := parseUint8(v); ok {
		return n
	}
	return 0
}

func icmpTypeByName(v6 bool, v []byte) uint8 {
	if v6 {
		switch string(v) {
		case "destination-unreachable":
			return 1
		case "packet-too-big":
			return 2
		case "time-exceeded":
			return 3
		case "parameter-problem":
			return 4
		case "echo-request":
			return 128
		case "echo-reply":
			return 129
		case "nd-router-solicit":
			return 133
		case "nd-router-advert":
			return 134
		case "nd-neighbor-solicit":
			return 135
		case "nd-neighbor-advert":
			return 136
		case "nd-redirect":
			return 137
		}
		return 0
	}
	switch string(v) {
	case "echo-reply":
		return 0
	case "destination-unreachable":
		return 3
	case "source-quench":
		return 4
	case "redirect":
		return 5
	case "echo-request":
		return 8
	case "router-advertisement":
		return 9
	case "router-solicitation":
		return 10
	case "time-exceeded":
		return 11
	case "parameter-problem":
		return 12
	case "timestamp-request":
		return 13
	case "timestamp-reply":
		return 14
	}
	return 0
}

func icmpCodeByName(v6 bool, v []byte) uint8 {
	if v6 {
		switch string(v) {
		case "no-route":
			return 0
		case "admin-prohibited":
			return 1
		case "addr-unreachable":
			return 3
		case "port-unreachable":
			return 4
		case "policy-fail":
			return 5
		case "reject-route":
			return 6
		}
		return 0
	}
	switch string(v) {
	case "net-unreachable":
		return 0
	case "host-unreachable":
		return 1
	case "prot-unreachable":
		return 2
	case "port-unreachable":
		return 3
	case "frag-needed":
		return 4
	case "net-prohibited":
		return 9
	case "host-prohibited":
		return 10
	case "admin-prohibited":
		return 13
	}
	return 0
}
