//go:build linux

package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRuleSpecs(t *testing.T) {
	const c = "svctrace:x"
	tests := []struct {
		name  string
		cfg   Config
		fam   uint8
		chain string // "" is OUTPUT
		want  [][]string
	}{
		{
			name: "tcp default: SYN only, rate limited",
			cfg:  Config{Proto: "tcp", Rate: defaultRate, Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddrPort("[fd00::a]:80")}},
			fam:  4,
			want: [][]string{{"-d", "10.96.0.10/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN", "-m", "limit", "--limit", "20/second", "--limit-burst", "20", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
		{
			name: "ipv6 all packets unlimited with source",
			cfg:  Config{Proto: "tcp", AllPackets: true, Src: netip.MustParsePrefix("fd00:1::5/64"), Dsts: []netip.AddrPort{netip.MustParseAddrPort("[fd00::a]:443")}},
			fam:  6,
			want: [][]string{{"-s", "fd00:1::/64", "-d", "fd00::a/128", "-p", "tcp", "-m", "tcp", "--dport", "443", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
		{
			name: "udp nodeport: no flag match, local destinations",
			cfg:  Config{Proto: "udp", Rate: Rate{5, "minute"}, NodePorts: []uint16{30053}},
			fam:  4,
			want: [][]string{{"-p", "udp", "-m", "udp", "--dport", "30053", "-m", "addrtype", "--dst-type", "LOCAL", "-m", "limit", "--limit", "5/minute", "--limit-burst", "5", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
		{
			name: "sctp: INIT chunks",
			cfg:  Config{Proto: "sctp", Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.11:3868")}},
			fam:  4,
			want: [][]string{{"-d", "10.96.0.11/32", "-p", "sctp", "-m", "sctp", "--dport", "3868", "--chunk-types", "any", "INIT", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
		{
			name:  "PREROUTING: this node's endpoints too, rate-limited, connection-opening only",
			cfg:   Config{Proto: "tcp", Rate: defaultRate, Src: netip.MustParsePrefix("10.244.0.9/32"), Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:80")}, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.244.1.5:8080"), netip.MustParseAddrPort("[fd00::5]:8080")}},
			fam:   4,
			chain: "PREROUTING",
			want: [][]string{
				{"-s", "10.244.0.9/32", "-d", "10.96.0.10/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN", "-m", "limit", "--limit", "20/second", "--limit-burst", "20", "-m", "comment", "--comment", c, "-j", "TRACE"},
				{"-s", "10.244.0.9/32", "-d", "10.244.1.5/32", "-p", "tcp", "-m", "tcp", "--dport", "8080", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN", "-m", "limit", "--limit", "20/second", "--limit-burst", "20", "-m", "comment", "--comment", c, "-j", "TRACE"},
			},
		},
		{
			name: "OUTPUT: no endpoint rules (the node's own packets to a Service are caught by the Service rules)",
			cfg:  Config{Proto: "udp", Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")}, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.244.1.5:53")}},
			fam:  4,
			want: [][]string{{"-d", "10.96.0.10/32", "-p", "udp", "-m", "udp", "--dport", "53", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
		{
			name: "source of the other family is not applied",
			cfg:  Config{Proto: "tcp", AllPackets: true, Src: netip.MustParsePrefix("10.0.0.0/8"), Dsts: []netip.AddrPort{netip.MustParseAddrPort("[fd00::a]:80")}},
			fam:  6,
			want: [][]string{{"-d", "fd00::a/128", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", c, "-j", "TRACE"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain := tt.chain
			if chain == "" {
				chain = "OUTPUT"
			}
			got := ruleSpecs(&tt.cfg, tt.fam, chain, c)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ruleSpecs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitRuleArgs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`-A OUTPUT -d 10.1.2.3/32 -p tcp -m comment --comment "svctrace:x" -j TRACE`, []string{"-A", "OUTPUT", "-d", "10.1.2.3/32", "-p", "tcp", "-m", "comment", "--comment", "svctrace:x", "-j", "TRACE"}},
		{`-A X -m comment --comment "default/myapp -> 10.244.0.23:80" -j KUBE-SEP-A`, []string{"-A", "X", "-m", "comment", "--comment", "default/myapp -> 10.244.0.23:80", "-j", "KUBE-SEP-A"}},
		{`-A X -m comment --comment "a \"quoted\" word" -j ACCEPT`, []string{"-A", "X", "-m", "comment", "--comment", `a "quoted" word`, "-j", "ACCEPT"}},
		{`-A X -m comment --comment "" -j ACCEPT`, []string{"-A", "X", "-m", "comment", "--comment", "", "-j", "ACCEPT"}},
		{"", nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, splitRuleArgs(tt.in)); diff != "" {
			t.Errorf("splitRuleArgs(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestLineCounter(t *testing.T) {
	tests := []struct {
		line string
		want uint64
		ok   bool
	}{
		{`-A OUTPUT -d 10.1.2.3/32 -p tcp -m comment --comment "svctrace:x" -c 42 2520 -j TRACE`, 42, true},
		{`-P OUTPUT ACCEPT -c 0 0`, 0, true},
		{`-A OUTPUT -j TRACE`, 0, false},
	}
	for _, tt := range tests {
		got, ok := lineCounter(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("lineCounter(%q) = %d, %v; want %d, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSameRule(t *testing.T) {
	r := &traceRule{Chain: "OUTPUT", Spec: []string{"-d", "10.1.2.3/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-m", "comment", "--comment", "svctrace:x", "-j", "TRACE"}}
	tests := []struct {
		line string
		want bool
	}{
		{`-A OUTPUT -d 10.1.2.3/32 -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment "svctrace:x" -j TRACE`, true},
		{`-A OUTPUT -d 10.1.2.3/32 -p tcp -m tcp --dport 81 -m comment --comment "svctrace:x" -j TRACE`, false},
		{`-A PREROUTING -d 10.1.2.3/32 -p tcp -m tcp --dport 80 -m comment --comment "svctrace:x" -j TRACE`, false},
		{`-A OUTPUT -d 10.1.2.4/32 -p tcp -m tcp --dport 80 -m comment --comment "svctrace:x" -j TRACE`, false},
	}
	for _, tt := range tests {
		if got := sameRule(tt.line, r); got != tt.want {
			t.Errorf("sameRule(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
