package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const captures = "../../test/testdata/captures"

// textCase is one rendered golden: a real capture (with its ruleset) or
// packet records saved from a live session (records), in one style.
type textCase struct {
	name, trace, rules, records string
	o                           TextOptions
	// route, when set, is the node's routing answer the live agent adds
	// to a packet whose trace stops after PREROUTING.
	route *record.RouteCheck
}

var textCases = []textCase{
	// One packet across two nodes: the legs two real agents wrote on one
	// kernel (captures/two-agents-one-kernel.legacy.ndjson), joined and
	// explained as the plugin does.
	{name: "crossnode.joined.txt", records: "crossnode.joined.ndjson"},
	{name: "crossnode.joined.wide.txt", records: "crossnode.joined.ndjson", o: TextOptions{Wide: true, NoRuleText: true}},
	{name: "node-to-svc.legacy.txt", trace: "node-to-svc.legacy.kmsg.txt", rules: "node-to-svc.legacy.rules.txt"},
	{name: "node-to-svc.legacy.wide.txt", trace: "node-to-svc.legacy.kmsg.txt", rules: "node-to-svc.legacy.rules.txt", o: TextOptions{Wide: true}},
	{name: "pod-to-svc.legacy.txt", trace: "pod-to-svc.legacy.kmsg.txt", rules: "pod-to-svc.legacy.rules.txt"},
	{name: "pod-to-svc.legacy.wide.txt", trace: "pod-to-svc.legacy.kmsg.txt", rules: "pod-to-svc.legacy.rules.txt", o: TextOptions{Wide: true, NoRuleText: true}},
	{name: "node-to-svc.nft.color.txt", trace: "node-to-svc.nft.xtmon.txt", rules: "node-to-svc.nft.rules.txt", o: TextOptions{Color: true}},
	{name: "node-to-svc.nftmode.txt", trace: "node-to-svc.nftmode.nftmon.txt", rules: "node-to-svc.nftmode.ruleset.txt"},
	// Taken on the local cluster in kube-proxy nftables mode (see the captures' README).
	{name: "gw-to-nodeport-cluster.nftmode.txt", trace: "local-nftmode-gw-to-nodeport-cluster.nftmon.txt", rules: "local-nftmode-gw-to-nodeport-cluster.ruleset.txt"},
	{name: "gw-to-nodeport-local.nftmode.txt", trace: "local-nftmode-gw-to-nodeport-local.nftmon.txt", rules: "local-nftmode-gw-to-nodeport-local.ruleset.txt"},
	{name: "nodeport-local-noep.nftmode.txt", trace: "local-nftmode-nodeport-local-noep.nftmon.txt", rules: "local-nftmode-nodeport-local-noep.ruleset.txt"},
	{name: "gw-to-lb.nftmode.txt", trace: "local-nftmode-gw-to-lb.nftmon.txt", rules: "local-nftmode-gw-to-lb.ruleset.txt"},
	{name: "gw-to-nodeport.legacy.txt", trace: "local-gw-to-nodeport.legacy.kmsg.txt", rules: "local-gw-to-nodeport.legacy.rules.txt"},
	{name: "pod-to-noendpoints.legacy.txt", trace: "local-pod-to-noendpoints.legacy.kmsg.txt", rules: "local-pod-to-noendpoints.legacy.rules.txt"},
	{name: "node-syn-retransmit.legacy.txt", trace: "local-node-syn-retransmit.legacy.kmsg.txt", rules: "local-node-syn-retransmit.legacy.rules.txt"},
	{name: "rpfilter-drop.kernlog.txt", trace: "seed-001-kernlog.txt", route: &record.RouteCheck{
		RouteLookup: record.RouteLookup{Src: "192.168.235.13", Dst: "10.0.1.12", In: "enp5s0", Error: "invalid cross-device link", Errno: "EXDEV"},
		RPFilter:    map[string]int{"all": 1, "enp5s0": 0},
	}},
}

// packets annotates a case's capture as analyze does (and as the agent does
// live, with the route check), or reads its saved records.
func packets(t testing.TB, c textCase) []record.Packet {
	t.Helper()
	if c.records != "" {
		data, err := os.ReadFile(filepath.Join("testdata", c.records))
		if err != nil {
			t.Fatal(err)
		}
		var out []record.Packet
		dec := json.NewDecoder(bytes.NewReader(data))
		for dec.More() {
			var p record.Packet
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Type == record.TypePacket {
				out = append(out, p)
			}
		}
		return out
	}
	var ix *rules.Index
	if c.rules != "" {
		ix = rules.NewIndex()
		data, err := os.ReadFile(filepath.Join(captures, c.rules))
		if err != nil {
			t.Fatal(err)
		}
		if err := ix.Add(data); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(filepath.Join(captures, c.trace))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record.Packet
	if _, err := trace.ReadAll(f, trace.FormatAuto, trace.GroupOptions{
		Ordered:    true,
		Ending:     explain.Ending(ix),
		HookTables: explain.HookTables(ix),
		Emit: func(p *trace.Packet) {
			rec := explain.AnnotateLive(p, ix, func(rec *record.Packet) *record.Live {
				if last := len(rec.Hops) - 1; c.route != nil && last >= 0 && rec.Verdict == record.VerdictUnknown && rec.Hops[last].Hook == "PREROUTING" {
					return &record.Live{Route: c.route}
				}
				return nil
			})
			out = append(out, rec)
		},
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// render writes packets and their summary in one style.
func render(t *testing.T, ps []record.Packet, o TextOptions) string {
	t.Helper()
	var buf bytes.Buffer
	out := NewText(&buf, o)
	sum := explain.NewSummarizer("")
	for i := range ps {
		sum.Add(&ps[i])
		if err := out.Packet(&ps[i]); err != nil {
			t.Fatal(err)
		}
	}
	s := sum.Summary()
	if err := out.Summary(&s); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestTextGolden(t *testing.T) {
	for _, c := range textCases {
		t.Run(c.name, func(t *testing.T) {
			got := render(t, packets(t, c), c.o)
			golden := filepath.Join("testdata", c.name)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/render -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !c.o.Color && strings.Contains(got, "\x1b[") {
				t.Error("colour codes in output without Color")
			}
		})
	}
}

// screenRows counts the rows text takes on a terminal cols wide (long lines
// wrap), colour codes aside.
func screenRows(text string, cols int) int {
	rows := 0
	for _, l := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := utf8.RuneCountInString(ansi.ReplaceAllString(l, ""))
		rows += max(1, (n+cols-1)/cols)
	}
	return rows
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestFoldedFitsOneScreen: each packet of the common paths, folded, fits a
// 120x40 terminal, and keeps every hop that decided something.
func TestFoldedFitsOneScreen(t *testing.T) {
	for _, c := range textCases {
		if c.o.Wide {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			for i, p := range packets(t, c) {
				var buf bytes.Buffer
				if err := NewText(&buf, c.o).Packet(&p); err != nil {
					t.Fatal(err)
				}
				text := ansi.ReplaceAllString(buf.String(), "")
				if rows := screenRows(text, 120); rows > 40 {
					t.Errorf("packet %d takes %d rows at 120 columns, want at most 40:\n%s", i+1, rows, text)
				}
				for j, h := range p.Hops {
					if h.Role == "" && j != p.VerdictHop {
						continue
					}
					if !shows(text, j, h) {
						t.Errorf("packet %d: deciding hop %d (%s:%s, role %q) not shown:\n%s", i+1, j+1, h.Table, h.Chain, h.Role, text)
					}
				}
			}
		})
	}
}

// shows reports whether folded text has hop j on a line of its own, or, for
// a policy, within a folded range.
func shows(text string, j int, h record.Hop) bool {
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(strings.TrimLeft(l, " >"))
		if len(f) < 2 {
			continue
		}
		if f[0] == strconv.Itoa(j+1) && (f[1] == h.Table+":"+h.Chain || h.Kind == "policy" && f[1] == h.Table+":"+h.Chain+":") {
			return true
		}
		if a, b, ok := strings.Cut(f[0], "-"); ok && h.Kind == "policy" {
			lo, err1 := strconv.Atoi(a)
			hi, err2 := strconv.Atoi(b)
			if err1 == nil && err2 == nil && lo <= j+1 && j+1 <= hi {
				return true
			}
		}
	}
	return false
}

// TestWideShowsEveryHop: -o wide has one line per hop, in order, each with
// its rule text.
func TestWideShowsEveryHop(t *testing.T) {
	for _, c := range textCases {
		t.Run(c.name, func(t *testing.T) {
			for i, p := range packets(t, c) {
				var buf bytes.Buffer
				if err := NewText(&buf, TextOptions{Wide: true}).Packet(&p); err != nil {
					t.Fatal(err)
				}
				text := buf.String()
				next := 0
				for _, l := range strings.Split(text, "\n") {
					f := strings.Fields(strings.TrimLeft(l, " >"))
					if len(f) > 1 && next < len(p.Hops) && f[0] == strconv.Itoa(next+1) && f[1] == p.Hops[next].Table+":"+p.Hops[next].Chain {
						next++
					}
				}
				if next != len(p.Hops) {
					t.Errorf("packet %d: wide shows %d of %d hops in order:\n%s", i+1, next, len(p.Hops), text)
				}
				for _, h := range p.Hops {
					if h.Kind == "rule" && h.Text != "" && !strings.Contains(text, h.Text) {
						t.Errorf("packet %d: wide lacks rule text %q", i+1, h.Text)
					}
				}
			}
		})
	}
}

func TestPlurals(t *testing.T) {
	var buf bytes.Buffer
	out := NewText(&buf, TextOptions{})
	if err := out.Summary(&record.Summary{Packets: 1, Verdicts: map[string]int{"ACCEPT": 1}, Lost: 1}); err != nil {
		t.Fatal(err)
	}
	if err := out.Lost(&record.Lost{Count: 1}); err != nil {
		t.Fatal(err)
	}
	if err := out.Summary(&record.Summary{Packets: 2, Verdicts: map[string]int{"ACCEPT": 2}, Lost: 0}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 2} {
		if err := out.Summary(&record.Summary{Packets: 3, Verdicts: map[string]int{"ACCEPT": 3}, SNAT: 3, Retransmits: n}); err != nil {
			t.Fatal(err)
		}
	}
	want := "\nSummary: 1 packet, 1 ACCEPT; 0 source-NATed; 1 record lost\n" +
		"! 1 trace record lost: some paths may be incomplete\n" +
		"\nSummary: 2 packets, 2 ACCEPT; 0 source-NATed; 0 records lost\n" +
		"\nSummary: 3 packets, 3 ACCEPT; 3 source-NATed; 1 SYN retransmission; 0 records lost\n" +
		"\nSummary: 3 packets, 3 ACCEPT; 3 source-NATed; 2 SYN retransmissions; 0 records lost\n"
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestJSONIsOneObjectPerLine(t *testing.T) {
	var buf bytes.Buffer
	j := NewJSON(&buf)
	p := &record.Packet{Type: record.TypePacket, Proto: "tcp", Src: "10.0.0.1:1", Dst: "10.96.0.1:443", NAT: []record.NAT{},
		Hops:    []record.Hop{{Table: "nat", Chain: "KUBE-SERVICES", Kind: "rule", Rule: 1, Text: `-A X -m comment --comment "a <b>" -j Y`}},
		Verdict: record.VerdictAccept, VerdictHop: 0}
	if err := j.Packet(p); err != nil {
		t.Fatal(err)
	}
	if err := j.Lost(&record.Lost{Type: record.TypeLost, Count: 3}); err != nil {
		t.Fatal(err)
	}
	want := `{"type":"packet","family":"","proto":"tcp","src":"10.0.0.1:1","dst":"10.96.0.1:443","hops":[{"table":"nat","chain":"KUBE-SERVICES","kind":"rule","rule":1,"text":"-A X -m comment --comment \"a <b>\" -j Y"}],"nat":[],"verdict":"ACCEPT","verdict_hop":0}
{"type":"lost","count":3}
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestHeaderNodes: the header names the endpoint pod's node, and the node
// the packet was traced on only where that says more.
func TestHeaderNodes(t *testing.T) {
	for _, tt := range []struct {
		node, epNode string
		nodes        []string
		want         string
	}{
		{"n1", "n2", nil, "(pod default/p on n2, traced on n1): ACCEPT"},
		{"n1", "n1", nil, "(pod default/p on n1): ACCEPT"},
		{"n1", "n2", []string{"n1", "n2"}, "(pod default/p on n2, nodes n1 -> n2): ACCEPT"},
		{"n1", "", nil, "(pod default/p, traced on n1): ACCEPT"},
	} {
		var b bytes.Buffer
		p := &record.Packet{Type: record.TypePacket, Proto: "tcp", Src: "10.199.0.2:1", Dst: "10.96.0.10:80", Service: "default/s",
			Endpoint: "10.244.1.2:80", EndpointPod: "default/p", EndpointNode: tt.epNode, Node: tt.node, Nodes: tt.nodes, Verdict: record.VerdictAccept, VerdictHop: -1}
		if err := NewText(&b, TextOptions{}).Packet(p); err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(b.String(), "\n"); !strings.HasSuffix(first, tt.want) {
			t.Errorf("header %q, want it to end in %q", first, tt.want)
		}
	}
}
