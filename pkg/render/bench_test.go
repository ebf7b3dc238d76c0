package render

import (
	"encoding/json"
	"io"
	"testing"
)

// BenchmarkJSONPacket: one iteration encodes one annotated packet of the
// pod-to-svc capture as its NDJSON line; encoding/json, which the record
// contract follows, alongside.
func BenchmarkJSONPacket(b *testing.B) {
	ps := packets(b, textCase{trace: "pod-to-svc.legacy.kmsg.txt", rules: "pod-to-svc.legacy.rules.txt"})
	b.Run("render", func(b *testing.B) {
		j := NewJSON(io.Discard)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := j.Packet(&ps[i%len(ps)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		enc := json.NewEncoder(io.Discard)
		enc.SetEscapeHTML(false)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if err := enc.Encode(&ps[i%len(ps)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
