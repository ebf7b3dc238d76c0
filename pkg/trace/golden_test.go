package trace

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const capturesDir = "../../test/testdata/captures"

// dumpPacket writes a stable, readable text form of p: what the golden
// files hold. Each hop line starts with its hook ("-" when unknown).
func dumpPacket(w *bytes.Buffer, n int, p *Packet) {
	fmt.Fprintf(w, "packet %d:", n)
	if p.HasID {
		fmt.Fprintf(w, " trace-id=%08x", p.TraceID)
	}
	fmt.Fprintf(w, " %s", headerString(&p.First))
	if p.Start != 0 || p.End != 0 {
		fmt.Fprintf(w, " start=%s end=%s", fmtTime(p.Start), fmtTime(p.End))
	}
	fmt.Fprintf(w, " hops=%d\n", len(p.Hops))
	var prev *Header
	for i := range p.Hops {
		h := &p.Hops[i]
		hook := h.Hook
		if hook == "" {
			hook = "-"
		}
		fmt.Fprintf(w, "  %-11s %s:%s:%s", hook, h.Table, h.Chain, h.Kind)
		if h.Rule != 0 {
			fmt.Fprintf(w, ":%d", h.Rule)
		}
		if h.Handle != 0 {
			fmt.Fprintf(w, " handle=%d", h.Handle)
		}
		if h.Verdict != "" {
			fmt.Fprintf(w, " verdict=%s", h.Verdict)
		}
		if h.Target != "" {
			fmt.Fprintf(w, " target=%s", h.Target)
		}
		if prev == nil || *prev != h.Header {
			fmt.Fprintf(w, " | %s", headerString(&h.Header))
		}
		if h.Text != "" {
			fmt.Fprintf(w, "\n    %s", h.Text)
		}
		w.WriteByte('\n')
		prev = &h.Header
	}
}

func fmtTime(d time.Duration) string {
	return fmt.Sprintf("%d.%06d", d/time.Second, (d%time.Second)/time.Microsecond)
}

func headerString(h *Header) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d proto=%d %s:%d>%s:%d", h.Family, h.Proto, h.Src, h.SPort, h.Dst, h.DPort)
	if h.IPID != 0 {
		fmt.Fprintf(&b, " id=%d", h.IPID)
	}
	if h.Len != 0 {
		fmt.Fprintf(&b, " len=%d", h.Len)
	}
	if h.Proto == ProtoTCP {
		fmt.Fprintf(&b, " seq=%d flags=%s", h.TCPSeq, tcpFlagString(h.TCPFlags))
	}
	if h.Proto == ProtoICMP || h.Proto == ProtoICMPv6 {
		fmt.Fprintf(&b, " icmp=%d/%d id=%d seq=%d", h.ICMPType, h.ICMPCode, h.ICMPID, h.ICMPSeq)
	}
	fmt.Fprintf(&b, " in=%s out=%s", h.In, h.Out)
	if h.PhysIn != "" || h.PhysOut != "" {
		fmt.Fprintf(&b, " physin=%s physout=%s", h.PhysIn, h.PhysOut)
	}
	if h.Mark != 0 {
		fmt.Fprintf(&b, " mark=%#x", h.Mark)
	}
	return b.String()
}

func tcpFlagString(f uint8) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}

// readCapture groups one capture with ReadAll and returns a copy of every
// packet emitted plus the stats.
func readCapture(t testing.TB, name string, f Format, opts GroupOptions) ([]*Packet, Stats) {
	t.Helper()
	file, err := os.Open(filepath.Join(capturesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var pkts []*Packet
	opts.Emit = func(p *Packet) { pkts = append(pkts, p.Clone()) }
	st, err := ReadAll(file, f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return pkts, st
}

func TestGoldenCaptures(t *testing.T) {
	tests := []struct {
		capture string
		format  Format
		golden  string
	}{
		{"node-to-svc.legacy.kmsg.txt", FormatAuto, "node-to-svc.legacy.kmsg.golden"},
		{"pod-to-svc.legacy.kmsg.txt", FormatAuto, "pod-to-svc.legacy.kmsg.golden"},
		{"node-to-svc.nft.xtmon.txt", FormatAuto, "node-to-svc.nft.xtmon.golden"},
		{"node-to-svc.nft.nftmon.txt", FormatAuto, "node-to-svc.nft.nftmon.golden"},
		{"node-to-svc.nftmode.nftmon.txt", FormatAuto, "node-to-svc.nftmode.nftmon.golden"},
		{"seed-001-kernlog.txt", FormatAuto, "seed-001-kernlog.golden"},
		// The local cluster captures (test/testdata/captures/README.md).
		{"local-gw-to-nodeport.legacy.kmsg.txt", FormatAuto, "local-gw-to-nodeport.legacy.kmsg.golden"},
		{"local-gw-to-nodeport.nft.xtmon.txt", FormatAuto, "local-gw-to-nodeport.nft.xtmon.golden"},
		{"local-gw-to-nodeport.nft.nftmon.txt", FormatAuto, "local-gw-to-nodeport.nft.nftmon.golden"},
		{"local-pod-to-noendpoints.legacy.kmsg.txt", FormatAuto, "local-pod-to-noendpoints.legacy.kmsg.golden"},
		{"local-pod-to-noendpoints.nft.xtmon.txt", FormatAuto, "local-pod-to-noendpoints.nft.xtmon.golden"},
		{"local-pod-to-noendpoints.nft.nftmon.txt", FormatAuto, "local-pod-to-noendpoints.nft.nftmon.golden"},
		{"local-node-to-udp.legacy.kmsg.txt", FormatAuto, "local-node-to-udp.legacy.kmsg.golden"},
		{"local-node-to-udp.nft.xtmon.txt", FormatAuto, "local-node-to-udp.nft.xtmon.golden"},
		{"local-node-to-udp.nft.nftmon.txt", FormatAuto, "local-node-to-udp.nft.nftmon.golden"},
	}
	for _, tt := range tests {
		t.Run(tt.capture, func(t *testing.T) {
			pkts, st := readCapture(t, tt.capture, tt.format, GroupOptions{})
			var got bytes.Buffer
			fmt.Fprintf(&got, "# %s (%s)\n", tt.capture, tt.format)
			fmt.Fprintf(&got, "# stats: %+v\n", st)
			for i, p := range pkts {
				dumpPacket(&got, i+1, p)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/trace -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("grouped %s differs from %s (-want +got):\n%s", tt.capture, path, diff)
			}
		})
	}
}
