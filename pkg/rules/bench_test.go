package rules

import (
	"runtime"
	"sync"
	"testing"
)

// gen10k is the 10,000-Service, 3-endpoint ruleset, built once.
var gen10k = sync.OnceValues(func() ([]byte, []genService) { return genKubeProxySave(10000, 3) })

// TestIndexMemory10k bounds what indexing the 10k-Service ruleset keeps on
// the heap: under 3x the input (the input is copied once, so the index
// proper must stay under 2x).
func TestIndexMemory10k(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100k-rule ruleset")
	}
	data, svcs := gen10k()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ix := NewIndex()
	if err := ix.AddIptablesSave(data, 0); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// 11 nat rules per Service (KUBE-SERVICES, 4 in KUBE-SVC, 2 per KUBE-SEP)
	// plus 8 fixed nat rules and 15 filter rules.
	if got, want := ix.Len(), 11*len(svcs)+8+15; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	t.Logf("input %.1f MB, %d rules, heap growth %.1f MB (%.2fx input)",
		float64(len(data))/1e6, ix.Len(), float64(growth)/1e6, float64(growth)/float64(len(data)))
	if limit := 3 * int64(len(data)); growth > limit {
		t.Errorf("indexing %d bytes grew the heap by %d bytes, over 3x (%d)", len(data), growth, limit)
	}
	// A lookup still works after GC (the index is alive and complete).
	last := svcs[len(svcs)-1].port
	sep := EndpointChainName(ServicePortName(last.Namespace, last.Name, last.Port), "tcp", last.Endpoints[2])
	if got := ix.Chain(4, "nat", sep); got.Endpoint != last.Endpoints[2] || got.Service != "default/s09999:http" {
		t.Errorf("Chain(%s) = %+v", sep, got)
	}
	runtime.KeepAlive(ix)
	runtime.KeepAlive(data)
}

func BenchmarkIndexIptablesSave10k(b *testing.B) {
	data, _ := gen10k()
	benchAdd(b, data, func(ix *Index) error { return ix.AddIptablesSave(data, 0) })
}

func BenchmarkIndex5000ServicesDump(b *testing.B) {
	data := load(b, dump5000)
	benchAdd(b, data, func(ix *Index) error { return ix.AddIptablesSave(data, 0) })
}

func BenchmarkIndexNftModeRuleset(b *testing.B) {
	data := load(b, nftModeRuleset)
	benchAdd(b, data, func(ix *Index) error { return ix.AddNftRuleset(data) })
}

func benchAdd(b *testing.B, data []byte, add func(*Index) error) {
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := add(NewIndex()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRuleByHandle is the live agent's lookup per nft trace event: an
// nft handle to the iptables-save rule.
func BenchmarkRuleByHandle(b *testing.B) {
	ix := indexOf(b, nftNode, nftNodeListing)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ix.RuleByHandle(4, "nat", myappSVC, 58); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkChainNoComments is Chain on an endpoint chain whose comments
// kube-proxy dropped (large cluster mode): resolved through the service chain.
func BenchmarkChainNoComments(b *testing.B) {
	ix := indexOf(b, dump5000)
	b.ReportAllocs()
	for b.Loop() {
		if ix.Chain(4, "nat", "KUBE-SEP-NQYUUGVEOMHJMQER").Service == "" {
			b.Fatal("no service")
		}
	}
}
