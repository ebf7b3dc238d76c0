package rules

import (
	"strings"
	"testing"
)

func FuzzAddIptablesSave(f *testing.F) {
	for _, p := range []string{legacyNode, legacyPod, nftNode, web6Legacy} {
		f.Add(load(f, p))
	}
	f.Add([]byte("*filter\n-A C -m comment --comment \"a \\\" b\" -j X\n-A D -g C\nCOMMIT\n"))
	f.Add([]byte("*nat\n-A KUBE-SEP-X -j DNAT --to-destination\n-A KUBE-SVC-X -m statistic --probability x -j KUBE-SEP-X\nCOMMIT\n"))
	f.Add([]byte("*filter\n-A INPUT -m comment --comment \"\\"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := NewIndex()
		if err := ix.AddIptablesSave(data, 0); err != nil {
			return
		}
		checkIndex(t, ix, string(data))
	})
}

func FuzzAddNftRuleset(f *testing.F) {
	for _, p := range []string{nftNodeListing, web6NftListing} {
		f.Add(load(f, p))
	}
	// Pieces of the nftables-mode capture (whole, it is too big to mutate
	// quickly): sets whose elements span lines, maps, base chains, the
	// first Service chains.
	lines := strings.SplitAfter(string(load(f, nftModeRuleset)), "\n")
	f.Add([]byte(strings.Join(lines[:15], "") + "\t\t\t     10.96.1.17 }\n\t}\n" +
		strings.Join(lines[919:925], "") + "\t\t\t     10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https }\n\t}\n" +
		strings.Join(lines[2687:2789], "") + "}\n"))
	f.Add([]byte("table ip t {\n\tchain c {\n\t\tip daddr { 1.1.1.1,\n\t\t2.2.2.2 } dnat to 3.3.3.3 comment \"x\" # handle 4\n\t}\n}\n"))
	f.Add([]byte("table inet t {\n\tchain c {\n\t\tdnat ip addr . port to ip daddr map { 1.1.1.1 : 2.2.2.2 . 80 } # handle 5\n\t\tmeta random & 0 < 5 goto # handle 2\n\t}\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := NewIndex()
		if err := ix.AddNftRuleset(data); err != nil {
			return
		}
		checkIndex(t, ix, string(data))
	})
}

// checkIndex checks what must hold for any input Add accepted: every
// indexed rule is found at its position (and by its handle), its text comes
// from the input, and Chain/Policy answer without panicking.
func checkIndex(t *testing.T, ix *Index, input string) {
	t.Helper()
	n := 0
	for key, tv := range ix.tables {
		for _, s := range []*snapshot{tv.ipt, tv.nft} {
			if s == nil {
				continue
			}
			for _, cd := range s.chains {
				ix.Chain(key.family, key.name, cd.name)
				ix.Policy(key.family, key.name, cd.name)
				for pos := 1; pos <= int(cd.n); pos++ {
					n++
					r := &s.rules[int(cd.start)+pos-1]
					if r.Pos != pos {
						t.Fatalf("%v %s: rule at position %d has Pos %d", key, cd.name, pos, r.Pos)
					}
					if !strings.Contains(input, r.Text) {
						t.Fatalf("%v %s rule %d: text %q is not from the input", key, cd.name, pos, r.Text)
					}
					if s == tv.nft {
						got, ok := ix.RuleByHandle(key.family, key.name, cd.name, r.Handle)
						if !ok || got.Handle != r.Handle {
							t.Fatalf("%v %s: RuleByHandle(%d) = %+v, %v", key, cd.name, r.Handle, got, ok)
						}
					}
					ix.RuleService(key.family, key.name, r)
				}
			}
		}
	}
	if n != ix.Len() {
		t.Fatalf("walked %d rules, Len() = %d", n, ix.Len())
	}
}
