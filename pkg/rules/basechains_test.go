package rules

import "testing"

func TestLaterBaseChain(t *testing.T) {
	// iptables-nft's filter and nat tables next to kube-proxy's nftables-mode
	// table, as the agent lists them (priorities named and numeric).
	const listing = `table ip filter {
	chain INPUT {
		type filter hook input priority filter; policy accept;
		jump KUBE-ROUTER-INPUT
	}
	chain KUBE-ROUTER-INPUT {
		accept
	}
	chain OUTPUT {
		type filter hook output priority filter; policy accept;
	}
}
table ip nat {
	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		jump KUBE-SERVICES
	}
	chain OUTPUT {
		type nat hook output priority -100; policy accept;
		jump KUBE-SERVICES
	}
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		jump KUBE-POSTROUTING
	}
	chain KUBE-SERVICES {
		jump KUBE-SVC-X
	}
	chain KUBE-SVC-X {
		goto KUBE-SEP-Y
	}
	chain KUBE-SEP-Y {
		dnat to 10.244.1.2:80
	}
	chain KUBE-POSTROUTING {
		masquerade fully-random
	}
}
table ip raw {
	chain PREROUTING {
		type filter hook prerouting priority raw; policy accept;
	}
}
table ip kube-proxy {
	chain filter-input {
		type filter hook input priority filter; policy accept;
		ct state new jump nodeport-endpoints-check
	}
	chain filter-prerouting-pre-dnat {
		type filter hook prerouting priority dstnat - 10; policy accept;
	}
	chain nodeport-endpoints-check {
	}
}
table ip6 other {
	chain input {
		type filter hook input priority 10; policy accept;
	}
}
`
	ix := NewIndex()
	if err := ix.AddNftRuleset([]byte(listing)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		table, chain string
		want         bool
	}{
		{"filter", "INPUT", true},             // kube-proxy's filter-input, same priority
		{"filter", "KUBE-ROUTER-INPUT", true}, // a regular chain of the filter table
		{"kube-proxy", "filter-input", true},  // and the other way round
		{"raw", "PREROUTING", true},           // -300: kube-proxy's -110 and nat's -100 follow
		{"nat", "PREROUTING", false},          // -100: kube-proxy's prerouting chain runs before (-110)
		{"nat", "POSTROUTING", false},         // nothing after srcnat
		{"nat", "KUBE-POSTROUTING", false},    // entered from POSTROUTING only (its OUTPUT is followed by filter's)
		{"nat", "KUBE-SEP-Y", true},           // entered from OUTPUT too (jump, jump, goto), which filter OUTPUT follows
		{"kube-proxy", "nodeport-endpoints-check", true},
		{"nat", "KUBE-MISSING", true}, // not listed: any nat base chain; filter OUTPUT follows nat OUTPUT
		{"mangle", "INPUT", false},    // no such table
	} {
		if got := ix.LaterBaseChain(FamilyIPv4, tt.table, tt.chain); got != tt.want {
			t.Errorf("LaterBaseChain(%s, %s) = %v, want %v", tt.table, tt.chain, got, tt.want)
		}
	}
}
