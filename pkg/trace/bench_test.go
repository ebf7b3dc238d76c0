package trace

import (
	"bufio"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/trace/tracetest"
)

// benchCorpus builds legacy kmsg input from the real captures: the TRACE
// records of node-to-svc and pod-to-svc, repeated with fresh kmsg sequence
// numbers, timestamps (200 ms apart per copy, so held packets go quiet),
// IPv4 IDs and TCP sequence numbers, so every copy forms new packets.
func benchCorpus(tb testing.TB, copies int) [][]byte {
	tb.Helper()
	var base []string
	for _, name := range []string{"node-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.kmsg.txt"} {
		f, err := os.Open(filepath.Join(capturesDir, name))
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.Contains(sc.Text(), ";TRACE: ") {
				base = append(base, sc.Text())
			}
		}
		f.Close()
	}
	var out [][]byte
	seq := uint64(1000)
	for c := 0; c < copies; c++ {
		for _, l := range base {
			out = append(out, []byte(tracetest.KmsgCopy(l, c, seq)))
			seq++
		}
	}
	return out
}

type lineDecoder func(line []byte, ev *Event) bool

// cycleReader serves data over and over, without allocating.
type cycleReader struct {
	data []byte
	off  int
}

func (r *cycleReader) Read(p []byte) (int, error) {
	if r.off == len(r.data) {
		r.off = 0
	}
	n := copy(p, r.data[r.off:])
	r.off += n
	return n, nil
}

// runLegacyBench streams the corpus the way ReadAll does (bufio.Reader,
// ReadSlice, decode, group): one iteration is one record.
func runLegacyBench(b *testing.B, decode lineDecoder) {
	lines := benchCorpus(b, 200)
	var data []byte
	for _, l := range lines {
		data = append(append(data, l...), '\n')
	}
	br := bufio.NewReaderSize(&cycleReader{data: data}, 1<<16)
	packets := 0
	g := NewGrouper(GroupOptions{Emit: func(*Packet) { packets++ }})
	var ev Event
	next := func() {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if decode(line, &ev) {
			g.Add(&ev)
		}
	}
	// One pass first: interned strings, pooled packets and hop slices are
	// then in place, and the timed loop measures the steady state.
	for range lines {
		next()
	}
	packets = 0
	// The machine is shared: besides wall time, the CPU time this thread
	// used, which other load does not inflate.
	cpu := tracetest.TimeOnThread(b, func(int) { next() })
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
	}
	if b.N >= len(lines) && packets == 0 {
		b.Fatal("no packet was emitted")
	}
}

// BenchmarkLegacyKmsg: decode and group legacy kmsg TRACE records; one
// iteration is one record.
func BenchmarkLegacyKmsg(b *testing.B) {
	d := NewDecoder(FormatKmsg)
	runLegacyBench(b, func(line []byte, ev *Event) bool {
		return d.Decode(line, ev) == ResultEvent
	})
}

// BenchmarkLegacyKmsgRegexpBaseline: the same work with a straightforward
// regexp-based parser (and the same Grouper), as the yardstick for the
// hand-written one.
func BenchmarkLegacyKmsgRegexpBaseline(b *testing.B) {
	runLegacyBench(b, regexpDecodeKmsg)
}

var (
	reKmsgTrace = regexp.MustCompile(`^(\d+),(\d+),(\d+),[^;]*;TRACE: ([^:\s]+):(\S+):(rule|return|policy):(\d+) (.*)$`)
	reKV        = regexp.MustCompile(`([A-Z]+)=(\S*)`)
	reBareWord  = regexp.MustCompile(`\b(SYN|ACK|FIN|RST|PSH|URG|ECE|CWR)\b(?:[^=]|$)`)
)

// regexpDecodeKmsg is the baseline: regexps, strconv and netip on strings.
func regexpDecodeKmsg(line []byte, ev *Event) bool {
	m := reKmsgTrace.FindStringSubmatch(strings.TrimRight(string(line), "\r\n"))
	if m == nil {
		return false
	}
	*ev = Event{HasHeader: true}
	ev.Seq, _ = strconv.ParseUint(m[2], 10, 64)
	usec, _ := strconv.ParseUint(m[3], 10, 64)
	ev.Time = time.Duration(usec) * time.Microsecond
	ev.Table, ev.Chain = m[4], m[5]
	switch m[6] {
	case "rule":
		ev.Kind = KindRule
	case "return":
		ev.Kind = KindReturn
	default:
		ev.Kind = KindPolicy
	}
	ev.Rule, _ = strconv.Atoi(m[7])
	fields := m[8]
	if k := strings.Index(fields, "["); k >= 0 {
		fields = fields[:k]
	}
	h := &ev.Header
	l4 := false
	for _, kv := range reKV.FindAllStringSubmatch(fields, -1) {
		switch kv[1] {
		case "IN":
			h.In = kv[2]
		case "OUT":
			h.Out = kv[2]
		case "PHYSIN":
			h.PhysIn = kv[2]
		case "PHYSOUT":
			h.PhysOut = kv[2]
		case "SRC":
			a, err := netip.ParseAddr(kv[2])
			if err != nil {
				return false
			}
			h.Src = a
			h.Family = familyOf(a)
		case "DST":
			a, err := netip.ParseAddr(kv[2])
			if err != nil {
				return false
			}
			h.Dst = a
		case "LEN":
			if !l4 {
				n, _ := strconv.ParseUint(kv[2], 10, 16)
				h.Len = uint16(n)
			}
		case "ID":
			n, _ := strconv.ParseUint(kv[2], 10, 32)
			h.IPID = uint32(n)
		case "PROTO":
			l4 = true
			switch kv[2] {
			case "TCP":
				h.Proto = ProtoTCP
			case "UDP":
				h.Proto = ProtoUDP
			case "ICMP":
				h.Proto = ProtoICMP
			}
		case "SPT":
			n, _ := strconv.ParseUint(kv[2], 10, 16)
			h.SPort = uint16(n)
		case "DPT":
			n, _ := strconv.ParseUint(kv[2], 10, 16)
			h.DPort = uint16(n)
		case "SEQ":
			n, _ := strconv.ParseUint(kv[2], 10, 32)
			h.TCPSeq = uint32(n)
		case "MARK":
			n, _ := strconv.ParseUint(strings.TrimPrefix(kv[2], "0x"), 16, 32)
			h.Mark = uint32(n)
		}
	}
	for _, w := range reBareWord.FindAllStringSubmatch(fields, -1) {
		switch w[1] {
		case "SYN":
			h.TCPFlags |= TCPSyn
		case "ACK":
			h.TCPFlags |= TCPAck
		case "FIN":
			h.TCPFlags |= TCPFin
		case "RST":
			h.TCPFlags |= TCPRst
		case "PSH":
			h.TCPFlags |= TCPPsh
		case "URG":
			h.TCPFlags |= TCPUrg
		case "ECE":
			h.TCPFlags |= TCPEce
		case "CWR":
			h.TCPFlags |= TCPCwr
		}
	}
	return true
}

// BenchmarkDecodeNftMonitor: decode nft monitor trace lines (rule text
// normalisation and interning included).
func BenchmarkDecodeNftMonitor(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(capturesDir, "node-to-svc.nft.nftmon.txt"))
	if err != nil {
		b.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	raw := make([][]byte, len(lines))
	for i, l := range lines {
		raw[i] = []byte(l)
	}
	d := NewDecoder(FormatNftMonitor)
	var ev Event
	for _, l := range raw {
		d.Decode(l, &ev)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Decode(raw[i%len(raw)], &ev)
	}
}
