package explain

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
	"github.com/svctrace/kubectl-svctrace/pkg/trace/tracetest"
)

// capturePackets groups a capture into packets (copies: the Grouper reuses
// its own) and indexes its ruleset.
func capturePackets(b testing.TB, traceFile, rulesFile string) ([]*trace.Packet, *rules.Index) {
	b.Helper()
	ix := rules.NewIndex()
	data, err := os.ReadFile(filepath.Join(captures, rulesFile))
	if err != nil {
		b.Fatal(err)
	}
	if err := ix.Add(data); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(filepath.Join(captures, traceFile))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var ps []*trace.Packet
	if _, err := trace.ReadAll(f, trace.FormatAuto, trace.GroupOptions{
		Ordered: true, Ending: Ending(ix), HookTables: HookTables(ix),
		Emit: func(p *trace.Packet) { ps = append(ps, p.Clone()) },
	}); err != nil {
		b.Fatal(err)
	}
	return ps, ix
}

// BenchmarkAnnotate: one iteration annotates one packet of the pod-to-svc
// capture (a 21-hop SYN, then 6-hop ACKs), with its ruleset, as analyze
// does.
func BenchmarkAnnotate(b *testing.B) {
	ps, ix := capturePackets(b, "pod-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.rules.txt")
	for _, p := range ps {
		Annotate(p, ix) // the index's per-chain facts are computed once
	}
	hops := 0
	tracetest.TimeOnThread(b, func(i int) {
		rec := Annotate(ps[i%len(ps)], ix)
		hops += len(rec.Hops)
	})
	b.ReportMetric(float64(hops)/float64(b.N), "hops/op")
}

// BenchmarkAnnotateBatch is BenchmarkAnnotate as Parallel annotates: into
// a batch's records and memory, reused every BatchSize packets.
func BenchmarkAnnotateBatch(b *testing.B) {
	ps, ix := capturePackets(b, "pod-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.rules.txt")
	recs := make([]record.Packet, BatchSize)
	mem := newRecordMem()
	for i, p := range ps {
		annotate(&recs[i%BatchSize], p, ix, nil, mem)
	}
	hops := 0
	tracetest.TimeOnThread(b, func(i int) {
		k := i % BatchSize
		if k == 0 {
			clear(recs)
			mem.reset()
		}
		annotate(&recs[k], ps[i%len(ps)], ix, nil, mem)
		hops += len(recs[k].Hops)
	})
	b.ReportMetric(float64(hops)/float64(b.N), "hops/op")
}
