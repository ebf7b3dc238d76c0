package agent

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// traceMsg builds an NFT_MSG_TRACE payload (nfgenmsg + attributes) the way
// the kernel's nft_trace_notify lays it out: integers big-endian.
type traceMsg struct {
	table, chain string
	handle       uint64
	typ          uint32
	verdict      int32
	hasVerdict   bool
	target       string
	policy       *uint32
	id           uint32
	nh, th       []byte
	iif, oif     uint32
	mark         uint32
}

func be32(v uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, v); return b }
func be64(v uint64) []byte { b := make([]byte, 8); binary.BigEndian.PutUint64(b, v); return b }

func (m traceMsg) bytes(t testing.TB) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(nftaTraceNfproto, be32(2))
	ae.Bytes(nftaTraceType, be32(m.typ))
	ae.Bytes(nftaTraceID, be32(m.id))
	ae.String(nftaTraceChain, m.chain)
	ae.String(nftaTraceTable, m.table)
	if m.handle != 0 {
		ae.Bytes(nftaTraceRuleHandle, be64(m.handle))
	}
	if m.hasVerdict {
		ae.Nested(nftaTraceVerdict, func(n *netlink.AttributeEncoder) error {
			n.Bytes(nftaVerdictCode, be32(uint32(m.verdict)))
			if m.target != "" {
				n.String(nftaVerdictChain, m.target)
			}
			return nil
		})
	}
	if m.policy != nil {
		ae.Bytes(nftaTracePolicy, be32(*m.policy))
	}
	if m.mark != 0 {
		ae.Bytes(nftaTraceMark, be32(m.mark))
	}
	if m.nh != nil {
		if m.iif != 0 {
			ae.Bytes(nftaTraceIIF, be32(m.iif))
		}
		if m.oif != 0 {
			ae.Bytes(nftaTraceOIF, be32(m.oif))
		}
		ae.Bytes(nftaTraceNetworkHeader, m.nh)
		ae.Bytes(nftaTraceTransportHeader, m.th)
	}
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{2, 0, 0, 0}, b...)
}

// ipv4TCP is a 20-byte IPv4 header + 20-byte TCP header (SYN).
func ipv4TCP(src, dst string, id uint16, sport, dport uint16, seq uint32, flags uint8) (nh, th []byte) {
	nh = make([]byte, 20)
	nh[0] = 0x45
	binary.BigEndian.PutUint16(nh[2:], 60)
	binary.BigEndian.PutUint16(nh[4:], id)
	nh[8], nh[9] = 64, 6
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(nh[12:], s[:])
	copy(nh[16:], d[:])
	th = make([]byte, 20)
	binary.BigEndian.PutUint16(th[0:], sport)
	binary.BigEndian.PutUint16(th[2:], dport)
	binary.BigEndian.PutUint32(th[4:], seq)
	th[12], th[13] = 0x50, flags
	return nh, th
}

func ipv6UDP(src, dst string, flow uint32, sport, dport uint16) (nh, th []byte) {
	nh = make([]byte, 40)
	binary.BigEndian.PutUint32(nh[0:], 6<<28|flow)
	binary.BigEndian.PutUint16(nh[4:], 20)
	nh[6], nh[7] = 17, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(nh[8:], s[:])
	copy(nh[24:], d[:])
	th = make([]byte, 8)
	binary.BigEndian.PutUint16(th[0:], sport)
	binary.BigEndian.PutUint16(th[2:], dport)
	return nh, th
}

func TestNftDecode(t *testing.T) {
	ifnames := map[uint32]string{2: "eth0", 7: "cni0"}
	d := newNftDecoder(func(i uint32) string { return ifnames[i] })
	nh, th := ipv4TCP("10.199.0.2", "10.96.173.227", 58119, 56720, 80, 776003402, 0x02)
	v6nh, v6th := ipv6UDP("fd00::2", "fd00:96::a", 0x12345, 40000, 53)
	accept := uint32(1)
	syn := trace.Header{Out: "eth0", Family: 4, Proto: 6, Src: netip.MustParseAddr("10.199.0.2"), Dst: netip.MustParseAddr("10.96.173.227"), SPort: 56720, DPort: 80, IPID: 58119, TCPSeq: 776003402, TCPFlags: trace.TCPSyn, Len: 60}
	marked := syn
	marked.Mark = 0x4000
	now := 5 * time.Second
	steps := []struct {
		name string
		msg  traceMsg
		want trace.Event
		ok   bool
	}{
		{
			name: "first event of a base chain carries the packet",
			msg:  traceMsg{table: "raw", chain: "OUTPUT", handle: 11, typ: nftTracetypeRule, hasVerdict: true, verdict: -1, id: 0x0b6f6c71, nh: nh, th: th, oif: 2},
			want: trace.Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "raw", Chain: "OUTPUT", Kind: trace.KindRule, Handle: 11, Verdict: "CONTINUE", HasHeader: true, Header: syn},
			ok:   true,
		},
		{
			name: "policy: verdict from the policy attribute, header inherited",
			msg:  traceMsg{table: "raw", chain: "OUTPUT", typ: nftTracetypePolicy, policy: &accept, id: 0x0b6f6c71},
			want: trace.Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "raw", Chain: "OUTPUT", Kind: trace.KindPolicy, Verdict: "ACCEPT", Header: syn},
			ok:   true,
		},
		{
			name: "jump with target chain and the mark as it is now",
			msg:  traceMsg{table: "nat", chain: "KUBE-SERVICES", handle: 0x74, typ: nftTracetypeRule, hasVerdict: true, verdict: -3, target: "KUBE-SVC-XJWXQFJLXSXKRMSG", id: 0x0b6f6c71, mark: 0x4000},
			want: trace.Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "nat", Chain: "KUBE-SERVICES", Kind: trace.KindRule, Handle: 0x74, Verdict: "JUMP", Target: "KUBE-SVC-XJWXQFJLXSXKRMSG", Header: marked},
			ok:   true,
		},
		{
			name: "return",
			msg:  traceMsg{table: "nat", chain: "KUBE-MARK-MASQ", typ: nftTracetypeReturn, hasVerdict: true, verdict: -5, id: 0x0b6f6c71},
			want: trace.Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "nat", Chain: "KUBE-MARK-MASQ", Kind: trace.KindReturn, Verdict: "RETURN", Header: syn},
			ok:   true,
		},
		{
			name: "drop with an errno in the upper bits",
			msg:  traceMsg{table: "filter", chain: "INPUT", handle: 3, typ: nftTracetypeRule, hasVerdict: true, verdict: 0x10000 | 0, id: 9, nh: v6nh, th: v6th, iif: 7},
			want: trace.Event{Time: now, TraceID: 9, HasID: true, Table: "filter", Chain: "INPUT", Kind: trace.KindRule, Handle: 3, Verdict: "DROP", HasHeader: true,
				Header: trace.Header{In: "cni0", Family: 6, Proto: 17, Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00:96::a"), SPort: 40000, DPort: 53, IPID: 0x12345, Len: 60}},
			ok: true,
		},
		{
			name: "another trace id does not inherit a header",
			msg:  traceMsg{table: "filter", chain: "INPUT", typ: nftTracetypePolicy, policy: &accept, id: 10},
			want: trace.Event{Time: now, TraceID: 10, HasID: true, Table: "filter", Chain: "INPUT", Kind: trace.KindPolicy, Verdict: "ACCEPT"},
			ok:   true,
		},
		{
			name: "no table: rejected",
			msg:  traceMsg{chain: "INPUT", typ: nftTracetypePolicy, id: 10},
		},
	}
	for _, st := range steps {
		var ev trace.Event
		ok := d.decode(st.msg.bytes(t), now, &ev)
		if ok != st.ok {
			t.Fatalf("%s: decode ok = %v, want %v", st.name, ok, st.ok)
		}
		if !ok {
			continue
		}
		if diff := cmp.Diff(st.want, ev, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Errorf("%s (-want +got):\n%s", st.name, diff)
		}
	}
}

func TestNftDecodeTruncated(t *testing.T) {
	d := newNftDecoder(func(uint32) string { return "" })
	nh, th := ipv4TCP("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, 2)
	full := traceMsg{table: "raw", chain: "OUTPUT", handle: 1, typ: nftTracetypeRule, hasVerdict: true, verdict: -1, id: 1, nh: nh, th: th}.bytes(t)
	var ev trace.Event
	// Every prefix must decode or be rejected, never panic.
	for i := 0; i < len(full); i++ {
		d.decode(full[:i], 0, &ev)
	}
	// Short headers leave the packet fields empty rather than reading past them.
	short := traceMsg{table: "raw", chain: "OUTPUT", typ: nftTracetypeRule, hasVerdict: true, verdict: -1, id: 2, nh: nh[:12], th: th[:3]}.bytes(t)
	if !d.decode(short, 0, &ev) || ev.Header.Family != 0 {
		t.Errorf("short network header: ok=%v family=%d, want ok and no family", ev.Table != "", ev.Header.Family)
	}
}

func BenchmarkNftDecode(b *testing.B) {
	nh, th := ipv4TCP("10.199.0.2", "10.96.173.227", 58119, 56720, 80, 776003402, 0x02)
	first := traceMsg{table: "raw", chain: "OUTPUT", handle: 11, typ: nftTracetypeRule, hasVerdict: true, verdict: -1, id: 7, nh: nh, th: th, oif: 1}.bytes(b)
	next := traceMsg{table: "nat", chain: "KUBE-SERVICES", handle: 0x74, typ: nftTracetypeRule, hasVerdict: true, verdict: -3, target: "KUBE-SVC-XJWXQFJLXSXKRMSG", id: 7, mark: 0x4000}.bytes(b)
	d := newNftDecoder(func(uint32) string { return "lo" })
	var ev trace.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(first) + len(next)))
	for i := 0; i < b.N; i++ {
		d.decode(first, 0, &ev)
		d.decode(next, 0, &ev)
	}
}

func TestEndFolder(t *testing.T) {
	ev := func(id uint32, table, chain string, kind trace.Kind, handle uint64, verdict string, hdr bool) trace.Event {
		return trace.Event{TraceID: id, HasID: true, Table: table, Chain: chain, Kind: kind, Handle: handle, Verdict: verdict, HasHeader: hdr}
	}
	in := []trace.Event{
		ev(1, "raw", "OUTPUT", trace.KindRule, 2, "CONTINUE", true),
		ev(1, "raw", "OUTPUT", trace.KindRule, 0, "CONTINUE", false), // end of a base chain
		ev(1, "raw", "OUTPUT", trace.KindPolicy, 0, "ACCEPT", false),
		ev(1, "nat", "KUBE-MARK-MASQ", trace.KindRule, 15, "CONTINUE", false),
		ev(1, "nat", "KUBE-MARK-MASQ", trace.KindRule, 0, "CONTINUE", false), // end of a user chain
		ev(1, "nat", "KUBE-SVC-X", trace.KindRule, 21, "JUMP", false),
		ev(2, "filter", "OUTPUT", trace.KindRule, 0, "CONTINUE", true), // first of a traversal: header moves on
		ev(2, "filter", "OUTPUT", trace.KindPolicy, 0, "ACCEPT", false),
		ev(3, "filter", "KUBE-SERVICES", trace.KindRule, 0, "CONTINUE", false), // last event: flushed as a return
	}
	want := []trace.Event{
		ev(1, "raw", "OUTPUT", trace.KindRule, 2, "CONTINUE", true),
		ev(1, "raw", "OUTPUT", trace.KindPolicy, 0, "ACCEPT", false),
		ev(1, "nat", "KUBE-MARK-MASQ", trace.KindRule, 15, "CONTINUE", false),
		ev(1, "nat", "KUBE-MARK-MASQ", trace.KindReturn, 0, "RETURN", false),
		ev(1, "nat", "KUBE-SVC-X", trace.KindRule, 21, "JUMP", false),
		ev(2, "filter", "OUTPUT", trace.KindPolicy, 0, "ACCEPT", true),
		ev(3, "filter", "KUBE-SERVICES", trace.KindReturn, 0, "RETURN", false),
	}
	var got []trace.Event
	emit := func(e *trace.Event) { got = append(got, *e) }
	var f endFolder
	for i := range in {
		e := in[i]
		f.push(&e, emit)
	}
	f.flush(emit)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("folded events (-want +got):\n%s", diff)
	}
}
