package explain

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

func TestPendingEnding(t *testing.T) {
	policy := func(table, verdict string) *trace.Event {
		return &trace.Event{Table: table, Chain: "INPUT", Kind: trace.KindPolicy, Verdict: verdict}
	}
	tests := []struct {
		name         string
		nftablesMode bool
		ev           *trace.Event
		want         trace.Ending
	}{
		{"iptables mode: the Grouper infers", false, policy("filter", "ACCEPT"), trace.EndUnknown},
		{"nftables mode: filter INPUT's accept is not the end", true, policy("filter", "ACCEPT"), trace.EndNone},
		{"nftables mode: an accepting rule neither", true, &trace.Event{Table: "filter", Chain: "KUBE-ROUTER-INPUT", Kind: trace.KindRule, Verdict: "ACCEPT"}, trace.EndNone},
		{"nftables mode: a drop is", true, policy("filter", "DROP"), trace.EndUnknown},
		{"nftables mode: kube-proxy's own chains as the Grouper infers", true, policy("kube-proxy", "ACCEPT"), trace.EndUnknown},
	}
	for _, tt := range tests {
		if got := PendingEnding(tt.nftablesMode)(tt.ev); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestEndingByHandle: what the agent's netlink events (with rule handles)
// get from the iptables-nft ruleset. The masquerade ends the packet's nat
// traversal at POSTROUTING, the last table there, so the Grouper completes
// it at once instead of after the quiet window: nat's regular chains also
// run from its OUTPUT base chain, which filter OUTPUT follows, but
// KUBE-POSTROUTING only from POSTROUTING. A DNAT, run from nat OUTPUT too,
// ends only the nat chains of the hook.
func TestEndingByHandle(t *testing.T) {
	ix := rules.NewIndex()
	for _, name := range []string{"local-gw-to-nodeport.nft.rules.txt", "local-gw-to-nodeport.nft.ruleset.txt"} {
		data, err := os.ReadFile(filepath.Join(captures, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := ix.Add(data); err != nil {
			t.Fatal(err)
		}
	}
	end := Ending(ix)
	for _, tt := range []struct {
		chain  string
		handle uint64
		want   trace.Ending
	}{
		{"KUBE-POSTROUTING", 199, trace.EndTable},        // masquerade
		{"KUBE-POSTROUTING", 198, trace.EndNone},         // mark
		{"KUBE-SEP-DJCFJEHZN55DUUWE", 212, trace.EndNAT}, // dnat: filter OUTPUT may follow
	} {
		ev := &trace.Event{Header: trace.Header{Family: 4}, Table: "nat", Chain: tt.chain, Kind: trace.KindRule, Handle: tt.handle, Verdict: "ACCEPT"}
		if got := end(ev); got != tt.want {
			t.Errorf("nat %s handle %d: got %v, want %v", tt.chain, tt.handle, got, tt.want)
		}
	}
}

// TestHookTablesCompleteNftablesMode: kube-proxy's nftables table and
// iptables-nft's nat table both hang nat chains off POSTROUTING at priority
// srcnat, so neither accept ends the packet by itself; once kube-proxy's
// masquerade translated it, nf_nat skips the other nat chain, and with the
// ruleset's base chains known the packet is complete there, not after the
// quiet window (here: at the end of the input).
func TestHookTablesCompleteNftablesMode(t *testing.T) {
	ix := rules.NewIndex()
	data, err := os.ReadFile(filepath.Join(captures, "local-nftmode-node-to-clusterip.ruleset.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Add(data); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		hookTables func(uint8, string) []trace.HookChain
		want       trace.GroupStats
	}{
		{"base chains known", HookTables(ix), trace.GroupStats{Packets: 1, Complete: 1}},
		{"not known", nil, trace.GroupStats{Packets: 1, Flushed: 1}},
	} {
		f, err := os.Open(filepath.Join(captures, "local-nftmode-node-to-clusterip.nftmon.txt"))
		if err != nil {
			t.Fatal(err)
		}
		st, err := trace.ReadAll(f, trace.FormatAuto, trace.GroupOptions{Ending: Ending(ix), HookTables: tt.hookTables})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st.Packets != tt.want.Packets || st.Complete != tt.want.Complete || st.Flushed != tt.want.Flushed || st.Quiet != 0 {
			t.Errorf("%s: %+v, want %d packet(s), %d complete, %d flushed", tt.name, st, tt.want.Packets, tt.want.Complete, tt.want.Flushed)
		}
	}
}
