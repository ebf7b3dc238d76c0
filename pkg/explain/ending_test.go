package explain

import (
	"testing"

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
