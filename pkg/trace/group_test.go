package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func hopString(h *Hop) string {
	s := h.Table + ":" + h.Chain + ":" + h.Kind.String()
	if h.Rule != 0 {
		s += fmt.Sprintf(":%d", h.Rule)
	}
	return s
}

func hopStrings(p *Packet) []string {
	var out []string
	for i := range p.Hops {
		out = append(out, hopString(&p.Hops[i]))
	}
	return out
}

func firstIDs(pkts []*Packet) []uint32 {
	var ids []uint32
	for _, p := range pkts {
		ids = append(ids, p.First.IPID)
	}
	return ids
}

// dstChanges lists "hop index: new destination" wherever a hop's
// destination differs from the previous hop's.
func dstChanges(p *Packet) []string {
	var out []string
	for i := 1; i < len(p.Hops); i++ {
		if a, b := p.Hops[i-1].Header, p.Hops[i].Header; a.Dst != b.Dst || a.DPort != b.DPort {
			out = append(out, fmt.Sprintf("%s -> %s:%d", hopString(&p.Hops[i]), b.Dst, b.DPort))
		}
	}
	return out
}

// hookRuns lists the hops' hooks as runs: "PREROUTING 4", "FORWARD 4"
// ("-" for an unknown hook).
func hookRuns(p *Packet) []string {
	var out []string
	last, n := "", 0
	flush := func() {
		if n > 0 {
			if last == "" {
				last = "-"
			}
			out = append(out, fmt.Sprintf("%s %d", last, n))
		}
	}
	for i := range p.Hops {
		if h := p.Hops[i].Hook; i > 0 && h == last {
			n++
			continue
		}
		flush()
		last, n = p.Hops[i].Hook, 1
	}
	flush()
	return out
}

// group decodes lines with a Decoder of format f and groups them.
func group(t testing.TB, f Format, opts GroupOptions, lines []string) ([]*Packet, *Grouper) {
	t.Helper()
	var pkts []*Packet
	opts.Emit = func(p *Packet) { pkts = append(pkts, p.Clone()) }
	d := NewDecoder(f)
	g := NewGrouper(opts)
	var ev Event
	for _, l := range lines {
		if d.Decode([]byte(l), &ev) == ResultEvent {
			g.Add(&ev)
		}
	}
	g.Flush()
	return pkts, g
}

func captureLines(t testing.TB, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(capturesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

// stripKmsg turns kmsg records into bare TRACE lines (no time, no sequence).
func stripKmsg(lines []string) []string {
	var out []string
	for _, l := range lines {
		if k := strings.Index(l, "TRACE: "); k >= 0 {
			out = append(out, l[k:])
		}
	}
	return out
}

// TestCaptureFacts checks by hand what the golden files also hold.
func TestCaptureFacts(t *testing.T) {
	t.Run("node-to-svc legacy kmsg", func(t *testing.T) {
		pkts, st := readCapture(t, "node-to-svc.legacy.kmsg.txt", FormatAuto, GroupOptions{})
		// Six packets of one connection, IP IDs 26913 (SYN) to 26918 (FIN):
		// 20 + 5*6 = 50 records. The SYN never reaches a terminal point
		// (its last record is the MASQUERADE rule), so it comes out last,
		// at end of input.
		if diff := cmp.Diff([]uint32{26914, 26915, 26916, 26917, 26918, 26913}, firstIDs(pkts)); diff != "" {
			t.Fatalf("packets by IP ID (-want +got):\n%s", diff)
		}
		wantStats := Stats{
			DecodeStats: DecodeStats{Lines: 50, Records: 50},
			GroupStats:  GroupStats{Packets: 6, Complete: 5, Flushed: 1},
		}
		if diff := cmp.Diff(wantStats, st); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
		syn := pkts[5]
		wantHops := []string{
			"raw:OUTPUT:policy:2",
			"mangle:OUTPUT:policy:1",
			"nat:OUTPUT:rule:1",
			"nat:KUBE-SERVICES:rule:1",
			"nat:KUBE-SVC-XJWXQFJLXSXKRMSG:rule:1",
			"nat:KUBE-MARK-MASQ:rule:1",
			"nat:KUBE-MARK-MASQ:return:2",
			"nat:KUBE-SVC-XJWXQFJLXSXKRMSG:rule:2",
			"nat:KUBE-SEP-TJXBIUI2E22QKLD4:rule:2",
			"filter:OUTPUT:rule:1",
			"filter:KUBE-FIREWALL:return:2",
			"filter:OUTPUT:rule:2",
			"filter:KUBE-PROXY-FIREWALL:return:1",
			"filter:OUTPUT:rule:3",
			"filter:KUBE-SERVICES:return:1",
			"filter:OUTPUT:policy:4",
			"mangle:POSTROUTING:policy:1",
			"nat:POSTROUTING:rule:1",
			"nat:KUBE-POSTROUTING:rule:2",
			"nat:KUBE-POSTROUTING:rule:3",
		}
		if diff := cmp.Diff(wantHops, hopStrings(syn)); diff != "" {
			t.Errorf("SYN hops (-want +got):\n%s", diff)
		}
		// DNAT: the destination is the ClusterIP up to the SEP hop and the
		// endpoint from the next table on.
		if diff := cmp.Diff([]string{"filter:OUTPUT:rule:1 -> 10.244.0.23:80"}, dstChanges(syn)); diff != "" {
			t.Errorf("SYN destination changes (-want +got):\n%s", diff)
		}
		if got, want := syn.First.Dst, addr("10.96.173.227"); got != want {
			t.Errorf("SYN first destination = %v, want %v", got, want)
		}
		if syn.First.TCPFlags != TCPSyn || syn.Start != 1152308416*time.Microsecond || syn.End != 1152308554*time.Microsecond {
			t.Errorf("SYN first flags %v, start %v, end %v", syn.First.TCPFlags, syn.Start, syn.End)
		}
		// The follow-up packets skip nat (conntrack) but still show DNAT.
		if diff := cmp.Diff([]string{"filter:OUTPUT:rule:1 -> 10.244.0.23:80"}, dstChanges(pkts[0])); diff != "" {
			t.Errorf("second packet destination changes (-want +got):\n%s", diff)
		}
	})

	t.Run("pod-to-svc legacy kmsg (bridge netfilter)", func(t *testing.T) {
		pkts, st := readCapture(t, "pod-to-svc.legacy.kmsg.txt", FormatAuto, GroupOptions{})
		// Seven packets, 21 + 6*6 = 57 records; bridged packets cross
		// PREROUTING, FORWARD and POSTROUTING and stay whole.
		if diff := cmp.Diff([]uint32{29433, 29434, 29435, 29436, 29437, 29438, 29439}, firstIDs(pkts)); diff != "" {
			t.Fatalf("packets by IP ID (-want +got):\n%s", diff)
		}
		if st.Complete != 7 || st.Records != 57 {
			t.Errorf("stats %+v: want 7 complete packets from 57 records", st)
		}
		syn := pkts[0]
		if len(syn.Hops) != 21 || hopString(&syn.Hops[20]) != "nat:POSTROUTING:policy:2" {
			t.Errorf("SYN has %d hops ending %q, want 21 ending nat:POSTROUTING:policy:2", len(syn.Hops), hopString(&syn.Hops[len(syn.Hops)-1]))
		}
		if diff := cmp.Diff([]string{"mangle:FORWARD:policy:1 -> 10.244.0.25:80"}, dstChanges(syn)); diff != "" {
			t.Errorf("SYN destination changes (-want +got):\n%s", diff)
		}
		if syn.First.PhysIn != "veth2a452a94" || syn.Hops[20].Header.PhysOut != "veth893ba1f4" {
			t.Errorf("bridge ports: first physin %q, last physout %q", syn.First.PhysIn, syn.Hops[20].Header.PhysOut)
		}
	})

	t.Run("seed-001 kern.log", func(t *testing.T) {
		pkts, st := readCapture(t, "seed-001-kernlog.txt", FormatAuto, GroupOptions{})
		if diff := cmp.Diff([]uint32{57266, 28265}, firstIDs(pkts)); diff != "" {
			t.Fatalf("packets by IP ID (-want +got):\n%s", diff)
		}
		// The packet the routing decision dropped: its trace ends at
		// nat:PREROUTING:policy:3 and forms its own packet. The page quotes
		// that last line twice (same timestamp): dropped as a duplicate.
		dropped := pkts[1]
		want := []string{
			"raw:PREROUTING:policy:2",
			"nat:PREROUTING:rule:1",
			"nat:KUBE-SERVICES:rule:13",
			"nat:KUBE-NODEPORTS:return:1",
			"nat:KUBE-SERVICES:return:14",
			"nat:PREROUTING:rule:2",
			"nat:DOCKER:return:2",
			"nat:PREROUTING:policy:3",
		}
		if diff := cmp.Diff(want, hopStrings(dropped)); diff != "" {
			t.Errorf("dropped packet hops (-want +got):\n%s", diff)
		}
		if got := hopString(&pkts[0].Hops[len(pkts[0].Hops)-1]); got != "nat:POSTROUTING:policy:10" || len(pkts[0].Hops) != 15 {
			t.Errorf("first packet: %d hops ending %q, want 15 ending nat:POSTROUTING:policy:10", len(pkts[0].Hops), got)
		}
		wantStats := Stats{
			DecodeStats: DecodeStats{Lines: 140, Records: 24, Skipped: 116},
			GroupStats:  GroupStats{Packets: 2, Complete: 1, Flushed: 1, Duplicates: 1},
		}
		if diff := cmp.Diff(wantStats, st); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
	})

	// The client pod's two SYNs to a Service without endpoints, bridged
	// (cni0): the trace id changes between PREROUTING and FORWARD
	// (26731955 -> 5b001a6a, 9b4b4574 -> e81b4bb0), and each packet must
	// still come out whole, its last hop the REJECT (verdict drop).
	for _, tt := range []struct {
		capture  string
		lastText string
	}{
		{"local-pod-to-noendpoints.nft.nftmon.txt", "meta l4proto tcp ip daddr 10.96.23.157 tcp dport 80 counter reject"},
		{"local-pod-to-noendpoints.nft.xtmon.txt", `-A KUBE-SERVICES -d 10.96.23.157/32 -p tcp -m comment --comment "default/noendpoints has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`},
	} {
		t.Run(tt.capture, func(t *testing.T) {
			pkts, st := readCapture(t, tt.capture, FormatAuto, GroupOptions{})
			if diff := cmp.Diff([]uint32{40326, 40327}, firstIDs(pkts)); diff != "" {
				t.Fatalf("packets by IP ID (-want +got):\n%s", diff)
			}
			wantStats := GroupStats{Packets: 2, Complete: 2, Joined: 2}
			if diff := cmp.Diff(wantStats, st.GroupStats); diff != "" {
				t.Errorf("group stats (-want +got):\n%s", diff)
			}
			for i, wantID := range []uint32{0x26731955, 0x9b4b4574} {
				p := pkts[i]
				if !p.HasID || p.TraceID != wantID {
					t.Errorf("packet %d: trace id %08x (has %v), want the first id %08x", i+1, p.TraceID, p.HasID, wantID)
				}
				if diff := cmp.Diff([]string{"PREROUTING 4", "FORWARD 4"}, hookRuns(p)); diff != "" {
					t.Errorf("packet %d hooks (-want +got):\n%s", i+1, diff)
				}
				wantHops := []string{
					"raw:PREROUTING:rule", "raw:PREROUTING:policy", "nat:PREROUTING:rule", "nat:PREROUTING:policy",
					"filter:FORWARD:rule", "filter:FORWARD:rule", "filter:FORWARD:rule", "filter:KUBE-SERVICES:rule",
				}
				if diff := cmp.Diff(wantHops, hopStrings(p)); diff != "" {
					t.Errorf("packet %d hops (-want +got):\n%s", i+1, diff)
				}
				last := p.Hops[len(p.Hops)-1]
				if last.Verdict != "DROP" || last.Text != tt.lastText {
					t.Errorf("packet %d last hop verdict %q text %q, want DROP and %q", i+1, last.Verdict, last.Text, tt.lastText)
				}
				if last.Header.Out != "eth0" || p.First.Out != "" {
					t.Errorf("packet %d: first header out %q, last %q; want the FORWARD header (out eth0) on the FORWARD hops", i+1, p.First.Out, last.Header.Out)
				}
			}
		})
	}

	nftTests := []struct {
		capture     string
		wantID      uint32
		wantDst     []string
		wantLast    string
		wantStats   GroupStats
		wantHeaders uint64
	}{
		{"node-to-svc.nft.xtmon.txt", 0x0b6f6c71, []string{"filter:OUTPUT:rule -> 10.244.0.24:80"}, "nat:KUBE-POSTROUTING:rule", GroupStats{Packets: 1, Complete: 1}, 4},
		{"node-to-svc.nft.nftmon.txt", 0x0b6f6c71, []string{"filter:OUTPUT:rule -> 10.244.0.24:80"}, "nat:KUBE-POSTROUTING:rule", GroupStats{Packets: 1, Complete: 1}, 4},
		// kube-proxy's own table has no known rank: no terminal point, the
		// packet is emitted at end of input.
		{"node-to-svc.nftmode.nftmon.txt", 0x58b712a0, []string{"kube-proxy:filter-output:rule -> 10.244.0.24:80"}, "kube-proxy:masquerading:rule", GroupStats{Packets: 1, Flushed: 1}, 6},
	}
	for _, tt := range nftTests {
		t.Run(tt.capture, func(t *testing.T) {
			pkts, st := readCapture(t, tt.capture, FormatAuto, GroupOptions{})
			if len(pkts) != 1 {
				t.Fatalf("got %d packets, want 1", len(pkts))
			}
			p := pkts[0]
			if !p.HasID || p.TraceID != tt.wantID || len(p.Hops) != 15 {
				t.Errorf("packet id %08x (has %v), %d hops; want %08x, 15 hops", p.TraceID, p.HasID, len(p.Hops), tt.wantID)
			}
			if diff := cmp.Diff(tt.wantDst, dstChanges(p)); diff != "" {
				t.Errorf("destination changes (-want +got):\n%s", diff)
			}
			if got := hopString(&p.Hops[14]); got != tt.wantLast {
				t.Errorf("last hop %q, want %q", got, tt.wantLast)
			}
			if diff := cmp.Diff(tt.wantStats, st.GroupStats); diff != "" {
				t.Errorf("group stats (-want +got):\n%s", diff)
			}
			if st.Headers != tt.wantHeaders || st.Records != 15 || st.Malformed != 0 {
				t.Errorf("decode stats %+v", st.DecodeStats)
			}
		})
	}
}

// TestGroupInterleaved: two packets whose records interleave come out as
// the same two packets as when read one after the other.
func TestGroupInterleaved(t *testing.T) {
	node := stripKmsg(captureLines(t, "node-to-svc.legacy.kmsg.txt"))[:26] // SYN (20) + first ACK (6)
	pod := stripKmsg(captureLines(t, "pod-to-svc.legacy.kmsg.txt"))[:21]   // SYN
	tests := []struct {
		name string
		a, b []string
	}{
		{"two connections", node[:20], pod},
		{"two packets of one connection", node[:20], node[20:26]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, _ := group(t, FormatBare, GroupOptions{Ordered: true}, append(append([]string(nil), tt.a...), tt.b...))
			var mixed []string
			for i := 0; i < len(tt.a) || i < len(tt.b); i++ {
				if i < len(tt.a) {
					mixed = append(mixed, tt.a[i])
				}
				if i < len(tt.b) {
					mixed = append(mixed, tt.b[i])
				}
			}
			got, _ := group(t, FormatBare, GroupOptions{Ordered: true}, mixed)
			if len(got) != 2 || len(want) != 2 {
				t.Fatalf("got %d packets, sequential read gave %d; want 2", len(got), len(want))
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b Header) bool { return a == b })); diff != "" {
				t.Errorf("interleaved grouping differs from sequential (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGroupOrderedAndEnding(t *testing.T) {
	masquerade := func(ev *Event) Ending {
		// What package rules would say: rule 3 of nat KUBE-POSTROUTING is
		// "-j MASQUERADE", which ends the nat table.
		if ev.Table == "nat" && ev.Chain == "KUBE-POSTROUTING" && ev.Rule == 3 {
			return EndTable
		}
		return EndUnknown
	}
	tests := []struct {
		name      string
		opts      GroupOptions
		wantIDs   []uint32
		wantStats GroupStats
	}{
		{"streaming", GroupOptions{}, []uint32{26914, 26915, 26916, 26917, 26918, 26913}, GroupStats{Packets: 6, Complete: 5, Flushed: 1}},
		{"ordered", GroupOptions{Ordered: true}, []uint32{26913, 26914, 26915, 26916, 26917, 26918}, GroupStats{Packets: 6, Complete: 5, Flushed: 1}},
		{"ending from the ruleset", GroupOptions{Ending: masquerade}, []uint32{26913, 26914, 26915, 26916, 26917, 26918}, GroupStats{Packets: 6, Complete: 6}},
		// Event-time quiet window: the SYN (last record at ...554 µs) is
		// emitted once a record 1 ms later arrives (...556 µs, in the
		// fourth follow-up packet, 26917).
		{"quiet window on kernel time", GroupOptions{Quiet: time.Millisecond}, []uint32{26914, 26915, 26916, 26913, 26917, 26918}, GroupStats{Packets: 6, Complete: 5, Quiet: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkts, st := readCapture(t, "node-to-svc.legacy.kmsg.txt", FormatKmsg, tt.opts)
			if diff := cmp.Diff(tt.wantIDs, firstIDs(pkts)); diff != "" {
				t.Errorf("emission order by IP ID (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStats, st.GroupStats); diff != "" {
				t.Errorf("group stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGroupEndPacket: a drop ends the packet at once.
func TestGroupEndPacket(t *testing.T) {
	lines := stripKmsg(captureLines(t, "node-to-svc.legacy.kmsg.txt"))[:20]
	var emittedAt []int
	n := 0
	g := NewGrouper(GroupOptions{
		Ending: func(ev *Event) Ending {
			if ev.Table == "filter" && ev.Chain == "KUBE-PROXY-FIREWALL" {
				return EndPacket // as if the LB firewall had dropped it
			}
			return EndUnknown
		},
		Emit: func(p *Packet) { emittedAt = append(emittedAt, n) },
	})
	d := NewDecoder(FormatBare)
	var ev Event
	for _, l := range lines[:13] { // through filter:KUBE-PROXY-FIREWALL:return:1
		n++
		if d.Decode([]byte(l), &ev) == ResultEvent {
			g.Add(&ev)
		}
	}
	if diff := cmp.Diff([]int{13}, emittedAt); diff != "" {
		t.Errorf("emitted after records (-want +got):\n%s", diff)
	}
	if st := g.Stats(); st.Complete != 1 || g.InFlight() != 0 {
		t.Errorf("stats %+v, in flight %d", st, g.InFlight())
	}
}

// TestGroupTick: records without timestamps (nft text) go quiet on the
// caller's clock.
func TestGroupTick(t *testing.T) {
	lines := captureLines(t, "node-to-svc.nft.nftmon.txt")[:8] // stops inside nat OUTPUT
	var got []*Packet
	g := NewGrouper(GroupOptions{Quiet: 100 * time.Millisecond, Emit: func(p *Packet) { got = append(got, p.Clone()) }})
	d := NewDecoder(FormatNftMonitor)
	var ev Event
	for i, l := range lines {
		if i == 4 {
			g.Tick(10 * time.Second) // the first Tick starts the clock
		}
		if d.Decode([]byte(l), &ev) == ResultEvent {
			g.Add(&ev)
		}
	}
	steps := []struct {
		now  time.Duration
		want int
	}{
		{10*time.Second + 50*time.Millisecond, 0},
		{10*time.Second + 99*time.Millisecond, 0},
		{10*time.Second + 100*time.Millisecond, 1},
		{20 * time.Second, 1},
	}
	for _, s := range steps {
		g.Tick(s.now)
		if len(got) != s.want {
			t.Fatalf("after Tick(%v): %d packets emitted, want %d", s.now, len(got), s.want)
		}
	}
	if len(got[0].Hops) != 6 || g.Stats().Quiet != 1 {
		t.Errorf("emitted %d hops, stats %+v; want 6 hops, one quiet emission", len(got[0].Hops), g.Stats())
	}
}

// TestGroupClock: with a Clock, a packet's quiet window starts when its
// last record was added, not at the Tick before it: a record added just
// before a Tick is not cut off by the next one.
func TestGroupClock(t *testing.T) {
	for _, clock := range []bool{false, true} {
		t.Run(fmt.Sprintf("clock=%v", clock), func(t *testing.T) {
			lines := captureLines(t, "node-to-svc.nft.nftmon.txt")[:8] // stops inside nat OUTPUT
			var got []*Packet
			now := 10 * time.Second
			opts := GroupOptions{Quiet: 100 * time.Millisecond, Emit: func(p *Packet) { got = append(got, p.Clone()) }}
			if clock {
				opts.Clock = func() time.Duration { return now }
			}
			g := NewGrouper(opts)
			d := NewDecoder(FormatNftMonitor)
			var ev Event
			g.Tick(now)
			for i, l := range lines {
				if i == 4 {
					now += 90 * time.Millisecond // the reader gets the rest 90 ms after the last Tick
				}
				if d.Decode([]byte(l), &ev) == ResultEvent {
					g.Add(&ev)
				}
			}
			g.Tick(10*time.Second + 150*time.Millisecond) // 60 ms after the last record
			if want := map[bool]int{false: 1, true: 0}[clock]; len(got) != want {
				t.Fatalf("%d packets emitted 60 ms after the last record, want %d", len(got), want)
			}
			if clock {
				g.Tick(10*time.Second + 190*time.Millisecond)
				if len(got) != 1 || len(got[0].Hops) != 6 {
					t.Fatalf("100 ms after the last record: %d packets, want 1 of 6 hops", len(got))
				}
			}
		})
	}
}

// TestGroupReadTimes: records stamped when they were read (netlink trace
// events) 300 ms apart, because the reader was held up, are one packet
// with ReadTimes; as kernel timestamps the gap splits it.
func TestGroupReadTimes(t *testing.T) {
	for _, readTimes := range []bool{false, true} {
		t.Run(fmt.Sprintf("ReadTimes=%v", readTimes), func(t *testing.T) {
			var got []*Packet
			g := NewGrouper(GroupOptions{Quiet: 100 * time.Millisecond, ReadTimes: readTimes, Emit: func(p *Packet) { got = append(got, p.Clone()) }})
			d := NewDecoder(FormatNftMonitor)
			var ev Event
			for i, l := range captureLines(t, "node-to-svc.nft.nftmon.txt")[:8] {
				if d.Decode([]byte(l), &ev) == ResultEvent {
					ev.Time = time.Second
					if i >= 4 {
						ev.Time += 300 * time.Millisecond
					}
					g.Add(&ev)
				}
			}
			g.Flush()
			if want := map[bool]int{false: 2, true: 1}[readTimes]; len(got) != want {
				t.Errorf("%d packets, want %d", len(got), want)
			}
		})
	}
}

const nftPacketFmt = `trace id %s ip %s %s packet: oif "eth0" ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip id %d ip length 60 tcp sport 1000 tcp dport 80 tcp flags == syn `

// TestGroupIDReuse: nft reuses a trace id for a flow's later packets.
func TestGroupIDReuse(t *testing.T) {
	tests := []struct {
		name      string
		lines     []string
		wantHops  [][]string
		wantStats GroupStats
	}{
		{
			name: "new ip id",
			lines: []string{
				fmt.Sprintf(nftPacketFmt, "0000abcd", "raw", "OUTPUT", 1),
				"trace id 0000abcd ip raw OUTPUT policy accept",
				fmt.Sprintf(nftPacketFmt, "0000abcd", "raw", "OUTPUT", 2),
				"trace id 0000abcd ip raw OUTPUT policy accept",
			},
			wantHops:  [][]string{{"raw:OUTPUT:policy"}, {"raw:OUTPUT:policy"}},
			wantStats: GroupStats{Packets: 2, Split: 1, Flushed: 1},
		},
		{
			name: "same identity, traversal starts over",
			lines: []string{
				fmt.Sprintf(nftPacketFmt, "0000abcd", "raw", "OUTPUT", 0),
				"trace id 0000abcd ip raw OUTPUT policy accept",
				fmt.Sprintf(nftPacketFmt, "0000abcd", "filter", "OUTPUT", 0),
				"trace id 0000abcd ip filter OUTPUT policy accept",
				fmt.Sprintf(nftPacketFmt, "0000abcd", "raw", "OUTPUT", 0),
				"trace id 0000abcd ip raw OUTPUT policy accept",
			},
			wantHops:  [][]string{{"raw:OUTPUT:policy", "filter:OUTPUT:policy"}, {"raw:OUTPUT:policy"}},
			wantStats: GroupStats{Packets: 2, Split: 1, Flushed: 1},
		},
		{
			name: "other ids interleaved",
			lines: []string{
				fmt.Sprintf(nftPacketFmt, "00000001", "raw", "OUTPUT", 7),
				fmt.Sprintf(nftPacketFmt, "00000002", "raw", "OUTPUT", 8),
				"trace id 00000001 ip raw OUTPUT policy accept",
				"trace id 00000002 ip raw OUTPUT policy accept",
				"trace id 00000001 ip filter OUTPUT policy drop",
			},
			wantHops:  [][]string{{"raw:OUTPUT:policy", "filter:OUTPUT:policy"}, {"raw:OUTPUT:policy"}},
			wantStats: GroupStats{Packets: 2, Complete: 1, Flushed: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkts, g := group(t, FormatNftMonitor, GroupOptions{}, tt.lines)
			var got [][]string
			for _, p := range pkts {
				got = append(got, hopStrings(p))
			}
			if diff := cmp.Diff(tt.wantHops, got); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStats, g.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

// nftPkt builds an nft monitor "packet:" line for a TCP SYN.
func nftPkt(id, table, chain, iif, oif, src, dst string, dport, ipid int) string {
	return fmt.Sprintf(`trace id %s ip %s %s packet: iif %q oif %q ip saddr %s ip daddr %s ip id %d ip length 60 tcp sport 40000 tcp dport %d tcp flags == syn `,
		id, table, chain, iif, oif, src, dst, ipid, dport)
}

// TestGroupTraceIDChange: a record whose trace id no packet in flight has
// continues a packet of another id when it shows the same packet at a later
// hook (bridged packets under iptables-nft), and only then.
func TestGroupTraceIDChange(t *testing.T) {
	const pod, svc, ep = "10.244.0.2", "10.96.0.10", "10.244.0.9"
	pre := func(id string, ipid int) []string {
		return []string{
			nftPkt(id, "raw", "PREROUTING", "cni0", "", pod, svc, 80, ipid),
			"trace id " + id + " ip raw PREROUTING policy accept",
		}
	}
	fwdDrop := func(id, src, dst string, dport, ipid int) []string {
		return []string{
			nftPkt(id, "filter", "FORWARD", "cni0", "eth0", src, dst, dport, ipid),
			"trace id " + id + " ip filter FORWARD rule reject (verdict drop)",
		}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	type pkt struct {
		ID    uint32
		Hops  []string
		Hooks []string
	}
	tests := []struct {
		name      string
		lines     []string
		want      []pkt
		wantStats GroupStats
	}{
		{
			name:      "bridged packet, new id at FORWARD",
			lines:     cat(pre("00000001", 5), fwdDrop("00000002", pod, svc, 80, 5)),
			want:      []pkt{{1, []string{"raw:PREROUTING:policy", "filter:FORWARD:rule"}, []string{"PREROUTING 1", "FORWARD 1"}}},
			wantStats: GroupStats{Packets: 1, Complete: 1, Joined: 1},
		},
		{
			name: "DNAT in PREROUTING, new id at FORWARD and again at POSTROUTING",
			lines: cat(pre("00000001", 5), []string{
				nftPkt("00000001", "nat", "PREROUTING", "cni0", "", pod, svc, 80, 5),
				"trace id 00000001 ip nat KUBE-SEP-X rule meta l4proto tcp counter dnat to 10.244.0.9:8080 (verdict accept)",
				nftPkt("00000002", "filter", "FORWARD", "cni0", "eth0", pod, ep, 8080, 5),
				"trace id 00000002 ip filter FORWARD policy accept",
				nftPkt("00000003", "nat", "POSTROUTING", "cni0", "eth0", pod, ep, 8080, 5),
				"trace id 00000003 ip nat POSTROUTING policy accept",
			}),
			want: []pkt{{1,
				[]string{"raw:PREROUTING:policy", "nat:KUBE-SEP-X:rule", "filter:FORWARD:policy", "nat:POSTROUTING:policy"},
				[]string{"PREROUTING 2", "FORWARD 1", "POSTROUTING 1"}}},
			wantStats: GroupStats{Packets: 1, Complete: 1, Joined: 2},
		},
		{
			name: "kube-proxy nftables base chain names the hook",
			lines: cat(pre("00000001", 5), []string{
				nftPkt("00000002", "kube-proxy", "filter-forward", "cni0", "eth0", pod, svc, 80, 5),
				"trace id 00000002 ip kube-proxy filter-forward rule ct state new jump service-endpoints-check (verdict jump service-endpoints-check)",
				"trace id 00000002 ip kube-proxy service-endpoints-check rule reject (verdict drop)",
			}),
			want: []pkt{{1,
				[]string{"raw:PREROUTING:policy", "kube-proxy:filter-forward:rule", "kube-proxy:service-endpoints-check:rule"},
				[]string{"PREROUTING 1", "FORWARD 2"}}},
			wantStats: GroupStats{Packets: 1, Complete: 1, Joined: 1},
		},
		{
			name:      "another IP ID is another packet",
			lines:     cat(pre("00000001", 5), fwdDrop("00000002", pod, svc, 80, 6)),
			want:      []pkt{{2, []string{"filter:FORWARD:rule"}, []string{"FORWARD 1"}}, {1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}},
			wantStats: GroupStats{Packets: 2, Complete: 1, Flushed: 1},
		},
		{
			name:      "the same identity at PREROUTING again is another packet",
			lines:     cat(pre("00000001", 5), pre("00000002", 5)),
			want:      []pkt{{1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}, {2, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}},
			wantStats: GroupStats{Packets: 2, Flushed: 2},
		},
		{
			name: "OUTPUT never continues a packet",
			lines: cat(pre("00000001", 5), []string{
				nftPkt("00000002", "raw", "OUTPUT", "", "eth0", pod, svc, 80, 5),
				"trace id 00000002 ip raw OUTPUT policy accept",
			}),
			want:      []pkt{{1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}, {2, []string{"raw:OUTPUT:policy"}, []string{"OUTPUT 1"}}},
			wantStats: GroupStats{Packets: 2, Flushed: 2},
		},
		{
			name:      "a source rewritten before POSTROUTING is another packet",
			lines:     cat(pre("00000001", 5), fwdDrop("00000002", "10.244.0.3", svc, 80, 5)),
			want:      []pkt{{2, []string{"filter:FORWARD:rule"}, []string{"FORWARD 1"}}, {1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}},
			wantStats: GroupStats{Packets: 2, Complete: 1, Flushed: 1},
		},
		{
			name: "a user chain does not tell the hook",
			lines: cat(pre("00000001", 5), []string{
				nftPkt("00000002", "filter", "KUBE-SERVICES", "cni0", "eth0", pod, svc, 80, 5),
				"trace id 00000002 ip filter KUBE-SERVICES rule reject (verdict drop)",
			}),
			want:      []pkt{{2, []string{"filter:KUBE-SERVICES:rule"}, []string{"- 1"}}, {1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}}},
			wantStats: GroupStats{Packets: 2, Complete: 1, Flushed: 1},
		},
		{
			name:  "two packets in flight with one identity: the oldest continues",
			lines: cat(pre("00000001", 5), pre("00000002", 5), fwdDrop("00000003", pod, svc, 80, 5)),
			want: []pkt{
				{1, []string{"raw:PREROUTING:policy", "filter:FORWARD:rule"}, []string{"PREROUTING 1", "FORWARD 1"}},
				{2, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}},
			},
			wantStats: GroupStats{Packets: 2, Complete: 1, Flushed: 1, Joined: 1},
		},
		{
			name: "the first id, once left, starts a new packet",
			lines: cat(pre("00000001", 5), []string{
				nftPkt("00000002", "filter", "FORWARD", "cni0", "eth0", pod, svc, 80, 5),
				"trace id 00000002 ip filter FORWARD policy accept",
			}, pre("00000001", 6)),
			want: []pkt{
				{1, []string{"raw:PREROUTING:policy", "filter:FORWARD:policy"}, []string{"PREROUTING 1", "FORWARD 1"}},
				{1, []string{"raw:PREROUTING:policy"}, []string{"PREROUTING 1"}},
			},
			wantStats: GroupStats{Packets: 2, Flushed: 2, Joined: 1},
		},
		{
			name: "the new id's own earlier packet is split off first",
			lines: cat(pre("00000001", 5), []string{
				// id 2 was the previous packet's (IP ID 4) FORWARD id.
				nftPkt("00000002", "filter", "FORWARD", "cni0", "eth0", pod, svc, 80, 4),
				"trace id 00000002 ip filter FORWARD policy accept",
			}, fwdDrop("00000002", pod, svc, 80, 5)),
			want: []pkt{
				{2, []string{"filter:FORWARD:policy"}, []string{"FORWARD 1"}},
				{1, []string{"raw:PREROUTING:policy", "filter:FORWARD:rule"}, []string{"PREROUTING 1", "FORWARD 1"}},
			},
			wantStats: GroupStats{Packets: 2, Split: 1, Complete: 1, Joined: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkts, g := group(t, FormatNftMonitor, GroupOptions{}, tt.lines)
			var got []pkt
			for _, p := range pkts {
				got = append(got, pkt{p.TraceID, hopStrings(p), hookRuns(p)})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStats, g.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBaseHook(t *testing.T) {
	tests := []struct {
		table, chain string
		want         string
	}{
		{"raw", "PREROUTING", "PREROUTING"},
		{"filter", "FORWARD", "FORWARD"},
		{"nat", "POSTROUTING", "POSTROUTING"},
		{"mangle", "INPUT", "INPUT"},
		{"nat", "KUBE-SERVICES", ""},
		// iptables tables have no kube-proxy style base chains.
		{"filter", "filter-input", ""},
		{"kube-proxy", "filter-prerouting-pre-dnat", "PREROUTING"},
		{"kube-proxy", "filter-prerouting", "PREROUTING"},
		{"kube-proxy", "filter-input", "INPUT"},
		{"kube-proxy", "filter-forward", "FORWARD"},
		{"kube-proxy", "filter-output-pre-dnat", "OUTPUT"},
		{"kube-proxy", "filter-output-post-dnat", "OUTPUT"},
		{"kube-proxy", "nat-prerouting", "PREROUTING"},
		{"kube-proxy", "nat-output", "OUTPUT"},
		{"kube-proxy", "nat-postrouting", "POSTROUTING"},
		{"kube-proxy", "services", ""},
		{"kube-proxy", "masquerading", ""},
		{"kube-proxy", "filter-inputs", ""},
		{"kube-proxy", "nat-", ""},
		{"kube-proxy", "service-6QYGQ5L4-default/filter-input/tcp/", ""},
		{"kube-proxy", "firewall-check", ""},
	}
	for _, tt := range tests {
		if got := baseHook(tt.table, tt.chain).String(); got != tt.want {
			t.Errorf("baseHook(%q, %q) = %q, want %q", tt.table, tt.chain, got, tt.want)
		}
	}
}

// TestHopHooks: every hop's hook over the captures, user chains inheriting
// the hook of the base chain that jumped to them.
func TestHopHooks(t *testing.T) {
	tests := []struct {
		capture string
		want    [][]string
	}{
		{"node-to-svc.nft.nftmon.txt", [][]string{{"OUTPUT 12", "POSTROUTING 3"}}},
		// kube-proxy nftables mode: "services" and the service chain run
		// in nat-output (OUTPUT), "masquerading" in nat-postrouting.
		{"node-to-svc.nftmode.nftmon.txt", [][]string{{"OUTPUT 13", "POSTROUTING 2"}}},
		{"local-gw-to-nodeport.nft.xtmon.txt", [][]string{{"PREROUTING 10", "FORWARD 3", "POSTROUTING 3"}}},
		{"local-gw-to-nodeport.legacy.kmsg.txt", [][]string{{"PREROUTING 11", "FORWARD 5", "POSTROUTING 4"}}},
		{"local-node-to-udp.legacy.kmsg.txt", [][]string{{"OUTPUT 16", "POSTROUTING 4"}}},
		{"local-pod-to-noendpoints.legacy.kmsg.txt", [][]string{{"PREROUTING 5", "FORWARD 7"}, {"PREROUTING 5", "FORWARD 7"}}},
	}
	for _, tt := range tests {
		t.Run(tt.capture, func(t *testing.T) {
			pkts, _ := readCapture(t, tt.capture, FormatAuto, GroupOptions{Ordered: true})
			var got [][]string
			for _, p := range pkts {
				got = append(got, hookRuns(p))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("hooks per packet (-want +got):\n%s", diff)
			}
		})
	}
}

// legacyRec builds a bare legacy TRACE record for a TCP SYN.
func legacyRec(spec, in, out, physin, src, dst string, id int) string {
	phys := ""
	if physin != "" {
		phys = " PHYSIN=" + physin
	}
	return fmt.Sprintf("TRACE: %s IN=%s OUT=%s%s SRC=%s DST=%s LEN=60 TOS=0x00 PREC=0x00 TTL=64 ID=%d DF PROTO=TCP SPT=40000 DPT=80 SEQ=1 ACK=0 WINDOW=1 RES=0x00 SYN URGP=0 ", spec, in, out, phys, src, dst, id)
}

// TestGroupRestarts: the two ways one packet legitimately enters
// PREROUTING twice, and that an unrelated repeat is not merged.
func TestGroupRestarts(t *testing.T) {
	bridged := func(physin string) []string {
		return []string{
			legacyRec("raw:PREROUTING:policy:2", "cni0", "", physin, "10.244.0.26", "10.96.0.50", 5),
			legacyRec("mangle:PREROUTING:policy:1", "cni0", "", physin, "10.244.0.26", "10.96.0.50", 5),
			legacyRec("nat:PREROUTING:rule:1", "cni0", "", physin, "10.244.0.26", "10.96.0.50", 5),
			legacyRec("nat:KUBE-SEP-AAAA:rule:2", "cni0", "", physin, "10.244.0.26", "10.96.0.50", 5),
			// DNAT to a remote pod: br_netfilter hands the frame to the IP
			// stack, which runs PREROUTING again.
			legacyRec("raw:PREROUTING:policy:2", "cni0", "", physin, "10.244.0.26", "10.244.7.9", 5),
			legacyRec("mangle:PREROUTING:policy:1", "cni0", "", physin, "10.244.0.26", "10.244.7.9", 5),
			legacyRec("mangle:FORWARD:policy:1", "cni0", "eth0", physin, "10.244.0.26", "10.244.7.9", 5),
			legacyRec("filter:FORWARD:policy:1", "cni0", "eth0", physin, "10.244.0.26", "10.244.7.9", 5),
			legacyRec("mangle:POSTROUTING:policy:1", "", "eth0", physin, "10.244.0.26", "10.244.7.9", 5),
			legacyRec("nat:POSTROUTING:policy:3", "", "eth0", physin, "10.244.0.26", "10.244.7.9", 5),
		}
	}
	loopback := []string{
		legacyRec("raw:OUTPUT:policy:2", "", "lo", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("mangle:OUTPUT:policy:1", "", "lo", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("filter:OUTPUT:policy:1", "", "lo", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("mangle:POSTROUTING:policy:1", "", "lo", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("raw:PREROUTING:policy:1", "lo", "", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("mangle:PREROUTING:policy:1", "lo", "", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("mangle:INPUT:policy:1", "lo", "", "", "127.0.0.1", "127.0.0.1", 9),
		legacyRec("filter:INPUT:policy:1", "lo", "", "", "127.0.0.1", "127.0.0.1", 9),
	}
	tests := []struct {
		name      string
		lines     []string
		wantSizes []int
		wantStats GroupStats
	}{
		{"bridged DNAT re-enters PREROUTING", bridged("veth1"), []int{10}, GroupStats{Packets: 1, Complete: 1}},
		// Not bridged: a new traversal. It saw no nat, so it ends at mangle
		// POSTROUTING, and the nat record after it stands alone.
		{"routed packet repeating PREROUTING is a new packet", bridged(""), []int{4, 5, 1}, GroupStats{Packets: 3, Split: 1, Complete: 2}},
		{"loopback comes back through PREROUTING", loopback, []int{8}, GroupStats{Packets: 1, Complete: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkts, g := group(t, FormatBare, GroupOptions{}, tt.lines)
			var sizes []int
			for _, p := range pkts {
				sizes = append(sizes, len(p.Hops))
			}
			if diff := cmp.Diff(tt.wantSizes, sizes); diff != "" {
				t.Errorf("packet sizes (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantStats, g.Stats()); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGroupDuplicatesAndClock(t *testing.T) {
	kmsg := captureLines(t, "node-to-svc.legacy.kmsg.txt")
	t.Run("kmsg record read twice", func(t *testing.T) {
		lines := []string{kmsg[0], kmsg[1], kmsg[1], kmsg[2]}
		pkts, g := group(t, FormatKmsg, GroupOptions{}, lines)
		if len(pkts) != 1 || len(pkts[0].Hops) != 3 || g.Stats().Duplicates != 1 {
			t.Errorf("got %d packets (%v), stats %+v; want one of 3 hops and one duplicate", len(pkts), pkts, g.Stats())
		}
	})
	t.Run("same record at another time is not a duplicate", func(t *testing.T) {
		again := strings.Replace(kmsg[1], "4,579110,1152308438,", "4,579111,1152308439,", 1)
		pkts, g := group(t, FormatKmsg, GroupOptions{}, []string{kmsg[0], kmsg[1], again})
		// mangle:OUTPUT ended with its policy; the same chain again means
		// another traversal.
		if len(pkts) != 2 || g.Stats().Duplicates != 0 {
			t.Errorf("got %d packets, stats %+v; want 2 packets, no duplicate", len(pkts), g.Stats())
		}
	})
	t.Run("kernel clock going backwards flushes", func(t *testing.T) {
		// The SYN's first records, then a record of another boot (time 5 s).
		other := "4,12,5000000,-;" + legacyRec("raw:OUTPUT:policy:2", "", "eth0", "", "10.0.0.1", "10.0.0.2", 77)
		var order []uint32
		g := NewGrouper(GroupOptions{Emit: func(p *Packet) { order = append(order, p.First.IPID) }})
		d := NewDecoder(FormatKmsg)
		var ev Event
		for _, l := range []string{kmsg[0], kmsg[1], other} {
			if d.Decode([]byte(l), &ev) == ResultEvent {
				g.Add(&ev)
			}
			if l == other && len(order) != 1 {
				t.Fatalf("after the clock went back: %d packets emitted, want the held one", len(order))
			}
		}
		g.Flush()
		if diff := cmp.Diff([]uint32{26913, 77}, order); diff != "" {
			t.Errorf("emission order (-want +got):\n%s", diff)
		}
		if st := g.Stats(); st.Flushed != 2 {
			t.Errorf("stats %+v, want 2 flushed", st)
		}
	})
}

// TestGroupLimits: memory stays bounded by MaxInFlight, MaxHops and
// MaxHopsInFlight.
func TestGroupLimits(t *testing.T) {
	node := stripKmsg(captureLines(t, "node-to-svc.legacy.kmsg.txt"))
	pod := stripKmsg(captureLines(t, "pod-to-svc.legacy.kmsg.txt"))
	t.Run("max in flight", func(t *testing.T) {
		// Three unfinished packets (each SYN's first 3 records) with room
		// for two: the least recently active one goes first.
		lines := []string{node[0], node[1], pod[0], pod[1], node[2], strings.Replace(node[0], "ID=26913", "ID=1", 1)}
		pkts, g := group(t, FormatBare, GroupOptions{MaxInFlight: 2}, lines)
		var sizes []string
		for _, p := range pkts {
			sizes = append(sizes, fmt.Sprintf("%d:%d", p.First.IPID, len(p.Hops)))
		}
		if diff := cmp.Diff([]string{"29433:2", "26913:3", "1:1"}, sizes); diff != "" {
			t.Errorf("packets as id:hops (-want +got):\n%s", diff)
		}
		if st := g.Stats(); st.Evicted != 1 || st.Flushed != 2 {
			t.Errorf("stats %+v, want 1 evicted and 2 flushed", st)
		}
	})
	t.Run("max hops", func(t *testing.T) {
		pkts, g := group(t, FormatBare, GroupOptions{MaxHops: 6}, node[:20])
		var sizes []int
		for _, p := range pkts {
			sizes = append(sizes, len(p.Hops))
		}
		if diff := cmp.Diff([]int{6, 6, 6, 2}, sizes); diff != "" {
			t.Errorf("packet sizes (-want +got):\n%s", diff)
		}
		if st := g.Stats(); st.Truncated != 3 || st.Flushed != 1 {
			t.Errorf("stats %+v, want 3 truncated, the rest flushed", st)
		}
		// The continuations keep the packet's first header.
		for _, p := range pkts[1:] {
			if p.First != pkts[0].First {
				t.Errorf("continuation first header %+v, want %+v", p.First, pkts[0].First)
			}
		}
	})
	t.Run("max hops in flight", func(t *testing.T) {
		var mixed []string
		for i := 0; i < 20; i++ {
			mixed = append(mixed, node[i], pod[i])
		}
		d := NewDecoder(FormatBare)
		g := NewGrouper(GroupOptions{MaxHops: 8, MaxHopsInFlight: 10, Emit: func(p *Packet) {
			if len(p.Hops) > 8 {
				t.Errorf("emitted %d hops, cap is 8", len(p.Hops))
			}
		}})
		var ev Event
		for _, l := range mixed {
			if d.Decode([]byte(l), &ev) == ResultEvent {
				g.Add(&ev)
			}
			if g.hops > 10 {
				t.Fatalf("%d hops held, cap is 10", g.hops)
			}
		}
		if st := g.Stats(); st.Evicted == 0 {
			t.Errorf("stats %+v, want evictions", st)
		}
	})
}

// TestGroupAllocs: in steady state grouping allocates nothing.
func TestGroupAllocs(t *testing.T) {
	lines := benchCorpus(t, 20)
	d := NewDecoder(FormatKmsg)
	n := 0
	g := NewGrouper(GroupOptions{Emit: func(*Packet) { n++ }})
	var ev Event
	pass := func() {
		for _, l := range lines {
			if d.Decode(l, &ev) == ResultEvent {
				g.Add(&ev)
			}
		}
	}
	pass()
	if allocs := testing.AllocsPerRun(3, pass); allocs != 0 {
		t.Errorf("a pass over %d records allocates %v times, want 0", len(lines), allocs)
	}
	if n == 0 {
		t.Fatal("no packet emitted")
	}

	t.Run("nft trace id changes", func(t *testing.T) {
		// The bridged packets whose trace id changes at FORWARD: joining
		// them (identity index included) allocates nothing either.
		var evs []Event
		d := NewDecoder(FormatNftMonitor)
		for _, l := range captureLines(t, "local-pod-to-noendpoints.nft.nftmon.txt") {
			var ev Event
			if d.Decode([]byte(l), &ev) == ResultEvent {
				evs = append(evs, ev)
			}
		}
		g := NewGrouper(GroupOptions{Emit: func(*Packet) {}})
		pass := func() {
			for i := range evs {
				g.Add(&evs[i])
			}
		}
		pass()
		if allocs := testing.AllocsPerRun(3, pass); allocs != 0 {
			t.Errorf("a pass over %d records allocates %v times, want 0", len(evs), allocs)
		}
		if st := g.Stats(); st.Joined == 0 || st.Complete != st.Packets {
			t.Errorf("stats %+v: want joins and every packet complete", st)
		}
	})
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestReadAll(t *testing.T) {
	kmsg := captureLines(t, "node-to-svc.legacy.kmsg.txt")
	t.Run("over-long line skipped, last line without newline", func(t *testing.T) {
		var in bytes.Buffer
		in.WriteString(kmsg[0] + "\n")
		in.WriteString("4,1,2,-;TRACE: " + strings.Repeat("x", MaxLineLen+10) + "\n")
		in.WriteString(strings.Join(kmsg[1:], "\n")) // no final newline
		n := 0
		st, err := ReadAll(&in, FormatAuto, GroupOptions{Emit: func(*Packet) { n++ }})
		if err != nil {
			t.Fatal(err)
		}
		want := Stats{
			DecodeStats: DecodeStats{Lines: 51, Records: 50, Malformed: 1},
			GroupStats:  GroupStats{Packets: 6, Complete: 5, Flushed: 1},
		}
		if diff := cmp.Diff(want, st); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
		if n != 6 {
			t.Errorf("emitted %d packets, want 6", n)
		}
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("boom")
		r := &failingReader{data: []byte(strings.Join(kmsg[:3], "\n") + "\n"), err: boom}
		n := 0
		st, err := ReadAll(r, FormatKmsg, GroupOptions{Emit: func(*Packet) { n++ }})
		if !errors.Is(err, boom) {
			t.Fatalf("ReadAll error = %v, want it to wrap %v", err, boom)
		}
		if n != 1 || st.Records != 3 {
			t.Errorf("emitted %d packets from %d records; want what was read before the error flushed", n, st.Records)
		}
	})
	t.Run("empty input", func(t *testing.T) {
		st, err := ReadAll(strings.NewReader(""), FormatAuto, GroupOptions{})
		if err != nil || st != (Stats{}) {
			t.Errorf("ReadAll(empty) = %+v, %v", st, err)
		}
	})
}

// kmsgReader serves chunks, returning EPIPE (as os.File does for an
// overrun /dev/kmsg) where a chunk is nil.
type kmsgReader struct {
	chunks [][]byte
	epipes int // EPIPEs served forever once chunks run out, when > 0
}

func (r *kmsgReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		if r.epipes > 0 {
			r.epipes++
			return 0, &fs.PathError{Op: "read", Path: "/dev/kmsg", Err: syscall.EPIPE}
		}
		return 0, io.EOF
	}
	c := r.chunks[0]
	r.chunks = r.chunks[1:]
	if c == nil {
		return 0, &fs.PathError{Op: "read", Path: "/dev/kmsg", Err: syscall.EPIPE}
	}
	return copy(p, c), nil
}

func TestReadAllKmsgOverrun(t *testing.T) {
	kmsg := captureLines(t, "node-to-svc.legacy.kmsg.txt")
	t.Run("EPIPE then the records left", func(t *testing.T) {
		var chunks [][]byte
		for i, l := range kmsg {
			if i >= 30 && i < 35 {
				continue // overwritten by the kernel before they were read
			}
			if i == 35 {
				chunks = append(chunks, nil)
			}
			chunks = append(chunks, []byte(l+"\n"))
		}
		st, err := ReadAll(&kmsgReader{chunks: chunks}, FormatKmsg, GroupOptions{})
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if st.Lost != 5 || st.Records != 45 {
			t.Errorf("stats %+v, want 45 records and 5 lost", st.DecodeStats)
		}
	})
	t.Run("EPIPE for good", func(t *testing.T) {
		r := &kmsgReader{chunks: [][]byte{[]byte(kmsg[0] + "\n")}, epipes: 1}
		_, err := ReadAll(r, FormatKmsg, GroupOptions{})
		if !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("ReadAll error = %v, want EPIPE once retries are exhausted", err)
		}
		if r.epipes < maxEPIPE {
			t.Errorf("gave up after %d EPIPEs, want %d retries", r.epipes-1, maxEPIPE)
		}
	})
}

// TestFollow: live input goes quiet on the wall clock while the writer
// stays open, and Follow stops on cancel.
func TestFollow(t *testing.T) {
	kmsg := captureLines(t, "node-to-svc.legacy.kmsg.txt")
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	emitted := make(chan *Packet, 8)
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Follow(ctx, pr, FormatAuto, GroupOptions{
			Quiet: 20 * time.Millisecond,
			Emit:  func(p *Packet) { emitted <- p.Clone() },
		})
		done <- result{st, err}
	}()
	// The SYN alone: it has no terminal record, so only the quiet window
	// on the wall clock can emit it while the input stays open.
	if _, err := io.WriteString(pw, strings.Join(kmsg[:20], "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-emitted:
		if len(p.Hops) != 20 || p.First.IPID != 26913 {
			t.Errorf("emitted packet ID=%d with %d hops, want the SYN (26913) with 20", p.First.IPID, len(p.Hops))
		}
	case r := <-done:
		t.Fatalf("Follow returned early: %+v, %v", r.st, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("the quiet packet was never emitted")
	}
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Follow error = %v, want context.Canceled", r.err)
	}
	if r.st.Records != 20 || r.st.Quiet != 1 || r.st.Packets != 1 {
		t.Errorf("stats %+v, want 20 records, 1 packet emitted as quiet", r.st)
	}

	t.Run("end of input", func(t *testing.T) {
		want, err := ReadAll(strings.NewReader(strings.Join(kmsg, "\n")), FormatAuto, GroupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := Follow(context.Background(), strings.NewReader(strings.Join(kmsg, "\n")), FormatAuto, GroupOptions{})
		if err != nil {
			t.Fatalf("Follow: %v", err)
		}
		// Follow may emit the SYN as quiet if the machine is slow; the
		// decode side and the total must match ReadAll.
		if got.DecodeStats != want.DecodeStats || got.Packets != want.Packets {
			t.Errorf("Follow stats %+v, ReadAll %+v", got, want)
		}
	})
}

// TestFlightTable checks the open-addressing table against a model under
// random inserts and removals, with hashes chosen to collide and to wrap
// around the end of the slot array, indexing by key and by identity.
func TestFlightTable(t *testing.T) {
	for _, byIdent := range []bool{false, true} {
		t.Run(fmt.Sprintf("byIdent=%v", byIdent), func(t *testing.T) {
			testFlightTable(t, byIdent)
		})
	}
}

func testFlightTable(t *testing.T, byIdent bool) {
	rng := rand.New(rand.NewPCG(1, 2))
	tab := newFlightTable(8, byIdent) // 16 slots
	live := map[*flight]bool{}
	keys := []flowKey{{id: 1, hasID: true}, {id: 2, hasID: true}, {ipid: 3}, {ipid: 4, proto: 6}}
	homes := []uint64{0, 1, 14, 15, 15 + 16, 14 + 32}
	// The entry the table indexes by is set; the other is a decoy that
	// must not be looked at.
	newFlight := func(k flowKey, h uint64) *flight {
		decoy := flowKey{id: 99, hasID: true}
		if byIdent {
			return &flight{ident: k, identHash: h, key: decoy, hash: 3}
		}
		return &flight{key: k, hash: h, ident: decoy, identHash: 3}
	}
	entry := func(f *flight) (flowKey, uint64) {
		if byIdent {
			return f.ident, f.identHash
		}
		return f.key, f.hash
	}
	for step := 0; step < 20000; step++ {
		if len(live) < 12 && (len(live) == 0 || rng.IntN(2) == 0) {
			f := newFlight(keys[rng.IntN(len(keys))], homes[rng.IntN(len(homes))])
			tab.insert(f)
			live[f] = true
		} else {
			for f := range live { // remove an arbitrary one
				tab.remove(f)
				delete(live, f)
				break
			}
		}
		for _, k := range keys {
			for _, h := range homes {
				var want []*flight
				for f := range live {
					if fk, fh := entry(f); fk == k && fh == h {
						want = append(want, f)
					}
				}
				got := tab.collect(k, h, nil)
				if len(got) != len(want) {
					t.Fatalf("step %d: collect(%v, %d) found %d flights, want %d", step, k, h, len(got), len(want))
				}
				for _, f := range got {
					if fk, fh := entry(f); !live[f] || fk != k || fh != h {
						t.Fatalf("step %d: collect(%v, %d) returned a wrong flight", step, k, h)
					}
				}
				if f := tab.find(k, h); (f == nil) != (len(want) == 0) {
					t.Fatalf("step %d: find(%v, %d) = %v with %d live", step, k, h, f, len(want))
				}
			}
		}
		n := 0
		for _, s := range tab.slots {
			if s.f != nil {
				n++
			}
		}
		if n != len(live) {
			t.Fatalf("step %d: %d slots used, %d live", step, n, len(live))
		}
	}
}

func TestDecoderFormatDetected(t *testing.T) {
	d := NewDecoder(FormatAuto)
	var ev Event
	d.Decode([]byte("some prose"), &ev)
	if d.Format() != FormatAuto {
		t.Fatalf("Format() = %v before any recognisable line", d.Format())
	}
	d.Decode([]byte("trace id 1 ip raw OUTPUT policy accept"), &ev)
	if d.Format() != FormatNftMonitor {
		t.Fatalf("Format() = %v, want nft-monitor", d.Format())
	}
	// Once detected the format sticks: a kmsg line is not kmsg any more.
	if r := d.Decode([]byte("4,1,2,-;TRACE: raw:OUTPUT:policy:2 SRC=1.2.3.4 DST=1.2.3.5 PROTO=47"), &ev); r != ResultSkip {
		t.Errorf("kmsg line in an nft-monitor input: %v, want skip", r)
	}
	if got := strings.Join(FormatNames(), ","); got != "auto,kmsg,dmesg,kern.log,bare,xtables-monitor,nft-monitor" {
		t.Errorf("FormatNames() = %s", got)
	}
	for r, want := range map[Result]string{ResultEvent: "event", ResultHeader: "header", ResultSkip: "skip", ResultMalformed: "malformed", Result(9): "unknown"} {
		if r.String() != want {
			t.Errorf("Result(%d).String() = %q, want %q", int(r), r.String(), want)
		}
	}
}

// TestGroupInheritedHeader: records that inherit the header (HasHeader
// false, Header filled in by the decoder, as the agent's netlink decoder
// does) show it, mark updates included; records without any header show the
// packet's last one.
func TestGroupInheritedHeader(t *testing.T) {
	syn := Header{Out: "eth0", Family: 4, Proto: ProtoTCP, Src: addr("10.0.0.1"), Dst: addr("10.96.0.1"), SPort: 1, DPort: 80, IPID: 7, TCPFlags: TCPSyn, Len: 60}
	marked := syn
	marked.Mark = 0x4000
	evs := []Event{
		{TraceID: 5, HasID: true, Table: "nat", Chain: "OUTPUT", Kind: KindRule, Verdict: "JUMP", Target: "KUBE-MARK-MASQ", HasHeader: true, Header: syn},
		{TraceID: 5, HasID: true, Table: "nat", Chain: "KUBE-MARK-MASQ", Kind: KindRule, Verdict: "CONTINUE", Header: marked},
		{TraceID: 5, HasID: true, Table: "nat", Chain: "OUTPUT", Kind: KindPolicy, Verdict: "ACCEPT"},
	}
	var got []Header
	g := NewGrouper(GroupOptions{Emit: func(p *Packet) {
		for _, h := range p.Hops {
			got = append(got, h.Header)
		}
	}})
	for i := range evs {
		g.Add(&evs[i])
	}
	g.Flush()
	if diff := cmp.Diff([]Header{syn, marked, marked}, got, cmp.Comparer(func(a, b Header) bool { return a == b })); diff != "" {
		t.Errorf("hop headers (-want +got):\n%s", diff)
	}
}

// TestGroupHookTables: at INPUT, two tables' filter chains at one priority
// (kube-proxy's filter-input next to iptables' filter INPUT, order unknown):
// the packet is complete once both accepted, and only then; a nat chain is
// done once any nat chain translated the packet.
func TestGroupHookTables(t *testing.T) {
	hdr := Header{Family: 4, Proto: ProtoTCP, Src: netip.MustParseAddr("10.199.0.1"), Dst: netip.MustParseAddr("10.199.0.2"), SPort: 40000, DPort: 30080, TCPFlags: 2, IPID: 7}
	ev := func(table, chain string, kind Kind, verdict string) *Event {
		return &Event{TraceID: 1, HasID: true, Table: table, Chain: chain, Kind: kind, Verdict: verdict, Header: hdr}
	}
	var emitted []int
	n := 0
	g := NewGrouper(GroupOptions{
		Ending: func(ev *Event) Ending {
			if ev.Chain == "masquerading" {
				return EndNAT
			}
			return EndUnknown
		},
		HookTables: func(fam uint8, hook string) []HookChain {
			if hook == "INPUT" {
				return []HookChain{{Table: "filter"}, {Table: "kube-proxy"}, {Table: "kube-proxy", Nat: true}, {Table: "nat", Nat: true}}
			}
			return nil
		},
		Emit: func(*Packet) { emitted = append(emitted, n) },
	})
	for _, e := range []*Event{
		ev("raw", "PREROUTING", KindPolicy, "ACCEPT"),
		ev("nat", "PREROUTING", KindPolicy, "ACCEPT"), // a new connection: nat runs at INPUT too
		ev("kube-proxy", "filter-input", KindRule, "JUMP"),
		ev("kube-proxy", "filter-input", KindPolicy, "ACCEPT"), // 4: one of two filter chains
		ev("filter", "INPUT", KindPolicy, "ACCEPT"),            // 5: both, but the nat chains are still to run
		ev("kube-proxy", "nat-input", KindRule, "JUMP"),
		ev("kube-proxy", "masquerading", KindRule, "ACCEPT"), // 7: translated: nat INPUT is skipped
	} {
		n++
		g.Add(e)
	}
	if diff := cmp.Diff([]int{7}, emitted); diff != "" {
		t.Errorf("emitted after records (-want +got):\n%s", diff)
	}
	if st := g.Stats(); st.Complete != 1 {
		t.Errorf("stats %+v, want 1 complete", st)
	}
}

// TestGroupStallQuiet: a packet whose last record leaves it inside a chain
// waits StallQuiet for the rest (the CPU sending it was stalled), one
// between tables keeps the short window.
func TestGroupStallQuiet(t *testing.T) {
	const ms = time.Millisecond
	inChain := []string{
		fmt.Sprintf(nftPacketFmt, "0000aaaa", "raw", "OUTPUT", 1),
		"trace id 0000aaaa ip raw OUTPUT rule meta nftrace set 1 (verdict continue)",
	}
	betweenTables := []string{
		fmt.Sprintf(nftPacketFmt, "0000bbbb", "raw", "OUTPUT", 2),
		"trace id 0000bbbb ip raw OUTPUT policy accept",
	}
	rest := []string{"trace id 0000aaaa ip raw OUTPUT policy accept"}
	type step struct {
		at    time.Duration
		lines []string // added at at, else a Tick at at
		// emitted is how many packets must have been emitted once the
		// step is done.
		emitted int
	}
	tests := []struct {
		name       string
		stallQuiet time.Duration
		ending     func(*Event) Ending
		steps      []step
		want       [][]string // hops of each packet, in emission order
	}{
		{
			name:       "stalled mid-chain: one packet",
			stallQuiet: time.Second,
			steps:      []step{{10 * ms, append(inChain, betweenTables...), 0}, {150 * ms, nil, 1}, {900 * ms, nil, 1}, {950 * ms, rest, 1}, {1100 * ms, nil, 2}},
			want:       [][]string{{"raw:OUTPUT:policy"}, {"raw:OUTPUT:rule", "raw:OUTPUT:policy"}},
		},
		{
			name:  "without StallQuiet: cut in two",
			steps: []step{{10 * ms, append(inChain, betweenTables...), 0}, {150 * ms, nil, 2}, {900 * ms, nil, 2}, {950 * ms, rest, 2}, {1100 * ms, nil, 3}},
			want:  [][]string{{"raw:OUTPUT:rule"}, {"raw:OUTPUT:policy"}, {"raw:OUTPUT:policy"}},
		},
		{
			name:       "stuck mid-chain: emitted after StallQuiet",
			stallQuiet: time.Second,
			steps:      []step{{10 * ms, inChain, 0}, {900 * ms, nil, 0}, {1050 * ms, nil, 1}},
			want:       [][]string{{"raw:OUTPUT:rule"}},
		},
		{
			// kube-proxy's nftables table hangs off the hook after it:
			// Ending says the traversal goes on, but the packet's own
			// verdict (accept) says it left the chain.
			name:       "accepted, more tables may follow: the short window",
			stallQuiet: time.Second,
			ending:     func(*Event) Ending { return EndNone },
			steps:      []step{{10 * ms, betweenTables, 0}, {150 * ms, nil, 1}},
			want:       [][]string{{"raw:OUTPUT:policy"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var now time.Duration
			var got [][]string
			g := NewGrouper(GroupOptions{Quiet: 100 * ms, StallQuiet: tt.stallQuiet, Ending: tt.ending, ReadTimes: true, Clock: func() time.Duration { return now },
				Emit: func(p *Packet) {
					var hops []string
					for _, h := range p.Hops {
						hops = append(hops, h.Table+":"+h.Chain+":"+h.Kind.String())
					}
					got = append(got, hops)
				}})
			g.Tick(0)
			d := NewDecoder(FormatNftMonitor)
			var ev Event
			for _, s := range tt.steps {
				now = s.at
				if s.lines == nil {
					g.Tick(now)
				}
				for _, l := range s.lines {
					if d.Decode([]byte(l), &ev) == ResultEvent {
						g.Add(&ev)
					}
				}
				if len(got) != s.emitted {
					t.Errorf("at %s: %d packets emitted, want %d", s.at, len(got), s.emitted)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
		})
	}
}
