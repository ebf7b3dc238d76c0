//go:build linux

package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

func TestPickMasqueradeSource(t *testing.T) {
	pfx := netip.MustParsePrefix
	v4 := []kernel.Addr{
		{Prefix: pfx("10.0.0.1/24")},
		{Prefix: pfx("10.0.0.50/24"), Flags: unix.IFA_F_SECONDARY},
		{Prefix: pfx("192.168.5.1/24")},
		{Prefix: pfx("127.0.0.5/8"), Scope: unix.RT_SCOPE_HOST},
	}
	v6 := []kernel.Addr{
		{Prefix: pfx("fe80::1/64"), Scope: unix.RT_SCOPE_LINK},
		{Prefix: pfx("fd00:1::5/64"), Flags: unix.IFA_F_TENTATIVE},
		{Prefix: pfx("fd00:2::5/64")},
	}
	tests := []struct {
		name   string
		addrs  []kernel.Addr
		fam    uint8
		nh     string
		want   string
		wantOK bool
	}{
		{name: "next hop in the first primary subnet", addrs: v4, fam: 4, nh: "10.0.0.9", want: "10.0.0.1", wantOK: true},
		{name: "next hop in the second primary subnet", addrs: v4, fam: 4, nh: "192.168.5.20", want: "192.168.5.1", wantOK: true},
		{name: "next hop elsewhere: first primary", addrs: v4, fam: 4, nh: "172.16.0.1", want: "10.0.0.1", wantOK: true},
		{name: "secondary addresses are never chosen", addrs: v4[1:2], fam: 4, nh: "10.0.0.9", wantOK: false},
		{name: "IPv6: global, usable", addrs: v6, fam: 6, nh: "fd00:1::9", want: "fd00:2::5", wantOK: true},
		{name: "no address", fam: 4, nh: "10.0.0.9", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := pickMasqueradeSource(tt.addrs, tt.fam, netip.MustParseAddr(tt.nh))
			if ok != tt.wantOK || (ok && got.String() != tt.want) {
				t.Errorf("pickMasqueradeSource = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRoutingQuery(t *testing.T) {
	a := netip.MustParseAddr
	hop := func(src, dst, in string, mark uint32) trace.Hop {
		return trace.Hop{Table: "nat", Chain: "PREROUTING", Header: trace.Header{Family: 4, Src: a(src), Dst: a(dst), In: in, Mark: mark}}
	}
	tests := []struct {
		name   string
		rec    record.Packet
		p      trace.Packet
		want   kernel.RouteQuery
		wantOK bool
	}{
		{
			name:   "no DNAT: the packet as last seen (seed 001)",
			p:      trace.Packet{Hops: []trace.Hop{hop("192.168.235.13", "10.0.1.12", "enp5s0", 0)}},
			want:   kernel.RouteQuery{Src: a("192.168.235.13"), Dst: a("10.0.1.12"), IIf: "enp5s0"},
			wantOK: true,
		},
		{
			name: "DNAT in PREROUTING: routed to the endpoint",
			rec:  record.Packet{NAT: []record.NAT{{Kind: record.NATDNAT, To: "10.244.0.7:80"}, {Kind: record.NATMasquerade}}},
			p: trace.Packet{Hops: []trace.Hop{
				hop("10.199.0.1", "10.199.0.2", "eth0", 0),
				hop("10.199.0.1", "10.199.0.2", "eth0", 0x4000),
			}},
			want:   kernel.RouteQuery{Src: a("10.199.0.1"), Dst: a("10.244.0.7"), IIf: "eth0", Mark: 0x4000},
			wantOK: true,
		},
		{
			name:   "no input interface: no input route to ask for",
			p:      trace.Packet{Hops: []trace.Hop{hop("10.0.0.1", "10.0.0.2", "", 0)}},
			wantOK: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := routingQuery(&tt.rec, &tt.p)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); ok && diff != "" {
				t.Errorf("query (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadRPFilter(t *testing.T) {
	root := t.TempDir()
	write := func(dev, v string) {
		dir := filepath.Join(root, "sys/net/ipv4/conf", dev)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "rp_filter"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("all", "1")
	write("eth0", "2")
	tests := []struct {
		dev  string
		want map[string]int
	}{
		{dev: "eth0", want: map[string]int{"all": 1, "eth0": 2}},
		{dev: "gone0", want: map[string]int{"all": 1}},
		{dev: "../../../../etc", want: map[string]int{"all": 1}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, readRPFilter(root, tt.dev)); diff != "" {
			t.Errorf("readRPFilter(%q) (-want +got):\n%s", tt.dev, diff)
		}
	}
	if got := readRPFilter(t.TempDir(), "eth0"); got != nil {
		t.Errorf("readRPFilter without /proc/sys = %v, want nil", got)
	}
}

func TestTTLCache(t *testing.T) {
	var c ttlCache[string, int]
	t0 := time.Unix(1000, 0)
	if _, ok := c.get("a", t0); ok {
		t.Fatal("empty cache has a value")
	}
	c.put("a", 1, t0)
	if v, ok := c.get("a", t0.Add(liveCacheTTL/2)); !ok || v != 1 {
		t.Errorf("get within the TTL = %d, %v; want 1, true", v, ok)
	}
	if _, ok := c.get("a", t0.Add(2*liveCacheTTL)); ok {
		t.Error("get after the TTL found the value")
	}
	for i := range ttlCacheMax + 1 {
		c.put(string(rune('b'+i)), i, t0)
	}
	if len(c.m) > ttlCacheMax {
		t.Errorf("cache holds %d entries, want at most %d", len(c.m), ttlCacheMax)
	}
}

// TestSnapshotEnding checks the Grouper's Ending follows the latest
// snapshot: none yet means the Grouper's own inference, and a re-read
// ruleset replaces what the old one said.
func TestSnapshotEnding(t *testing.T) {
	index := func(forwardPolicy string) *rules.Index {
		ix := rules.NewIndex()
		save := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD " + forwardPolicy + " [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" +
			"*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-POSTROUTING - [0:0]\n" +
			"-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-POSTROUTING -j MASQUERADE\nCOMMIT\n"
		if err := ix.AddIptablesSave([]byte(save), 4); err != nil {
			t.Fatal(err)
		}
		return ix
	}
	masq := &trace.Event{Table: "nat", Chain: "KUBE-POSTROUTING", Kind: trace.KindRule, Rule: 1, Header: trace.Header{Family: 4}}
	jump := &trace.Event{Table: "nat", Chain: "POSTROUTING", Kind: trace.KindRule, Rule: 1, Header: trace.Header{Family: 4}}
	fwdPolicy := &trace.Event{Table: "filter", Chain: "FORWARD", Kind: trace.KindPolicy, Rule: 1, Header: trace.Header{Family: 4}}

	var p atomic.Pointer[rules.Index]
	e := &snapshotEnding{ix: &p}
	steps := []struct {
		name string
		ix   *rules.Index
		ev   *trace.Event
		want trace.Ending
	}{
		{name: "no snapshot yet", ev: masq, want: trace.EndUnknown},
		{name: "MASQUERADE ends the nat table", ix: index("DROP"), ev: masq, want: trace.EndTable},
		{name: "a jump goes on", ev: jump, want: trace.EndNone},
		{name: "a DROP policy ends the packet", ev: fwdPolicy, want: trace.EndPacket},
		{name: "the re-read ruleset's ACCEPT policy only ends the table", ix: index("ACCEPT"), ev: fwdPolicy, want: trace.EndTable},
	}
	for _, s := range steps {
		if s.ix != nil {
			p.Store(s.ix)
		}
		if got := e.ending(s.ev); got != s.want {
			t.Errorf("%s: ending = %v, want %v", s.name, got, s.want)
		}
	}
}

// TestSnapshotHookTables: the Grouper learns a hook's base chains from the
// latest snapshot, and nothing while there is none or while the node has
// nft tables the snapshot does not read.
func TestSnapshotHookTables(t *testing.T) {
	ix := rules.NewIndex()
	const listing = `table ip nat {
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
	}
}
table ip kube-proxy {
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
	}
	chain filter-input {
		type filter hook input priority filter; policy accept;
	}
}
`
	if err := ix.AddNftRuleset([]byte(listing)); err != nil {
		t.Fatal(err)
	}
	var p atomic.Pointer[rules.Index]
	var foreign atomic.Bool
	e := &snapshotEnding{ix: &p, foreign: &foreign}
	if got := e.hookTables(4, "POSTROUTING"); got != nil {
		t.Errorf("no snapshot yet: %v, want nil", got)
	}
	p.Store(ix)
	want := []trace.HookChain{{Table: "kube-proxy", Nat: true}, {Table: "nat", Nat: true}}
	if diff := cmp.Diff(want, e.hookTables(4, "POSTROUTING")); diff != "" {
		t.Errorf("POSTROUTING (-want +got):\n%s", diff)
	}
	foreign.Store(true)
	if got := e.hookTables(4, "POSTROUTING"); got != nil {
		t.Errorf("with tables the snapshot does not read: %v, want nil", got)
	}
}
