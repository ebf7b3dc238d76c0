package trace

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func addCaptureSeeds(f *testing.F, names ...string) {
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(capturesDir, name))
		if err != nil {
			f.Fatal(err)
		}
		lines := bytes.Split(data, []byte("\n"))
		for i, l := range lines {
			f.Add(l)
			if i+3 <= len(lines) && i%5 == 0 {
				f.Add(bytes.Join(lines[i:i+3], []byte("\n")))
			}
		}
	}
}

// checkEvent asserts what every decoded Event must satisfy.
func checkEvent(t *testing.T, line []byte, ev *Event) {
	t.Helper()
	if ev.Table == "" || ev.Chain == "" {
		t.Fatalf("%q: event without table or chain: %+v", line, ev)
	}
	if ev.Kind < KindRule || ev.Kind > KindPolicy {
		t.Fatalf("%q: event kind %d", line, ev.Kind)
	}
	if ev.HasHeader && ev.Header.Family != 0 && ev.Header.Family != 4 && ev.Header.Family != 6 {
		t.Fatalf("%q: family %d", line, ev.Header.Family)
	}
	if !ev.HasID && ev.HasHeader && (!ev.Header.Src.IsValid() || !ev.Header.Dst.IsValid()) {
		t.Fatalf("%q: legacy event without addresses: %+v", line, ev.Header)
	}
}

// decodeLines runs every line of data through a Decoder of format f and
// checks the events and the counters.
func decodeLines(t *testing.T, f Format, data []byte) {
	d := NewDecoder(f)
	lines := bytes.Split(data, []byte("\n"))
	for _, l := range lines {
		var ev Event
		switch r := d.Decode(l, &ev); r {
		case ResultEvent:
			checkEvent(t, l, &ev)
		case ResultHeader, ResultSkip, ResultMalformed:
		default:
			t.Fatalf("%q: result %v", l, r)
		}
	}
	st := d.Stats()
	if st.Lines != uint64(len(lines)) || st.Records+st.Headers+st.Skipped+st.Malformed != st.Lines {
		t.Fatalf("counters do not add up: %+v for %d lines", st, len(lines))
	}
}

func FuzzDecodeLegacy(f *testing.F) {
	addCaptureSeeds(f, "node-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.kmsg.txt", "seed-001-kernlog.txt")
	f.Add([]byte("[  12.345678] TRACE: filter:INPUT:rule:3 IN=eth0 OUT= SRC=2001:0db8:0000:0000:0000:0000:0000:0001 DST=fd00::1 LEN=80 TC=0 HOPLIMIT=64 FLOWLBL=1 PROTO=ICMPv6 TYPE=128 CODE=0 ID=6 SEQ=1 "))
	f.Add([]byte("TRACE: filter:FORWARD:rule:7 SRC=10.0.0.1 DST=10.0.0.2 LEN=88 ID=9 PROTO=ICMP TYPE=3 CODE=3 [SRC=10.0.0.2 DST=10.0.0.1 [nested] PROTO=UDP ] MARK=0x1"))
	f.Add([]byte(" SUBSYSTEM=net\n6,5,6,-;x\n4,9,10,-;TRACE: a:b:rule:1 SRC=1.2.3.4 DST=1.2.3.5 PROTO=47"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatAuto, FormatKmsg, FormatDmesg, FormatKernLog, FormatBare} {
			decodeLines(t, format, data)
		}
	})
}

func FuzzDecodeXtablesMonitor(f *testing.F) {
	addCaptureSeeds(f, "node-to-svc.nft.xtmon.txt")
	f.Add([]byte("PACKET: 10 00000001 IN=eth0 SRC=fd00::1 DST=fd00::2 LEN=60 TC=0 HOPLIMIT=64 FLOWLBL=77 SPORT=53 DPORT=5353\n TRACE: 10 00000001 filter:INPUT:return:\n TRACE: 2 1 a:b:rule:0x1:JUMP:"))
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeLines(t, FormatXtablesMonitor, data)
		decodeLines(t, FormatAuto, data)
	})
}

func FuzzDecodeNftMonitor(f *testing.F) {
	addCaptureSeeds(f, "node-to-svc.nft.nftmon.txt", "node-to-svc.nftmode.nftmon.txt")
	f.Add([]byte("trace id 1 inet filter input packet: iif \"eth0\" ip6 saddr fd00::1 ip6 daddr fd00::2 tcp flags == syn | ack\ntrace id 1 inet filter input verdict jump x meta mark 0x1\ntrace id 1 inet f c unknown rule handle 3 (verdict drop)"))
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeLines(t, FormatNftMonitor, data)
		decodeLines(t, FormatAuto, data)
	})
}

// fuzzEvent builds an Event from 8 bytes, drawing every field from a small
// alphabet so that the fuzzer hits the grouping rules (same identities,
// NAT-like address changes, hook order, verdicts, clocks) often.
func fuzzEvent(b []byte, now *time.Duration, ev *Event) {
	tables := []string{"raw", "mangle", "nat", "filter", "security", "kube-proxy"}
	chains := []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING", "KUBE-SVC-X", "services", "filter-forward", "nat-prerouting"}
	verdicts := []string{"", "", "ACCEPT", "DROP", "JUMP", "CONTINUE", "STOLEN", "RETURN"}
	ifaces := []string{"", "lo", "eth0", "cni0"}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("fd00::1")}
	*ev = Event{
		Table:     tables[int(b[0])%len(tables)],
		Chain:     chains[int(b[1])%len(chains)],
		Kind:      Kind(b[2]%3 + 1),
		Rule:      int(b[2] >> 4),
		Verdict:   verdicts[int(b[3])%len(verdicts)],
		HasID:     b[3]&0x80 != 0,
		TraceID:   uint32(b[4] & 3),
		HasHeader: b[4]&0x80 == 0,
	}
	switch b[5] % 4 {
	case 1:
		*now += time.Duration(b[5]) * time.Millisecond
	case 2:
		if *now > time.Second {
			*now -= time.Second
		}
	}
	if b[5]%8 != 0 {
		ev.Time = *now
	}
	ev.Seq = uint64(b[7] & 3)
	h := &ev.Header
	h.Src = addrs[int(b[6])%len(addrs)]
	h.Dst = addrs[int(b[6]>>2)%len(addrs)]
	h.Family = familyOf(h.Src)
	h.Proto = []uint8{ProtoTCP, ProtoUDP, ProtoICMP}[int(b[6]>>4)%3]
	h.IPID = uint32(b[7] >> 4 & 3)
	h.In = ifaces[int(b[7]>>2)%len(ifaces)]
	h.Out = ifaces[int(b[1]>>4)%len(ifaces)]
	if b[0]&0x80 != 0 {
		h.PhysIn = "veth0"
	}
}

func FuzzGrouper(f *testing.F) {
	f.Add([]byte("\x00\x03\x00\x00\x00\x01\x00\x00\x01\x03\x00\x02\x00\x01\x00\x00\x03\x04\x01\x00\x00\x01\x00\x00"), uint8(0))
	f.Add(bytes.Repeat([]byte{2, 3, 1, 0x81, 1, 1, 5, 0x10}, 40), uint8(1))
	f.Add(bytes.Repeat([]byte{0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 2, 3, 0, 1, 0, 0}, 30), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		const maxInFlight, maxHops, maxHopsInFlight = 4, 8, 16
		emittedHops := 0
		emitted := 0
		g := NewGrouper(GroupOptions{
			Quiet:           time.Duration(mode%4+1) * 10 * time.Millisecond,
			MaxInFlight:     maxInFlight,
			MaxHops:         maxHops,
			MaxHopsInFlight: maxHopsInFlight,
			Ordered:         mode&4 != 0,
			Emit: func(p *Packet) {
				if len(p.Hops) == 0 || len(p.Hops) > maxHops {
					t.Fatalf("emitted a packet of %d hops", len(p.Hops))
				}
				for i := range p.Hops {
					h := &p.Hops[i]
					switch h.Hook {
					case "", "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING":
					default:
						t.Fatalf("hop %s:%s has hook %q", h.Table, h.Chain, h.Hook)
					}
					if bh := builtinHook(h.Chain); bh != hookNone && h.Hook != h.Chain {
						t.Fatalf("built-in chain %s:%s has hook %q", h.Table, h.Chain, h.Hook)
					}
				}
				emittedHops += len(p.Hops)
				emitted++
			},
		})
		if mode&8 != 0 {
			g.opts.Ending = func(ev *Event) Ending { return Ending(ev.Rule % 4) }
		}
		var now time.Duration = time.Hour
		var ev Event
		adds := 0
		for i := 0; i+8 <= len(data); i += 8 {
			fuzzEvent(data[i:i+8], &now, &ev)
			g.Add(&ev)
			adds++
			if data[i]&0x40 != 0 {
				g.Tick(now)
			}
			if g.inflight > maxInFlight || g.used > maxInFlight || g.hops > maxHopsInFlight {
				t.Fatalf("bounds exceeded: %d in flight, %d used, %d hops", g.inflight, g.used, g.hops)
			}
		}
		g.Flush()
		st := g.Stats()
		if g.inflight != 0 || g.used != 0 || g.hops != 0 || g.fifH != nil || g.lruH != nil {
			t.Fatalf("after Flush: %d in flight, %d used, %d hops", g.inflight, g.used, g.hops)
		}
		if uint64(emitted) != st.Packets || st.Packets != st.Complete+st.Quiet+st.Split+st.Evicted+st.Truncated+st.Flushed {
			t.Fatalf("emitted %d, stats %+v", emitted, st)
		}
		if uint64(emittedHops)+st.Duplicates != uint64(adds) {
			t.Fatalf("%d records added, %d hops emitted, %d duplicates", adds, emittedHops, st.Duplicates)
		}
		for _, s := range g.table.slots {
			if s.f != nil {
				t.Fatal("table not empty after Flush")
			}
		}
		for _, s := range g.idents.slots {
			if s.f != nil {
				t.Fatal("identity index not empty after Flush")
			}
		}
	})
}
