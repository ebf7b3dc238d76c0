package render

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// The packet record is what analyze writes half a million times: it is
// encoded by hand, byte for byte as encoding/json (without HTML escaping)
// encodes it, which TestAppendPacketMatchesEncodingJSON holds to for every
// field. Its rare, live-only parts (egress, crossings, policy checks, the
// kernel's facts) still go through encoding/json.

// AppendPacket appends p's NDJSON line, as Packet writes it, to dst. It is
// safe for concurrent use.
func AppendPacket(dst []byte, p *record.Packet) []byte {
	o := object{b: append(dst, '{')}
	o.str("type", p.Type)
	o.strOmit("node", p.Node)
	o.strOmit("time", p.Time)
	o.strOmit("trace_id", p.TraceID)
	o.str("family", p.Family)
	o.str("proto", p.Proto)
	o.str("src", p.Src)
	o.str("dst", p.Dst)
	o.strOmit("flags", p.Flags)
	o.key("hops")
	o.b = appendArray(o.b, p.Hops, appendHop)
	o.key("nat")
	o.b = appendArray(o.b, p.NAT, appendNAT)
	o.strOmit("service", p.Service)
	o.strOmit("endpoint", p.Endpoint)
	o.strOmit("endpoint_pod", p.EndpointPod)
	o.str("verdict", p.Verdict)
	o.int("verdict_hop", int64(p.VerdictHop))
	if p.Explain != nil {
		o.key("explain")
		o.b = appendExplain(o.b, p.Explain)
	}
	o.uintOmit("ip_id", uint64(p.IPID))
	o.uintOmit("tcp_seq", uint64(p.TCPSeq))
	o.uintOmit("icmp_id", uint64(p.ICMPID))
	o.uintOmit("icmp_seq", uint64(p.ICMPSeq))
	o.strOmit("traced_by", p.TracedBy)
	if p.Egress != nil {
		o.key("egress")
		o.b = appendJSON(o.b, p.Egress)
	}
	if len(p.Nodes) > 0 {
		o.key("nodes")
		o.b = appendStrings(o.b, p.Nodes)
	}
	o.strOmit("endpoint_node", p.EndpointNode)
	if len(p.Crossings) > 0 {
		o.key("crossings")
		o.b = appendJSON(o.b, p.Crossings)
	}
	o.trueOmit("direct_to_endpoint", p.DirectToEndpoint)
	if p.Live != nil {
		o.key("live")
		o.b = appendJSON(o.b, p.Live)
	}
	return append(o.b, '}', '\n')
}

// appendArray appends xs as a JSON array, each element by appendOne, as
// encoding/json does (null for a nil slice).
func appendArray[T any](b []byte, xs []T, appendOne func([]byte, *T) []byte) []byte {
	if xs == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOne(b, &xs[i])
	}
	return append(b, ']')
}

func appendHop(dst []byte, h *record.Hop) []byte {
	o := object{b: append(dst, '{')}
	o.str("table", h.Table)
	o.str("chain", h.Chain)
	o.str("kind", h.Kind)
	o.intOmit("rule", int64(h.Rule))
	o.strOmit("node", h.Node)
	o.uintOmit("handle", h.Handle)
	o.strOmit("text", h.Text)
	o.strOmit("verdict", h.Verdict)
	o.strOmit("target", h.Target)
	o.strOmit("meaning", h.Meaning)
	o.strOmit("src", h.Src)
	o.strOmit("dst", h.Dst)
	o.strOmit("in", h.In)
	o.strOmit("out", h.Out)
	o.strOmit("mark", h.Mark)
	o.strOmit("hook", h.Hook)
	o.strOmit("role", h.Role)
	if h.Share != 0 {
		o.key("share")
		o.b = appendFloat(o.b, h.Share)
	}
	return append(o.b, '}')
}

func appendNAT(dst []byte, n *record.NAT) []byte {
	o := object{b: append(dst, '{')}
	o.str("kind", n.Kind)
	o.strOmit("chain", n.Chain)
	o.strOmit("table", n.Table)
	o.intOmit("rule", int64(n.Rule))
	o.strOmit("to", n.To)
	o.trueOmit("inferred", n.Inferred)
	return append(o.b, '}')
}

func appendExplain(dst []byte, e *record.Explain) []byte {
	o := object{b: append(dst, '{')}
	o.str("summary", e.Summary)
	o.strOmit("reason", e.Reason)
	o.trueOmit("retransmit", e.Retransmit)
	o.strOmit("source_seen_by_endpoint", e.SourceSeenByEndpoint)
	o.strOmit("source_predicted", e.SourcePredicted)
	if len(e.Notes) > 0 {
		o.key("notes")
		o.b = appendStrings(o.b, e.Notes)
	}
	if e.Policy != nil {
		o.key("policy")
		o.b = appendJSON(o.b, e.Policy)
	}
	if len(e.Policies) > 0 {
		o.key("policies")
		o.b = appendJSON(o.b, e.Policies)
	}
	return append(o.b, '}')
}

// object writes the members of a JSON object.
type object struct {
	b []byte
	n int // members so far
}

func (o *object) key(k string) {
	if o.n > 0 {
		o.b = append(o.b, ',')
	}
	o.n++
	o.b = append(o.b, '"')
	o.b = append(o.b, k...)
	o.b = append(o.b, '"', ':')
}

func (o *object) str(k, v string) {
	o.key(k)
	o.b = appendString(o.b, v)
}

func (o *object) strOmit(k, v string) {
	if v != "" {
		o.str(k, v)
	}
}

// trueOmit writes k: true, nothing when v is false.
func (o *object) trueOmit(k string, v bool) {
	if v {
		o.key(k)
		o.b = append(o.b, "true"...)
	}
}

func (o *object) int(k string, v int64) {
	o.key(k)
	o.b = strconv.AppendInt(o.b, v, 10)
}

func (o *object) intOmit(k string, v int64) {
	if v != 0 {
		o.int(k, v)
	}
}

func (o *object) uintOmit(k string, v uint64) {
	if v != 0 {
		o.key(k)
		o.b = strconv.AppendUint(o.b, v, 10)
	}
}

func appendStrings(dst []byte, ss []string) []byte {
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s)
	}
	return append(dst, ']')
}

const hexDigits = "0123456789abcdef"

// plain tells the bytes a JSON string holds as they are: ASCII but control
// bytes, '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// plainWord reports whether all 8 bytes of w are plain, 8 at a time: none
// is 0x80 or above, below 0x20, '"' or '\\' (the "has a byte less than"
// and "has a zero byte" tests of bit twiddling, exact when no byte is
// 0x80 or above).
func plainWord(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote, backslash := w^(ones*'"'), w^(ones*'\\')
	return (w|(w-ones*0x20)&^w|(quote-ones)&^quote|(backslash-ones)&^backslash)&highs == 0
}

// appendString writes s as a JSON string the way encoding/json does with
// HTML escaping off: \" \\ \b \f \n \r \t, \u00XX for other control
// bytes, \ufffd for invalid UTF-8, \u2028 and \u2029 escaped.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) {
			w := s[i : i+8] // one load, no bounds checks
			if plainWord(uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
				uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56) {
				i += 8
				continue
			}
		}
		c := s[i]
		if plain[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendFloat writes f as encoding/json does: the shortest decimal, in
// exponent form (e-7, not e-07) below 1e-6 and from 1e21.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSON appends v as encoding/json encodes it (no HTML escaping), for
// the rare parts of a record.
func appendJSON(dst []byte, v any) []byte {
	b := bytes.NewBuffer(dst)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Records are strings, numbers and booleans: they always encode.
		panic("render: encode a record: " + err.Error())
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'})
}
