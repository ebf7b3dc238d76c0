package explain

import (
	"errors"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// TestParallelKeepsOrder: the records come back in the order the packets
// went in, equal to annotating them one by one, for any batch size; the
// caller may reuse a packet once Add returns, and the records' memory is
// reused once deliver returns.
func TestParallelKeepsOrder(t *testing.T) {
	ps, ix := capturePackets(t, "pod-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.rules.txt")
	var want []record.Packet
	var in []*trace.Packet
	for c := 0; c < 300; c++ {
		for _, p := range ps {
			q := p.Clone()
			q.First.SPort = uint16(1000 + c) // tells the copies apart
			in = append(in, q)
			want = append(want, Annotate(q, ix))
		}
	}
	for _, size := range []int{1, 7, BatchSize} {
		var got []record.Packet
		var encoded int
		par := NewParallel(ix, size, func(dst []byte, rec *record.Packet) []byte { return append(dst, rec.Src...) },
			func(recs []record.Packet, out []byte) error {
				for _, r := range recs { // copies: their memory is reused
					r.Hops, r.NAT = slices.Clone(r.Hops), slices.Clone(r.NAT)
					ex := *r.Explain
					r.Explain = &ex
					got = append(got, r)
				}
				encoded += len(out)
				return nil
			})
		reused := &trace.Packet{}
		for _, p := range in {
			*reused = *p
			reused.Hops = append(reused.Hops[:0:0], p.Hops...)
			par.Add(reused)
			clear(reused.Hops) // as the Grouper reuses its packets
		}
		if err := par.Close(); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("batch size %d: records differ from one-by-one annotation (-want +got):\n%s", size, diff)
		}
		if wantLen := len(want) * len("10.244.0.26:1000"); encoded != wantLen {
			t.Errorf("batch size %d: encoded %d bytes, want %d", size, encoded, wantLen)
		}
	}
}

func TestParallelStopsOnError(t *testing.T) {
	ps, ix := capturePackets(t, "pod-to-svc.legacy.kmsg.txt", "pod-to-svc.legacy.rules.txt")
	boom := errors.New("disk full")
	calls := 0
	par := NewParallel(ix, 2, nil, func([]record.Packet, []byte) error { calls++; return boom })
	for c := 0; c < 100; c++ {
		for _, p := range ps {
			par.Add(p)
		}
	}
	if err := par.Close(); !errors.Is(err, boom) || calls != 1 {
		t.Errorf("Close = %v after %d deliveries, want %v after 1", err, calls, boom)
	}
}
