package render

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const captures = "../../test/testdata/captures"

// renderCapture renders a capture as analyze does, in the given style.
func renderCapture(t *testing.T, traceFile, rulesFile string, o TextOptions) string {
	t.Helper()
	ix := rules.NewIndex()
	data, err := os.ReadFile(filepath.Join(captures, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Add(data); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(captures, traceFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	out := NewText(&buf, o)
	sum := explain.NewSummarizer("")
	sum.SetEndpoints("default/myapp", []string{"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"}, nil)
	if _, err := trace.ReadAll(f, trace.FormatAuto, trace.GroupOptions{
		Ordered: true,
		Emit: func(p *trace.Packet) {
			rec := explain.Annotate(p, ix)
			sum.Add(&rec)
			if err := out.Packet(&rec); err != nil {
				t.Fatal(err)
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	s := sum.Summary()
	if err := out.Summary(&s); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestTextGolden(t *testing.T) {
	cases := []struct {
		name, trace, rules string
		o                  TextOptions
	}{
		{"node-to-svc.legacy.txt", "node-to-svc.legacy.kmsg.txt", "node-to-svc.legacy.rules.txt", TextOptions{}},
		{"pod-to-svc.legacy.wide.txt", "pod-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.rules.txt", TextOptions{Wide: true, NoRuleText: true}},
		{"node-to-svc.nft.color.txt", "node-to-svc.nft.xtmon.txt", "node-to-svc.nft.rules.txt", TextOptions{Color: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := renderCapture(t, c.trace, c.rules, c.o)
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
