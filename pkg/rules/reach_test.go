package rules

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNftTargets(t *testing.T) {
	line := `ip daddr . meta l4proto . th dport vmap { 10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https, 10.96.0.10 . udp . 53 : jump "service-X-kube-system/kube-dns/udp/dns" }`
	want := []string{"service-2QRHZV4L-default/kubernetes/tcp/https", "service-X-kube-system/kube-dns/udp/dns"}
	if diff := cmp.Diff(want, nftTargets(line)); diff != "" {
		t.Errorf("nftTargets (-want +got):\n%s", diff)
	}
}

// TestReach walks a small iptables ruleset the way the snapshot paths do:
// lines in any order, the traced destination's chains and what they jump
// to reachable, nothing else; a chain read after its caller was reached is
// followed too (the chain-by-chain fetch).
func TestReach(t *testing.T) {
	traced := Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}, NodePorts: []uint16{30080}, Proto: "udp"}
	r := NewReach(IptablesSyntax, traced)
	r.Line("KUBE-SVC-AAAAAAAAAAAAAAAA", "-A KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random --probability 0.5 -j KUBE-SEP-AAAAAAAAAAAAAAA1")
	r.Line("KUBE-SERVICES", "-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-AAAAAAAAAAAAAAAA")
	r.Line("KUBE-SERVICES", "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-BBBBBBBBBBBBBBBB")
	r.Line("KUBE-NODEPORTS", "-A KUBE-NODEPORTS -p tcp -m tcp --dport 30080 -j KUBE-EXT-CCCCCCCCCCCCCCCC")
	r.Line("KUBE-SVC-BBBBBBBBBBBBBBBB", "-A KUBE-SVC-BBBBBBBBBBBBBBBB -j KUBE-SEP-BBBBBBBBBBBBBBB1")
	if !r.Rooted() {
		t.Fatal("Rooted = false after rules into per-Service chains")
	}
	got := r.Next()
	slices.Sort(got)
	want := []string{"KUBE-EXT-CCCCCCCCCCCCCCCC", "KUBE-SEP-AAAAAAAAAAAAAAA1", "KUBE-SVC-AAAAAAAAAAAAAAAA"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Next (-want +got):\n%s", diff)
	}
	// KUBE-EXT-C's rules read now: its target is found by the next call.
	r.Line("KUBE-EXT-CCCCCCCCCCCCCCCC", "-A KUBE-EXT-CCCCCCCCCCCCCCCC -j KUBE-SVC-CCCCCCCCCCCCCCCC")
	if diff := cmp.Diff([]string{"KUBE-SVC-CCCCCCCCCCCCCCCC"}, r.Next()); diff != "" {
		t.Errorf("Next after reading a reached chain (-want +got):\n%s", diff)
	}
	if got := r.Next(); got != nil {
		t.Errorf("Next once everything was handed out = %v, want nothing", got)
	}
	for chain, keep := range map[string]bool{
		"KUBE-SERVICES": true, "PREROUTING": true, "KUBE-SVC-AAAAAAAAAAAAAAAA": true, "KUBE-SVC-CCCCCCCCCCCCCCCC": true,
		"KUBE-SVC-BBBBBBBBBBBBBBBB": false, "KUBE-SEP-BBBBBBBBBBBBBBB1": false,
	} {
		if got := r.Keep(chain); got != keep {
			t.Errorf("Keep(%s) = %v, want %v", chain, got, keep)
		}
	}

	t.Run("no rule leads in: everything kept", func(t *testing.T) {
		r := NewReach(IptablesSyntax, traced)
		r.Line("KUBE-SERVICES", "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-BBBBBBBBBBBBBBBB")
		r.Also("KUBE-SVC-DDDDDDDDDDDDDDDD")
		if r.Rooted() {
			t.Error("Rooted = true, want false: Also is no rule")
		}
		r.Next()
		if !r.Keep("KUBE-SVC-BBBBBBBBBBBBBBBB") {
			t.Error("Keep = false for an unreached chain while nothing was rooted")
		}
	})
}

func TestReachPerService(t *testing.T) {
	ipt, nft := NewReach(IptablesSyntax, Traced{}), NewReach(NftSyntax, Traced{})
	for _, c := range []struct {
		r     *Reach
		chain string
		want  bool
	}{
		{ipt, "KUBE-SVC-XJWXQFJLXSXKRMSG", true},
		{ipt, "KUBE-SEP-4VYPMJP5OIECG6XZ", true},
		{ipt, "KUBE-SERVICES", false},
		{ipt, "KUBE-MARK-MASQ", false},
		{nft, "service-6QYGQ5L4-default/myapp/tcp/", true},
		{nft, "endpoint-5OJB2KTY-default/myapp/tcp/__10.244.0.5/80", true},
		{nft, "services", false},
		{nft, "nat-prerouting", false},
	} {
		if got := c.r.PerService(c.chain); got != c.want {
			t.Errorf("PerService(%q) = %v, want %v", c.chain, got, c.want)
		}
	}
}
