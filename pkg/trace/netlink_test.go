//go:build linux

package trace

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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
	ae.Bytes(unix.NFTA_TRACE_NFPROTO, be32(2))
	ae.Bytes(unix.NFTA_TRACE_TYPE, be32(m.typ))
	ae.Bytes(unix.NFTA_TRACE_ID, be32(m.id))
	ae.String(unix.NFTA_TRACE_CHAIN, m.chain)
	ae.String(unix.NFTA_TRACE_TABLE, m.table)
	if m.handle != 0 {
		ae.Bytes(unix.NFTA_TRACE_RULE_HANDLE, be64(m.handle))
	}
	if m.hasVerdict {
		ae.Nested(unix.NFTA_TRACE_VERDICT, func(n *netlink.AttributeEncoder) error {
			n.Bytes(unix.NFTA_VERDICT_CODE, be32(uint32(m.verdict)))
			if m.target != "" {
				n.String(unix.NFTA_VERDICT_CHAIN, m.target)
			}
			return nil
		})
	}
	if m.policy != nil {
		ae.Bytes(unix.NFTA_TRACE_POLICY, be32(*m.policy))
	}
	if m.mark != 0 {
		ae.Bytes(unix.NFTA_TRACE_MARK, be32(m.mark))
	}
	if m.nh != nil {
		if m.iif != 0 {
			ae.Bytes(unix.NFTA_TRACE_IIF, be32(m.iif))
		}
		if m.oif != 0 {
			ae.Bytes(unix.NFTA_TRACE_OIF, be32(m.oif))
		}
		ae.Bytes(unix.NFTA_TRACE_NETWORK_HEADER, m.nh)
		ae.Bytes(unix.NFTA_TRACE_TRANSPORT_HEADER, m.th)
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

func TestNetlinkDecode(t *testing.T) {
	ifnames := map[uint32]string{2: "eth0", 7: "cni0"}
	d := NewNetlinkDecoder(func(i uint32) string { return ifnames[i] })
	nh, th := ipv4TCP("10.199.0.2", "10.96.173.227", 58119, 56720, 80, 776003402, 0x02)
	v6nh, v6th := ipv6UDP("fd00::2", "fd00:96::a", 0x12345, 40000, 53)
	accept := uint32(1)
	syn := Header{Out: "eth0", Family: 4, Proto: 6, Src: netip.MustParseAddr("10.199.0.2"), Dst: netip.MustParseAddr("10.96.173.227"), SPort: 56720, DPort: 80, IPID: 58119, TCPSeq: 776003402, TCPFlags: TCPSyn, Len: 60}
	marked := syn
	marked.Mark = 0x4000
	now := 5 * time.Second
	steps := []struct {
		name string
		msg  traceMsg
		want Event
		ok   bool
	}{
		{
			name: "first event of a base chain carries the packet",
			msg:  traceMsg{table: "raw", chain: "OUTPUT", handle: 11, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -1, id: 0x0b6f6c71, nh: nh, th: th, oif: 2},
			want: Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "raw", Chain: "OUTPUT", Kind: KindRule, Handle: 11, Verdict: "CONTINUE", HasHeader: true, Header: syn},
			ok:   true,
		},
		{
			name: "policy: verdict from the policy attribute, header inherited",
			msg:  traceMsg{table: "raw", chain: "OUTPUT", typ: unix.NFT_TRACETYPE_POLICY, policy: &accept, id: 0x0b6f6c71},
			want: Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "raw", Chain: "OUTPUT", Kind: KindPolicy, Verdict: "ACCEPT", Header: syn},
			ok:   true,
		},
		{
			name: "jump with target chain and the mark as it is now",
			msg:  traceMsg{table: "nat", chain: "KUBE-SERVICES", handle: 0x74, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -3, target: "KUBE-SVC-XJWXQFJLXSXKRMSG", id: 0x0b6f6c71, mark: 0x4000},
			want: Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "nat", Chain: "KUBE-SERVICES", Kind: KindRule, Handle: 0x74, Verdict: "JUMP", Target: "KUBE-SVC-XJWXQFJLXSXKRMSG", Header: marked},
			ok:   true,
		},
		{
			name: "return",
			msg:  traceMsg{table: "nat", chain: "KUBE-MARK-MASQ", typ: unix.NFT_TRACETYPE_RETURN, hasVerdict: true, verdict: -5, id: 0x0b6f6c71},
			want: Event{Time: now, TraceID: 0x0b6f6c71, HasID: true, Table: "nat", Chain: "KUBE-MARK-MASQ", Kind: KindReturn, Verdict: "RETURN", Header: syn},
			ok:   true,
		},
		{
			name: "drop with an errno in the upper bits",
			msg:  traceMsg{table: "filter", chain: "INPUT", handle: 3, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: 0x10000 /* errno 1 << 16, NF_DROP (0) */, id: 9, nh: v6nh, th: v6th, iif: 7},
			want: Event{Time: now, TraceID: 9, HasID: true, Table: "filter", Chain: "INPUT", Kind: KindRule, Handle: 3, Verdict: "DROP", HasHeader: true,
				Header: Header{In: "cni0", Family: 6, Proto: 17, Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00:96::a"), SPort: 40000, DPort: 53, IPID: 0x12345, Len: 60}},
			ok: true,
		},
		{
			name: "another trace id does not inherit a header",
			msg:  traceMsg{table: "filter", chain: "INPUT", typ: unix.NFT_TRACETYPE_POLICY, policy: &accept, id: 10},
			want: Event{Time: now, TraceID: 10, HasID: true, Table: "filter", Chain: "INPUT", Kind: KindPolicy, Verdict: "ACCEPT"},
			ok:   true,
		},
		{
			name: "no table: rejected",
			msg:  traceMsg{chain: "INPUT", typ: unix.NFT_TRACETYPE_POLICY, id: 10},
		},
	}
	for _, st := range steps {
		var ev Event
		ok := d.Decode(st.msg.bytes(t), now, &ev)
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

func TestNetlinkDecodeTruncated(t *testing.T) {
	d := NewNetlinkDecoder(func(uint32) string { return "" })
	nh, th := ipv4TCP("10.0.0.1", "10.0.0.2", 1, 2, 3, 4, 2)
	full := traceMsg{table: "raw", chain: "OUTPUT", handle: 1, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -1, id: 1, nh: nh, th: th}.bytes(t)
	var ev Event
	// Every prefix must decode or be rejected, never panic.
	for i := 0; i < len(full); i++ {
		d.Decode(full[:i], 0, &ev)
	}
	// Short headers leave the packet fields empty rather than reading past them.
	short := traceMsg{table: "raw", chain: "OUTPUT", typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -1, id: 2, nh: nh[:12], th: th[:3]}.bytes(t)
	if !d.Decode(short, 0, &ev) || ev.Header.Family != 0 {
		t.Errorf("short network header: ok=%v family=%d, want ok and no family", ev.Table != "", ev.Header.Family)
	}
}

func BenchmarkNetlinkDecode(b *testing.B) {
	nh, th := ipv4TCP("10.199.0.2", "10.96.173.227", 58119, 56720, 80, 776003402, 0x02)
	first := traceMsg{table: "raw", chain: "OUTPUT", handle: 11, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -1, id: 7, nh: nh, th: th, oif: 1}.bytes(b)
	next := traceMsg{table: "nat", chain: "KUBE-SERVICES", handle: 0x74, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -3, target: "KUBE-SVC-XJWXQFJLXSXKRMSG", id: 7, mark: 0x4000}.bytes(b)
	d := NewNetlinkDecoder(func(uint32) string { return "lo" })
	var ev Event
	b.ReportAllocs()
	b.SetBytes(int64(len(first) + len(next)))
	for i := 0; i < b.N; i++ {
		d.Decode(first, 0, &ev)
		d.Decode(next, 0, &ev)
	}
}

func TestEndFolder(t *testing.T) {
	ev := func(id uint32, table, chain string, kind Kind, handle uint64, verdict string, hdr bool) Event {
		return Event{TraceID: id, HasID: true, Table: table, Chain: chain, Kind: kind, Handle: handle, Verdict: verdict, HasHeader: hdr}
	}
	in := []Event{
		ev(1, "raw", "OUTPUT", KindRule, 2, "CONTINUE", true),
		ev(1, "raw", "OUTPUT", KindRule, 0, "CONTINUE", false), // end of a base chain
		ev(1, "raw", "OUTPUT", KindPolicy, 0, "ACCEPT", false),
		ev(1, "nat", "KUBE-MARK-MASQ", KindRule, 15, "CONTINUE", false),
		ev(1, "nat", "KUBE-MARK-MASQ", KindRule, 0, "CONTINUE", false), // end of a user chain
		ev(1, "nat", "KUBE-SVC-X", KindRule, 21, "JUMP", false),
		ev(2, "filter", "OUTPUT", KindRule, 0, "CONTINUE", true), // first of a traversal: header moves on
		ev(2, "filter", "OUTPUT", KindPolicy, 0, "ACCEPT", false),
		ev(3, "filter", "KUBE-SERVICES", KindRule, 0, "CONTINUE", false), // last event: flushed as a return
	}
	want := []Event{
		ev(1, "raw", "OUTPUT", KindRule, 2, "CONTINUE", true),
		ev(1, "raw", "OUTPUT", KindPolicy, 0, "ACCEPT", false),
		ev(1, "nat", "KUBE-MARK-MASQ", KindRule, 15, "CONTINUE", false),
		ev(1, "nat", "KUBE-MARK-MASQ", KindReturn, 0, "RETURN", false),
		ev(1, "nat", "KUBE-SVC-X", KindRule, 21, "JUMP", false),
		ev(2, "filter", "OUTPUT", KindPolicy, 0, "ACCEPT", true),
		ev(3, "filter", "KUBE-SERVICES", KindReturn, 0, "RETURN", false),
	}
	var got []Event
	emit := func(e *Event) { got = append(got, *e) }
	var f EndFolder
	for i := range in {
		e := in[i]
		f.Push(&e, emit)
	}
	f.Flush(emit)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("folded events (-want +got):\n%s", diff)
	}
}

// TestEndFolderIdle: with base-chain knowledge, a user chain's end is a
// return at once, and a base chain's end found with the queue empty waits
// for its policy event (the kernel sends it right after, but the reader
// can be quicker): emitted as a return, it cut the packet in two.
func TestEndFolderIdle(t *testing.T) {
	ev := func(table, chain string, kind Kind, verdict string) Event {
		return Event{TraceID: 1, HasID: true, Table: table, Chain: chain, Kind: kind, Verdict: verdict}
	}
	base := func(e *Event) (bool, bool) { return e.Chain == "OUTPUT", e.Chain != "UNKNOWN" }
	var got []string
	emit := func(e *Event) { got = append(got, e.Chain+":"+e.Verdict) }
	f := EndFolder{Base: base}
	push := func(e Event) { f.Push(&e, emit) }

	push(ev("nat", "KUBE-MARK-MASQ", KindRule, "CONTINUE")) // a user chain's end: no wait
	if want := []string{"KUBE-MARK-MASQ:RETURN"}; !slices.Equal(got, want) || f.Held() {
		t.Fatalf("after a user chain's end: %q (held %v), want %q", got, f.Held(), want)
	}
	got = nil
	push(ev("raw", "OUTPUT", KindRule, "CONTINUE"))
	f.Idle(emit) // the policy event is not queued yet
	if len(got) != 0 || !f.Held() {
		t.Fatalf("a base chain's end went out on an empty queue: %q", got)
	}
	push(ev("raw", "OUTPUT", KindPolicy, "ACCEPT"))
	if want := []string{"OUTPUT:ACCEPT"}; !slices.Equal(got, want) {
		t.Fatalf("base chain end then policy: %q, want %q", got, want)
	}
	got = nil
	push(ev("x", "UNKNOWN", KindRule, "CONTINUE")) // not known: the queue decides
	f.Idle(emit)
	if want := []string{"UNKNOWN:RETURN"}; !slices.Equal(got, want) || f.Held() {
		t.Fatalf("an unknown chain's end on an empty queue: %q, want %q", got, want)
	}
}

// FuzzNetlinkDecode feeds arbitrary messages to the decoder: it must never
// panic, and every event it accepts must be a sound Event. A second decode
// of the same message must give the same event (the header cache only
// fills in what a message lacks).
func FuzzNetlinkDecode(f *testing.F) {
	nh, th := ipv4TCP("10.199.0.2", "10.96.173.227", 58119, 56720, 80, 776003402, 0x02)
	v6nh, v6th := ipv6UDP("fd00::2", "fd00:96::a", 0x12345, 40000, 53)
	accept := uint32(1)
	for _, m := range []traceMsg{
		{table: "raw", chain: "OUTPUT", handle: 11, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -1, id: 7, nh: nh, th: th, oif: 1},
		{table: "nat", chain: "KUBE-SERVICES", handle: 0x74, typ: unix.NFT_TRACETYPE_RULE, hasVerdict: true, verdict: -3, target: "KUBE-SVC-XJWXQFJLXSXKRMSG", id: 7, mark: 0x4000},
		{table: "filter", chain: "INPUT", typ: unix.NFT_TRACETYPE_POLICY, policy: &accept, id: 9, nh: v6nh, th: v6th, iif: 2},
		{table: "nat", chain: "KUBE-MARK-MASQ", typ: unix.NFT_TRACETYPE_RETURN, hasVerdict: true, verdict: -5, id: 7},
	} {
		f.Add(m.bytes(f))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		d := NewNetlinkDecoder(func(uint32) string { return "eth0" })
		var ev, again Event
		if !d.Decode(msg, time.Second, &ev) {
			return
		}
		checkEvent(t, msg, &ev)
		if !d.Decode(msg, time.Second, &again) {
			t.Fatalf("%x: decoded once, refused the second time", msg)
		}
		if diff := cmp.Diff(ev, again, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("%x: second decode differs (-first +second):\n%s", msg, diff)
		}
	})
}
