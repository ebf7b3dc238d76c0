package render

import (
	"io"
	"testing"
)

// BenchmarkJSONPacket: one iteration encodes one annotated packet of the
// pod-to-svc capture as its NDJSON line.
func BenchmarkJSONPacket(b *testing.B) {
	ps := packets(b, textCase{trace: "pod-to-svc.legacy.kmsg.txt", rules: "pod-to-svc.legacy.rules.txt"})
	j := NewJSON(io.Discard)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := j.Packet(&ps[i%len(ps)]); err != nil {
			b.Fatal(err)
		}
	}
}
