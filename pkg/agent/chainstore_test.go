//go:build linux

package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

func chainOf(name, rule string, handle string) *chainText {
	return &chainText{
		name: name, policy: "-",
		lines: []string{"-A " + name + " " + rule},
		block: []byte("\tchain " + name + " { # handle 9\n\t\tcounter accept # handle " + handle + "\n\t}\n"),
	}
}

// A chain deleted from the ruleset (kube-router renamed it at its next
// sync) stays in the index built from the store, with its handle; a newer
// read of a chain replaces the older; the store is bounded.
func TestChainStoreCompose(t *testing.T) {
	var cs chainStore
	old := chainOf("KUBE-POD-FW-OLD", "-j ACCEPT", "41")
	cs.keep(4, "filter", old)
	cs.keep(4, "filter", chainOf("KUBE-ROUTER-FORWARD", "-j DROP", "42"))
	cur := chainOf("KUBE-ROUTER-FORWARD", "-j ACCEPT", "43")
	cs.keep(4, "filter", cur)
	save, nft := cs.compose(4, []fetchedTable{{table: "filter", chains: []*chainText{cur}}})
	ix := rules.NewIndex()
	if err := ix.AddIptablesSave(save, 4); err != nil {
		t.Fatalf("%v\n%s", err, save)
	}
	if err := ix.AddNftRuleset(nft); err != nil {
		t.Fatalf("%v\n%s", err, nft)
	}
	for _, c := range []struct {
		chain  string
		handle uint64
		text   string
		known  bool
	}{
		{"KUBE-POD-FW-OLD", 41, "-A KUBE-POD-FW-OLD -j ACCEPT", true},
		{"KUBE-ROUTER-FORWARD", 43, "-A KUBE-ROUTER-FORWARD -j ACCEPT", true},
		{"KUBE-ROUTER-FORWARD", 42, "", false}, // replaced by the newer read
	} {
		f, ok := ix.Hop(4, "filter", c.chain, 0, c.handle)
		if ok != c.known {
			t.Errorf("%s handle %d: known %v, want %v", c.chain, c.handle, ok, c.known)
			continue
		}
		if ok && f.Rule.Text != c.text {
			t.Errorf("%s handle %d: text %q, want %q", c.chain, c.handle, f.Rule.Text, c.text)
		}
	}
	if n := strings.Count(string(save), ":KUBE-ROUTER-FORWARD "); n != 1 {
		t.Errorf("KUBE-ROUTER-FORWARD declared %d times:\n%s", n, save)
	}

	for i := range maxStoredChains + 10 {
		cs.keep(4, "nat", &chainText{name: fmt.Sprintf("C%d", i)})
	}
	if st := cs.tables[storeKey{4, "nat"}]; len(st.order) != maxStoredChains || len(st.byName) != maxStoredChains {
		t.Errorf("store holds %d/%d chains, want at most %d", len(st.order), len(st.byName), maxStoredChains)
	}
}

// The writer builds the index again only when a chain was read since the
// last build: a packet through a chain that cannot be read (gone, or one
// iptables-nft cannot print) must not cost a build per packet.
func TestRebuildOnlyAfterNewChains(t *testing.T) {
	s := snapshotter{cfg: &Config{}}
	if ix, err := s.rebuild(); ix != nil || err != nil {
		t.Fatalf("rebuild with nothing read = %v, %v; want nil, nil", ix, err)
	}
	s.chains.keep(4, "filter", chainOf("KUBE-POD-FW-NEW", "-j ACCEPT", "7"))
	if ix, err := s.rebuild(); ix == nil || err != nil {
		t.Fatalf("rebuild after a chain was read = %v, %v; want an index", ix, err)
	}
	if ix, err := s.rebuild(); ix != nil || err != nil {
		t.Fatalf("second rebuild = %v, %v; want nil, nil", ix, err)
	}
}
