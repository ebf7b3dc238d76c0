package rules

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	captures        = "../../test/testdata/captures/"
	legacyNode      = captures + "node-to-svc.legacy.rules.txt"
	legacyPod       = captures + "pod-to-svc.legacy.rules.txt"
	nftNode         = captures + "node-to-svc.nft.rules.txt"
	nftModeRuleset  = captures + "node-to-svc.nftmode.ruleset.txt"
	dump5000        = "../../test/testdata/kube-proxy-5000-services.nft.rules.txt.gz"
	nftNodeListing  = "testdata/node-to-svc.nft.nftlist.txt"
	web6Legacy      = "testdata/web6.legacy.rules.txt"
	web6NftSave     = "testdata/web6.nft.rules.txt"
	web6NftListing  = "testdata/web6.nft.nftlist.txt"
	myappSVC        = "KUBE-SVC-XJWXQFJLXSXKRMSG"
	myappSEP23      = "KUBE-SEP-TJXBIUI2E22QKLD4"
	nftModeMyappSvc = "service-6QYGQ5L4-default/myapp/tcp/"
)

// load reads a test input, gunzipping *.gz.
func load(tb testing.TB, path string) []byte {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read test input: %v", err)
	}
	if filepath.Ext(path) == ".gz" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			tb.Fatalf("gunzip %s: %v", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			tb.Fatalf("gunzip %s: %v", path, err)
		}
	}
	return b
}

func indexOf(tb testing.TB, paths ...string) *Index {
	tb.Helper()
	ix := NewIndex()
	for _, p := range paths {
		if err := ix.Add(load(tb, p)); err != nil {
			tb.Fatalf("Add(%s): %v", p, err)
		}
	}
	return ix
}

func TestRuleFromCaptures(t *testing.T) {
	tests := []struct {
		name   string
		inputs []string
		family uint8
		table  string
		chain  string
		pos    int
		want   *Rule
	}{
		{
			name: "legacy service chain picks endpoint .23", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: myappSVC, pos: 2,
			want: &Rule{
				Text:        `-A KUBE-SVC-XJWXQFJLXSXKRMSG -m comment --comment "default/myapp -> 10.244.0.23:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-TJXBIUI2E22QKLD4`,
				Target:      myappSEP23,
				Jump:        myappSEP23,
				Comment:     "default/myapp -> 10.244.0.23:80",
				Probability: 0.33333333349,
				Pos:         2,
			},
		},
		{
			name: "legacy endpoint DNAT", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: myappSEP23, pos: 2,
			want: &Rule{
				Text:          `-A KUBE-SEP-TJXBIUI2E22QKLD4 -p tcp -m comment --comment "default/myapp" -m tcp -j DNAT --to-destination 10.244.0.23:80`,
				Target:        "DNAT",
				Comment:       "default/myapp",
				ToDestination: "10.244.0.23:80",
				Pos:           2,
			},
		},
		{
			name: "legacy masquerade", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: "KUBE-POSTROUTING", pos: 3,
			want: &Rule{
				Text:    `-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
				Target:  "MASQUERADE",
				Comment: "kubernetes service traffic requiring SNAT",
				Pos:     3,
			},
		},
		{
			name: "pod capture raw TRACE rule with unquoted comment", inputs: []string{legacyPod},
			family: 4, table: "raw", chain: "PREROUTING", pos: 2,
			want: &Rule{
				Text:    `-A PREROUTING -d 10.96.173.227/32 -p tcp -m tcp --dport 80 -m comment --comment svctrace-test -j TRACE`,
				Target:  "TRACE",
				Comment: "svctrace-test",
				Pos:     2,
			},
		},
		{
			name: "pod capture no-endpoints REJECT", inputs: []string{legacyPod},
			family: 4, table: "filter", chain: "KUBE-SERVICES", pos: 1,
			want: &Rule{
				Text:    `-A KUBE-SERVICES -d 10.96.190.107/32 -p tcp -m comment --comment "default/noep:web has no endpoints" -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable`,
				Target:  "REJECT",
				Comment: "default/noep:web has no endpoints",
				Pos:     1,
			},
		},
		{
			name: "nft backend save, last rule of KUBE-SERVICES", inputs: []string{nftNode},
			family: 4, table: "nat", chain: "KUBE-SERVICES", pos: 4,
			want: &Rule{
				Text:    `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
				Target:  "KUBE-NODEPORTS",
				Jump:    "KUBE-NODEPORTS",
				Comment: "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
				Pos:     4,
			},
		},
		{
			name: "5000-service dump: rule without comments", inputs: []string{dump5000},
			family: 4, table: "nat", chain: "KUBE-SVC-22GGCTR5VPQZV5MU", pos: 3,
			want: &Rule{
				Text:        `-A KUBE-SVC-22GGCTR5VPQZV5MU -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-NG7LTMXKEF3OO5Y6`,
				Target:      "KUBE-SEP-NG7LTMXKEF3OO5Y6",
				Jump:        "KUBE-SEP-NG7LTMXKEF3OO5Y6",
				Probability: 0.5,
				Pos:         3,
			},
		},
		{
			name: "ip6tables-save DNAT to bracketed address", inputs: []string{web6Legacy},
			family: 6, table: "nat", chain: "KUBE-SEP-GZQ3OEKLKC4YPR5H", pos: 2,
			want: &Rule{
				Text:          `-A KUBE-SEP-GZQ3OEKLKC4YPR5H -p tcp -m comment --comment "default/web6:http" -m tcp -j DNAT --to-destination [fd00:10:244::17]:8080`,
				Target:        "DNAT",
				Comment:       "default/web6:http",
				ToDestination: "[fd00:10:244::17]:8080",
				Pos:           2,
			},
		},
		{
			name: "nftables mode service chain", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: nftModeMyappSvc, pos: 1,
			want: &Rule{
				Text:          "meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.244.0.23 . 80, 1 : 10.244.0.24 . 80, 2 : 10.244.0.25 . 80 }",
				Target:        "dnat",
				ToDestination: "numgen random mod 3 map { 0 : 10.244.0.23 . 80, 1 : 10.244.0.24 . 80, 2 : 10.244.0.25 . 80 }",
				Probability:   0.33333333333, // one endpoint in 3
				Handle:        1466,
				Pos:           1,
			},
		},
		{
			name: "nftables mode services dispatch", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "services", pos: 2,
			want: &Rule{Text: "ip daddr . meta l4proto . th dport vmap @service-ips", Target: "vmap", Handle: 52, Pos: 2},
		},
		{
			name: "nftables mode mark with comment continues", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "services", pos: 1,
			want: &Rule{
				Text:    `ip daddr @cluster-ips ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x00004000 comment "masquerade clusterIP traffic from outside cluster"`,
				Target:  "continue",
				Comment: "masquerade clusterIP traffic from outside cluster",
				Handle:  51,
				Pos:     1,
			},
		},
		{
			name: "nftables mode hairpin: ct status dnat is a match, not a NAT statement", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "masquerading", pos: 2,
			want: &Rule{
				Text:   "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random",
				Target: "masquerade",
				Handle: 36,
				Pos:    2,
			},
		},
		{
			name: "nftables mode external chain goes to the service chain", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "external-BDXHFROF-default/myapp-np/tcp/", pos: 2,
			want: &Rule{
				Text:   "goto service-BDXHFROF-default/myapp-np/tcp/",
				Target: "goto",
				Jump:   "service-BDXHFROF-default/myapp-np/tcp/",
				Goto:   true,
				Handle: 828,
				Pos:    2,
			},
		},
		{
			name: "nftables mode reject with comment", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "cluster-ips-check", pos: 1,
			want: &Rule{
				Text:    `ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`,
				Target:  "reject",
				Comment: "Reject traffic to invalid ports of ClusterIPs",
				Handle:  38,
				Pos:     1,
			},
		},
		{
			name: "iptables-nft rules as nft lists them", inputs: []string{nftNodeListing},
			family: 4, table: "nat", chain: myappSVC, pos: 2,
			want: &Rule{
				Text:        "meta random & 2147483647 < 715827883 counter packets 0 bytes 0 jump KUBE-SEP-TJXBIUI2E22QKLD4",
				Target:      "jump",
				Jump:        myappSEP23,
				Probability: 0.33333333349,
				Handle:      58,
				Pos:         2,
			},
		},
		{
			name: "iptables-nft DNAT as nft lists it", inputs: []string{nftNodeListing},
			family: 4, table: "nat", chain: myappSEP23, pos: 2,
			want: &Rule{
				Text:          "meta l4proto tcp   counter packets 0 bytes 0 dnat to 10.244.0.23:80",
				Target:        "dnat",
				ToDestination: "10.244.0.23:80",
				Handle:        46,
				Pos:           2,
			},
		},
		{
			name: "iptables-nft TRACE as nft lists it", inputs: []string{nftNodeListing},
			family: 4, table: "raw", chain: "OUTPUT", pos: 1,
			want: &Rule{
				Text:   "meta l4proto tcp tcp dport { 80, 8080, 30080 } tcp flags syn / fin,syn,rst,ack  counter packets 0 bytes 0 meta nftrace set 1",
				Target: "continue",
				Handle: 4,
				Pos:    1,
			},
		},
		{
			name: "ip6 nft listing", inputs: []string{web6NftListing},
			family: 6, table: "nat", chain: "KUBE-SEP-MPJ6SWB26JYZ5ZKN", pos: 2,
			want: &Rule{
				Text:          "meta l4proto tcp   counter packets 0 bytes 0 dnat to [fd00:10:244::18]:8080",
				Target:        "dnat",
				ToDestination: "[fd00:10:244::18]:8080",
				Handle:        22,
				Pos:           2,
			},
		},
		{
			name: "both views: Rule answers in iptables form", inputs: []string{nftNodeListing, nftNode},
			family: 4, table: "nat", chain: "KUBE-MARK-MASQ", pos: 1,
			want: &Rule{Text: "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000", Target: "MARK", Pos: 1},
		},
		{name: "position past the end", inputs: []string{legacyNode}, family: 4, table: "nat", chain: myappSVC, pos: 5},
		{name: "position 0", inputs: []string{legacyNode}, family: 4, table: "nat", chain: myappSVC, pos: 0},
		{name: "wrong family", inputs: []string{legacyNode}, family: 6, table: "nat", chain: myappSVC, pos: 1},
		{name: "unknown chain", inputs: []string{legacyNode}, family: 4, table: "nat", chain: "KUBE-SVC-NOPE", pos: 1},
		{name: "empty chain", inputs: []string{legacyNode}, family: 4, table: "nat", chain: "KUBE-NODEPORTS", pos: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexOf(t, tt.inputs...)
			got, ok := ix.Rule(tt.family, tt.table, tt.chain, tt.pos)
			if ok != (tt.want != nil) {
				t.Fatalf("Rule(%d, %q, %q, %d) ok = %v, want %v", tt.family, tt.table, tt.chain, tt.pos, ok, tt.want != nil)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Rule(%d, %q, %q, %d) mismatch (-want +got):\n%s", tt.family, tt.table, tt.chain, tt.pos, diff)
			}
		})
	}
}

func TestRuleByHandle(t *testing.T) {
	iptText := `-A KUBE-SVC-XJWXQFJLXSXKRMSG -m comment --comment "default/myapp -> 10.244.0.23:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-TJXBIUI2E22QKLD4`
	tests := []struct {
		name   string
		inputs []string
		family uint8
		table  string
		chain  string
		handle uint64
		want   *Rule
	}{
		{
			name: "nft view only", inputs: []string{nftNodeListing},
			family: 4, table: "nat", chain: myappSVC, handle: 58,
			want: &Rule{
				Text:   "meta random & 2147483647 < 715827883 counter packets 0 bytes 0 jump KUBE-SEP-TJXBIUI2E22QKLD4",
				Target: "jump", Jump: myappSEP23, Probability: 0.33333333349, Handle: 58, Pos: 2,
			},
		},
		{
			name: "iptables-save added after nft: iptables text with the handle", inputs: []string{nftNodeListing, nftNode},
			family: 4, table: "nat", chain: myappSVC, handle: 58,
			want: &Rule{
				Text: iptText, Target: myappSEP23, Jump: myappSEP23, Comment: "default/myapp -> 10.244.0.23:80",
				Probability: 0.33333333349, Handle: 58, Pos: 2,
			},
		},
		{
			name: "iptables-save added before nft: same answer", inputs: []string{nftNode, nftNodeListing},
			family: 4, table: "nat", chain: myappSVC, handle: 58,
			want: &Rule{
				Text: iptText, Target: myappSEP23, Jump: myappSEP23, Comment: "default/myapp -> 10.244.0.23:80",
				Probability: 0.33333333349, Handle: 58, Pos: 2,
			},
		},
		{
			name: "raw TRACE rule by handle", inputs: []string{nftNode, nftNodeListing},
			family: 4, table: "raw", chain: "OUTPUT", handle: 4,
			want: &Rule{
				Text:    "-A OUTPUT -p tcp -m multiport --dports 80,8080,30080 -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment svctrace-cap -j TRACE",
				Target:  "TRACE",
				Comment: "svctrace-cap",
				Handle:  4,
				Pos:     1,
			},
		},
		{
			name: "chain counts differ (legacy save vs nft listing): nft rule", inputs: []string{legacyNode, nftNodeListing},
			family: 4, table: "nat", chain: "KUBE-SERVICES", handle: 48,
			want: &Rule{
				Text:   "meta l4proto tcp ip daddr 10.96.20.33  tcp dport 80 counter packets 0 bytes 0 jump KUBE-SVC-Q3IGRLXQYQRXDATI",
				Target: "jump", Jump: "KUBE-SVC-Q3IGRLXQYQRXDATI", Handle: 48, Pos: 2,
			},
		},
		{
			name: "ip6", inputs: []string{web6NftSave, web6NftListing},
			family: 6, table: "nat", chain: "KUBE-SEP-MPJ6SWB26JYZ5ZKN", handle: 22,
			want: &Rule{
				Text:          "-A KUBE-SEP-MPJ6SWB26JYZ5ZKN -p tcp -m comment --comment \"default/web6:http\" -m tcp -j DNAT --to-destination [fd00:10:244::18]:8080",
				Target:        "DNAT",
				Comment:       "default/web6:http",
				ToDestination: "[fd00:10:244::18]:8080",
				Handle:        22,
				Pos:           2,
			},
		},
		{
			name: "nftables mode, unsorted handles across chains", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "external-BDXHFROF-default/myapp-np/tcp/", handle: 827,
			want: &Rule{
				Text:    `meta mark set meta mark | 0x00004000 comment "masquerade"`,
				Target:  "continue",
				Comment: "masquerade",
				Handle:  827,
				Pos:     1,
			},
		},
		{name: "handle of another chain", inputs: []string{nftNodeListing}, family: 4, table: "nat", chain: myappSVC, handle: 46},
		{name: "iptables-save only has no handles", inputs: []string{nftNode}, family: 4, table: "nat", chain: myappSVC, handle: 58},
		{name: "unknown table", inputs: []string{nftNodeListing}, family: 4, table: "mangle2", chain: "OUTPUT", handle: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexOf(t, tt.inputs...)
			got, ok := ix.RuleByHandle(tt.family, tt.table, tt.chain, tt.handle)
			if ok != (tt.want != nil) {
				t.Fatalf("RuleByHandle ok = %v, want %v", ok, tt.want != nil)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("RuleByHandle(%d, %q, %q, %d) mismatch (-want +got):\n%s", tt.family, tt.table, tt.chain, tt.handle, diff)
			}
		})
	}
}

// TestHandleOrderIsSaveOrder checks, over every chain of the real
// iptables-nft capture, that the nft view and the iptables-save view line up
// position by position, as RuleByHandle assumes.
func TestHandleOrderIsSaveOrder(t *testing.T) {
	ix := indexOf(t, nftNode, nftNodeListing)
	checked := 0
	for key, tv := range ix.tables {
		if tv.ipt == nil || tv.nft == nil {
			continue
		}
		for _, cd := range tv.nft.chains {
			icd := tv.ipt.chain(cd.name)
			if icd == nil {
				t.Errorf("%v chain %s: in the nft listing only", key, cd.name)
				continue
			}
			if icd.n != cd.n {
				t.Errorf("%v chain %s: %d rules in iptables-save, %d in nft", key, cd.name, icd.n, cd.n)
				continue
			}
			for i := 0; i < int(cd.n); i++ {
				nr := tv.nft.rules[int(cd.start)+i]
				got, ok := ix.RuleByHandle(key.family, key.name, cd.name, nr.Handle)
				want := tv.ipt.rules[int(icd.start)+i]
				want.Handle = nr.Handle
				if !ok {
					t.Errorf("%v %s handle %d: not found", key, cd.name, nr.Handle)
					continue
				}
				if diff := cmp.Diff(&want, got); diff != "" {
					t.Errorf("%v %s handle %d mismatch (-want +got):\n%s", key, cd.name, nr.Handle, diff)
				}
				if nr.Jump != want.Jump {
					t.Errorf("%v %s handle %d: nft jumps to %q, iptables to %q", key, cd.name, nr.Handle, nr.Jump, want.Jump)
				}
				checked++
			}
		}
	}
	if checked != 57 {
		t.Errorf("checked %d rules present in both views, want 57 (all of the capture's rules)", checked)
	}
}

func TestPolicy(t *testing.T) {
	tests := []struct {
		name       string
		input      string
		family     uint8
		table      string
		chain      string
		wantPolicy string
		wantOK     bool
	}{
		{"legacy filter OUTPUT", legacyNode, 4, "filter", "OUTPUT", "ACCEPT", true},
		{"legacy nat PREROUTING", legacyNode, 4, "nat", "PREROUTING", "ACCEPT", true},
		{"user chain", legacyNode, 4, "filter", "KUBE-FORWARD", "", false},
		{"unknown chain", legacyNode, 4, "filter", "NOPE", "", false},
		{"ip6 FORWARD DROP", web6Legacy, 6, "filter", "FORWARD", "DROP", true},
		{"ip6 table asked as ip", web6Legacy, 4, "filter", "FORWARD", "", false},
		{"nft base chain", nftModeRuleset, 4, "kube-proxy", "nat-output", "ACCEPT", true},
		{"nft regular chain", nftModeRuleset, 4, "kube-proxy", "services", "", false},
		{"iptables-nft listed by nft", nftNodeListing, 4, "mangle", "POSTROUTING", "ACCEPT", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexOf(t, tt.input)
			p, ok := ix.Policy(tt.family, tt.table, tt.chain)
			if p != tt.wantPolicy || ok != tt.wantOK {
				t.Errorf("Policy(%d, %q, %q) = %q, %v; want %q, %v", tt.family, tt.table, tt.chain, p, ok, tt.wantPolicy, tt.wantOK)
			}
		})
	}
}

func TestChain(t *testing.T) {
	myapp := []ServicePort{{
		Namespace: "default", Name: "myapp", Proto: "TCP",
		Endpoints: []string{"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"},
	}, {
		Namespace: "default", Name: "myapp-np", Proto: "tcp",
		Endpoints: []string{"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"},
	}}
	tests := []struct {
		name    string
		inputs  []string
		learn   []ServicePort
		family  uint8
		table   string
		chain   string
		want    ChainInfo
		wantSvc string // RuleService of the chain's first rule, when set
	}{
		{
			name: "legacy endpoint chain from comment and DNAT", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: myappSEP23,
			want: ChainInfo{Kind: ChainEndpoint, Service: "default/myapp", Proto: "tcp", Endpoint: "10.244.0.23:80"},
		},
		{
			name: "legacy named port", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: "KUBE-SVC-NPX46M4PTMTKRN6Y",
			want: ChainInfo{Kind: ChainService, Service: "default/kubernetes:https", Proto: "tcp"},
		},
		{
			name: "legacy external chain", inputs: []string{legacyPod},
			family: 4, table: "nat", chain: "KUBE-EXT-Q3IGRLXQYQRXDATI",
			want: ChainInfo{Kind: ChainExternal, Service: "default/myapp-np", Proto: "tcp"},
		},
		{
			name: "builtin", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: "POSTROUTING",
			want: ChainInfo{Kind: ChainBuiltin, Hook: "postrouting"},
		},
		{
			name: "no-endpoints REJECT names its Service", inputs: []string{legacyPod},
			family: 4, table: "filter", chain: "KUBE-SERVICES",
			want: ChainInfo{Kind: ChainServices}, wantSvc: "default/noep:web",
		},
		{
			name: "KUBE-SERVICES rule names its Service", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: "KUBE-SERVICES",
			want: ChainInfo{Kind: ChainServices}, wantSvc: "default/myapp",
		},
		{
			name: "5000-service dump: endpoint chain without comments, through its service chain", inputs: []string{dump5000},
			family: 4, table: "nat", chain: "KUBE-SEP-NQYUUGVEOMHJMQER",
			want: ChainInfo{Kind: ChainEndpoint, Service: "default/s3374:http", Proto: "tcp", Endpoint: "10.244.0.23:80"},
		},
		{
			name: "5000-service dump: service chain keeps its cluster IP comment", inputs: []string{dump5000},
			family: 4, table: "nat", chain: "KUBE-SVC-22GGCTR5VPQZV5MU",
			want: ChainInfo{Kind: ChainService, Service: "default/s3374:http", Proto: "tcp"},
		},
		{
			name: "nft listing has no comments: unknown Service", inputs: []string{nftNodeListing},
			family: 4, table: "nat", chain: myappSEP23,
			want: ChainInfo{Kind: ChainEndpoint, Endpoint: "10.244.0.23:80"},
		},
		{
			name: "nft listing, learned Services", inputs: []string{nftNodeListing}, learn: myapp,
			family: 4, table: "nat", chain: myappSEP23,
			want: ChainInfo{Kind: ChainEndpoint, Service: "default/myapp", Proto: "tcp", Endpoint: "10.244.0.23:80"},
		},
		{
			name: "nft listing, learned Services, external chain", inputs: []string{nftNodeListing}, learn: myapp,
			family: 4, table: "nat", chain: "KUBE-EXT-Q3IGRLXQYQRXDATI",
			want: ChainInfo{Kind: ChainExternal, Service: "default/myapp-np", Proto: "tcp"},
		},
		{
			name: "nft listing and save: comments from the save", inputs: []string{nftNodeListing, nftNode},
			family: 4, table: "nat", chain: "KUBE-SVC-Q3IGRLXQYQRXDATI",
			want: ChainInfo{Kind: ChainService, Service: "default/myapp-np", Proto: "tcp"},
		},
		{
			name: "nftables mode service chain, unnamed port", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: nftModeMyappSvc,
			want: ChainInfo{Kind: ChainService, Service: "default/myapp", Proto: "tcp"},
		},
		{
			name: "nftables mode named port", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "service-2QRHZV4L-default/kubernetes/tcp/https",
			want: ChainInfo{Kind: ChainService, Service: "default/kubernetes:https", Proto: "tcp"},
		},
		{
			name: "nftables mode base chain", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "nat-output",
			want: ChainInfo{Kind: ChainBuiltin, Hook: "output"},
		},
		{
			name: "nftables mode masquerading", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "masquerading",
			want: ChainInfo{Kind: ChainPostrouting},
		},
		{
			name: "nftables mode helper", inputs: []string{nftModeRuleset},
			family: 4, table: "kube-proxy", chain: "reject-chain",
			want: ChainInfo{Kind: ChainReject},
		},
		{
			name: "ip6 endpoint", inputs: []string{web6Legacy},
			family: 6, table: "nat", chain: "KUBE-SEP-GZQ3OEKLKC4YPR5H",
			want: ChainInfo{Kind: ChainEndpoint, Service: "default/web6:http", Proto: "tcp", Endpoint: "[fd00:10:244::17]:8080"},
		},
		{
			name: "ip6 nft listing: endpoint from dnat, service through hash", inputs: []string{web6NftListing},
			learn:  []ServicePort{{Namespace: "default", Name: "web6", Port: "http", Proto: "tcp", Endpoints: []string{"[fd00:10:244::17]:8080"}}},
			family: 6, table: "nat", chain: "KUBE-SEP-GZQ3OEKLKC4YPR5H",
			want: ChainInfo{Kind: ChainEndpoint, Service: "default/web6:http", Proto: "tcp", Endpoint: "[fd00:10:244::17]:8080"},
		},
		{
			name: "unknown chain, name only", inputs: []string{legacyNode},
			family: 4, table: "nat", chain: "KUBE-SVC-AAAAAAAAAAAAAAAA",
			want: ChainInfo{Kind: ChainService},
		},
		{
			name: "lower-case name outside kube-proxy's table is not kube-proxy's", inputs: []string{nftModeRuleset},
			family: 4, table: "filter", chain: "services",
			want: ChainInfo{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexOf(t, tt.inputs...)
			ix.LearnServices(tt.learn)
			got := ix.Chain(tt.family, tt.table, tt.chain)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Chain(%d, %q, %q) mismatch (-want +got):\n%s", tt.family, tt.table, tt.chain, diff)
			}
			if tt.wantSvc != "" {
				r, ok := ix.Rule(tt.family, tt.table, tt.chain, 1)
				if !ok {
					t.Fatalf("no rule 1 in %s", tt.chain)
				}
				if got := ix.RuleService(tt.family, tt.table, r); got != tt.wantSvc {
					t.Errorf("RuleService(rule 1 of %s) = %q, want %q", tt.chain, got, tt.wantSvc)
				}
			}
		})
	}
}

// TestChainEveryEndpointOf5000 resolves every KUBE-SEP chain of the real
// 5000-Service dump (most without comments) and checks it against the hash
// kube-proxy used to name it.
func TestChainEveryEndpointOf5000(t *testing.T) {
	ix := indexOf(t, dump5000)
	tv := ix.tables[tableKey{4, "nat"}]
	n := 0
	for _, cd := range tv.ipt.chains {
		if !strings.HasPrefix(cd.name, prefixSEP) {
			continue
		}
		n++
		info := ix.Chain(4, "nat", cd.name)
		if info.Service == "" || info.Endpoint == "" || info.Proto != "tcp" {
			t.Fatalf("Chain(%s) = %+v: want Service, Endpoint and Proto", cd.name, info)
		}
		if got := EndpointChainName(info.Service, info.Proto, info.Endpoint); got != cd.name {
			t.Fatalf("Chain(%s) = %+v, whose hash is %s", cd.name, info, got)
		}
	}
	if n != 15007 {
		t.Errorf("resolved %d endpoint chains, want 15007 (5002 Services x 3 and default/kubernetes)", n)
	}
}

func TestAddDetectsFormatAndFamily(t *testing.T) {
	v6NoHeader := "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n-A KUBE-SVC-X -d fd00:10:96::1/128 -j ACCEPT\nCOMMIT\n"
	v4NoHeader := "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d 10.96.0.1/32 -p tcp -j DNAT --to-destination 10.0.0.1:80\nCOMMIT\n"
	both := string(load(t, legacyNode)) + string(load(t, web6Legacy))
	tests := []struct {
		name  string
		input string
		want  []tableKey
	}{
		{"legacy v4 save", string(load(t, legacyNode)), []tableKey{{4, "filter"}, {4, "mangle"}, {4, "nat"}}},
		{"legacy v6 save", string(load(t, web6Legacy)), []tableKey{{6, "filter"}, {6, "nat"}}},
		{"v4 and v6 saves concatenated", both, []tableKey{{4, "filter"}, {4, "mangle"}, {4, "nat"}, {6, "filter"}, {6, "nat"}}},
		{"headerless v6", v6NoHeader, []tableKey{{6, "nat"}}},
		{"headerless v4 (DNAT ip:port is not v6)", v4NoHeader, []tableKey{{4, "nat"}}},
		{"nft listing", string(load(t, nftNodeListing)), []tableKey{{4, "filter"}, {4, "mangle"}, {4, "nat"}, {4, "raw"}}},
		{"nft listing with warning lines and inet/bridge tables", "# Warning: table ip nat is managed by iptables-nft, do not touch!\n" +
			"table inet svctrace { # handle 9\n\tchain pre { # handle 1\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tmeta nftrace set 1 # handle 2\n\t}\n}\n" +
			"table bridge b {\n\tchain c {\n\t\ttype filter hook forward priority 0; policy drop;\n\t}\n}\n",
			[]tableKey{{FamilyBridge, "b"}, {FamilyInet, "svctrace"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex()
			if err := ix.Add([]byte(tt.input)); err != nil {
				t.Fatalf("Add: %v", err)
			}
			var got []tableKey
			for k := range ix.tables {
				got = append(got, k)
			}
			less := func(a, b tableKey) bool {
				if a.family != b.family {
					return a.family < b.family
				}
				return a.name < b.name
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(tableKey{}), cmpopts.SortSlices(less)); diff != "" {
				t.Errorf("tables mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInetFallbackAndOwnTable(t *testing.T) {
	in := "table inet svctrace { # handle 9\n\tchain prerouting { # handle 1\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t\tmeta nftrace set 1 comment \"svctrace\" # handle 2\n\t}\n}\n"
	ix := NewIndex()
	if err := ix.AddNftRuleset([]byte(in)); err != nil {
		t.Fatal(err)
	}
	for _, fam := range []uint8{4, 6, FamilyInet} {
		r, ok := ix.RuleByHandle(fam, "svctrace", "prerouting", 2)
		if !ok || r.Comment != "svctrace" || r.Target != "continue" {
			t.Errorf("RuleByHandle(%d, svctrace, prerouting, 2) = %+v, %v", fam, r, ok)
		}
		if diff := cmp.Diff(ChainInfo{Kind: ChainSvctrace, Hook: "prerouting"}, ix.Chain(fam, "svctrace", "prerouting")); diff != "" {
			t.Errorf("Chain(%d) mismatch (-want +got):\n%s", fam, diff)
		}
	}
	if _, ok := ix.Rule(FamilyBridge, "svctrace", "prerouting", 1); ok {
		t.Errorf("a bridge lookup must not fall back to the inet table")
	}
}

func TestReplaceAndLen(t *testing.T) {
	ix := indexOf(t, legacyNode)
	if got, want := ix.Len(), 39; got != want {
		t.Fatalf("Len() = %d, want %d", got, want)
	}
	old, _ := ix.Rule(4, "nat", "KUBE-SERVICES", 3)
	// The pod capture is a later snapshot of the same node: it replaces
	// every table it has and adds raw.
	if err := ix.Add(load(t, legacyPod)); err != nil {
		t.Fatal(err)
	}
	if got, want := ix.Len(), 58; got != want {
		t.Errorf("Len() after replacing = %d, want %d", got, want)
	}
	r, _ := ix.Rule(4, "nat", "KUBE-SERVICES", 3)
	if got, want := r.Comment, "default/myapp-np cluster IP"; got != want {
		t.Errorf("rule 3 of KUBE-SERVICES after replacing: comment %q, want %q", got, want)
	}
	if got, want := old.Comment, "kubernetes service nodeports; NOTE: this must be the last rule in this chain"; got != want {
		t.Errorf("a rule handed out before the replacement changed: comment %q, want %q", got, want)
	}
	if err := ix.Add(load(t, nftNodeListing)); err != nil {
		t.Fatal(err)
	}
	if got, want := ix.Len(), 58+57; got != want {
		t.Errorf("Len() with an nft view = %d, want %d", got, want)
	}
}

func TestScatteredAndLenientSave(t *testing.T) {
	in := strings.Join([]string{
		"*filter",
		":INPUT DROP [0:0]",
		"-A INPUT -j B",
		"-A C -j RETURN",
		"-A INPUT -m comment --comment \"say \\\"hi\\\" \\\\o/\" -g C",
		"-N B",
		"-A B -j ACCEPT",
		"-P OUTPUT ACCEPT",
		"COMMIT",
	}, "\n")
	ix := NewIndex()
	if err := ix.AddIptablesSave([]byte(in), 4); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		chain string
		pos   int
		want  Rule
	}{
		{"INPUT", 1, Rule{Text: "-A INPUT -j B", Target: "B", Jump: "B", Pos: 1}},
		{"INPUT", 2, Rule{Text: `-A INPUT -m comment --comment "say \"hi\" \\o/" -g C`, Target: "C", Jump: "C", Goto: true, Comment: `say "hi" \o/`, Pos: 2}},
		{"C", 1, Rule{Text: "-A C -j RETURN", Target: "RETURN", Pos: 1}},
		{"B", 1, Rule{Text: "-A B -j ACCEPT", Target: "ACCEPT", Pos: 1}},
	}
	for _, tt := range tests {
		got, ok := ix.Rule(4, "filter", tt.chain, tt.pos)
		if !ok {
			t.Errorf("Rule(%s, %d) not found", tt.chain, tt.pos)
			continue
		}
		if diff := cmp.Diff(&tt.want, got); diff != "" {
			t.Errorf("Rule(%s, %d) mismatch (-want +got):\n%s", tt.chain, tt.pos, diff)
		}
	}
	for chain, want := range map[string]string{"INPUT": "DROP", "OUTPUT": "ACCEPT"} {
		if p, ok := ix.Policy(4, "filter", chain); !ok || p != want {
			t.Errorf("Policy(%s) = %q, %v; want %q", chain, p, ok, want)
		}
	}
}

func TestMalformed(t *testing.T) {
	tests := []struct {
		name    string
		add     func(*Index, []byte) error
		input   string
		wantErr string
	}{
		{"empty", (*Index).Add, "  \n\n", "empty ruleset"},
		{"unknown format", (*Index).Add, "Chain INPUT (policy ACCEPT)\n", "unrecognized ruleset format"},
		{"rule before table", (*Index).Add, "-A INPUT -j ACCEPT\n", "line 1: rule outside a table"},
		{"garbage line", (*Index).Add, "*filter\n:INPUT ACCEPT [0:0]\nhello\nCOMMIT\n", "line 3: unexpected \"hello\""},
		{"missing COMMIT", (*Index).Add, "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", "table \"filter\" has no COMMIT"},
		{"table inside table", (*Index).Add, "*filter\n*nat\n", "line 2: table \"nat\" starts before COMMIT"},
		{"unterminated quote", (*Index).Add, "*filter\n-A INPUT -m comment --comment \"oops -j ACCEPT\nCOMMIT\n", "line 2: unterminated quoted string"},
		{"bad family", func(ix *Index, b []byte) error { return ix.AddIptablesSave(b, 5) }, "*filter\nCOMMIT\n", "family 5"},
		{"nft text outside a table", (*Index).AddNftRuleset, "chain x {\n}\n", "line 1: expected \"table FAMILY NAME {\""},
		{"nft unknown family", (*Index).Add, "table ipx t {\n}\n", "line 1: unknown table family \"ipx\""},
		{"nft truncated", (*Index).Add, "table ip t {\n\tchain c {\n\t\taccept # handle 3\n", "input ends inside table \"t\""},
		{"nft unbalanced", (*Index).Add, "table ip t {\n\tchain c {\n\t\taccept }\n\t}\n}\n", "line 3: unbalanced '}'"},
		{"nft unterminated quote", (*Index).Add, "table ip t {\n\tchain c {\n\t\taccept comment \"x # handle 3\n\t}\n}\n", "line 3: unterminated quoted string"},
		{"nft chain twice", (*Index).Add, "table ip t {\n\tchain c {\n\t}\n\tchain c {\n\t}\n}\n", "line 4: chain \"c\" listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := NewIndex()
			err := tt.add(ix, []byte(tt.input))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if ix.Len() != 0 || len(ix.tables) != 0 {
				t.Errorf("a failed Add indexed %d rules in %d tables, want nothing", ix.Len(), len(ix.tables))
			}
		})
	}
}

// TestGeneratorMatchesCapture checks the benchmark generator against the real
// capture: the same Services must give the same bytes.
func TestGeneratorMatchesCapture(t *testing.T) {
	svcs := []genService{
		{
			port:      ServicePort{Namespace: "default", Name: "myapp", Proto: "tcp", Endpoints: []string{"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"}},
			clusterIP: "10.96.173.227", svcPort: 80,
		},
		{
			port:      ServicePort{Namespace: "default", Name: "kubernetes", Port: "https", Proto: "tcp", Endpoints: []string{"10.199.0.2:6443"}},
			clusterIP: "10.96.0.1", svcPort: 443,
		},
	}
	if diff := cmp.Diff(string(load(t, legacyNode)), string(genKubeProxySaveFor(svcs))); diff != "" {
		t.Errorf("generated ruleset differs from the capture (-want +got):\n%s", diff)
	}
}

// TestChainFromSiblingAndRules covers chains that say nothing themselves:
// KUBE-EXT-X takes its Service from KUBE-SVC-X; a protocol no hash confirms
// comes from the rules' -p.
func TestChainFromSiblingAndRules(t *testing.T) {
	in := strings.Join([]string{
		"*nat",
		":KUBE-EXT-Q3IGRLXQYQRXDATI - [0:0]",
		":KUBE-SVC-Q3IGRLXQYQRXDATI - [0:0]",
		":KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]",
		":KUBE-FW-AAAAAAAAAAAAAAAA - [0:0]",
		"-A KUBE-EXT-Q3IGRLXQYQRXDATI -j KUBE-SVC-Q3IGRLXQYQRXDATI",
		`-A KUBE-SVC-Q3IGRLXQYQRXDATI ! -s 10.244.0.0/16 -d 10.96.20.33/32 -p tcp -m comment --comment "default/myapp-np cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
		`-A KUBE-SVC-AAAAAAAAAAAAAAAA -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/dns:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ`,
		"-A KUBE-FW-AAAAAAAAAAAAAAAA -j DROP",
		"COMMIT",
	}, "\n")
	ix := NewIndex()
	if err := ix.Add([]byte(in)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		chain string
		want  ChainInfo
	}{
		{"KUBE-EXT-Q3IGRLXQYQRXDATI", ChainInfo{Kind: ChainExternal, Service: "default/myapp-np", Proto: "tcp"}},
		{"KUBE-SVC-AAAAAAAAAAAAAAAA", ChainInfo{Kind: ChainService, Service: "kube-system/dns:dns", Proto: "udp"}},
		// The sibling gives the Service; the FW chain's own rules have no -p.
		{"KUBE-FW-AAAAAAAAAAAAAAAA", ChainInfo{Kind: ChainFirewall, Service: "kube-system/dns:dns"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ix.Chain(4, "nat", tt.chain)); diff != "" {
			t.Errorf("Chain(%q) mismatch (-want +got):\n%s", tt.chain, diff)
		}
	}
}

// TestConcurrentUse is for -race: lookups while snapshots are replaced.
func TestConcurrentUse(t *testing.T) {
	ix := indexOf(t, dump5000)
	inputs := [][]byte{load(t, nftNode), load(t, nftNodeListing), load(t, legacyPod)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 30; i++ {
			if err := ix.Add(inputs[i%len(inputs)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			if got := ix.Chain(4, "nat", myappSEP23); got.Service != "default/myapp" {
				t.Errorf("Chain(%s) = %+v after the writes", myappSEP23, got)
			}
			return
		default:
		}
		if r, ok := ix.Rule(4, "nat", myappSVC, 2); ok && r.Jump != myappSEP23 {
			t.Errorf("rule 2 of %s jumps to %q", myappSVC, r.Jump)
		}
		ix.RuleByHandle(4, "nat", myappSVC, 58)
		ix.Chain(4, "nat", "KUBE-SEP-NQYUUGVEOMHJMQER")
		ix.Len()
	}
}

func TestNftListingShapes(t *testing.T) {
	in := strings.Join([]string{
		"table ip empty { }",
		`table ip "my table" {`,
		`	chain "my chain" {`,
		"		type filter hook input priority 0; policy drop;",
		`		tcp dport 22 jump "other chain"`,
		"		counter snat to 192.0.2.1 comment \"out\"",
		"	}",
		"	flowtable f {",
		"		hook ingress priority 0; devices = { lo };",
		"	}",
		`	chain "other chain" {`,
		"		return",
		"	}",
		"}",
	}, "\n")
	ix := NewIndex()
	if err := ix.AddNftRuleset([]byte(in)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		chain string
		pos   int
		want  Rule
	}{
		{"my chain", 1, Rule{Text: `tcp dport 22 jump "other chain"`, Target: "jump", Jump: "other chain", Pos: 1}},
		{"my chain", 2, Rule{Text: `counter snat to 192.0.2.1 comment "out"`, Target: "snat", Comment: "out", ToSource: "192.0.2.1", Pos: 2}},
		{"other chain", 1, Rule{Text: "return", Target: "return", Pos: 1}},
	}
	for _, tt := range tests {
		got, ok := ix.Rule(4, "my table", tt.chain, tt.pos)
		if !ok {
			t.Errorf("Rule(%q, %d) not found", tt.chain, tt.pos)
			continue
		}
		if diff := cmp.Diff(&tt.want, got); diff != "" {
			t.Errorf("Rule(%q, %d) mismatch (-want +got):\n%s", tt.chain, tt.pos, diff)
		}
	}
	if p, ok := ix.Policy(4, "my table", "my chain"); p != "DROP" || !ok {
		t.Errorf("Policy(my chain) = %q, %v; want DROP, true", p, ok)
	}
	if got, want := ix.Chain(4, "my table", "my chain"), (ChainInfo{Kind: ChainBuiltin, Hook: "input"}); got != want {
		t.Errorf("Chain(my chain) = %+v, want %+v", got, want)
	}
	if _, cd := ix.views(4, "empty").find("x"); cd != nil {
		t.Errorf("table empty has a chain")
	}
	if ix.tables[tableKey{4, "empty"}] == nil {
		t.Errorf("one-line table ip empty { } not indexed")
	}
}

func TestHopFacts(t *testing.T) {
	third := 1.0 / 3
	tests := []struct {
		name          string
		inputs        []string
		table, chain  string
		pos           int
		handle        uint64
		wantOK        bool
		wantShare     float64
		wantTarget    ChainKind
		wantPolicy    string
		wantTargetSvc string
	}{
		{name: "first of three statistic rules", inputs: []string{legacyNode}, table: "nat", chain: myappSVC, pos: 2,
			wantOK: true, wantShare: third, wantTarget: ChainEndpoint, wantTargetSvc: "default/myapp"},
		{name: "second: probability 0.5 of what is left", inputs: []string{legacyNode}, table: "nat", chain: myappSVC, pos: 3,
			wantOK: true, wantShare: third, wantTarget: ChainEndpoint, wantTargetSvc: "default/myapp"},
		{name: "last: no statistic match", inputs: []string{legacyNode}, table: "nat", chain: myappSVC, pos: 4,
			wantOK: true, wantShare: third, wantTarget: ChainEndpoint, wantTargetSvc: "default/myapp"},
		{name: "mark for masquerade chooses no endpoint", inputs: []string{legacyNode}, table: "nat", chain: myappSVC, pos: 1,
			wantOK: true, wantTarget: ChainMarkMasq},
		{name: "by handle, iptables-nft", inputs: []string{nftNode, nftNodeListing}, table: "nat", chain: myappSVC, handle: 58,
			wantOK: true, wantShare: third, wantTarget: ChainEndpoint, wantTargetSvc: "default/myapp"},
		{name: "by handle, nft view only", inputs: []string{nftNodeListing}, table: "nat", chain: myappSVC, handle: 58,
			wantOK: true, wantShare: third, wantTarget: ChainEndpoint},
		{name: "unknown handle", inputs: []string{nftNodeListing}, table: "nat", chain: myappSVC, handle: 9999},
		{name: "past the last rule", inputs: []string{legacyNode}, table: "nat", chain: myappSVC, pos: 9},
		{name: "policy", inputs: []string{legacyNode}, table: "filter", chain: "OUTPUT", wantOK: true, wantPolicy: "ACCEPT"},
		{name: "unknown chain", inputs: []string{legacyNode}, table: "filter", chain: "NOPE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexOf(t, tt.inputs...)
			f, ok := ix.Hop(4, tt.table, tt.chain, tt.pos, tt.handle)
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v", ok, tt.wantOK)
			}
			if d := f.Share - tt.wantShare; d > 1e-6 || d < -1e-6 {
				t.Errorf("share %v, want %v", f.Share, tt.wantShare)
			}
			if f.Target.Kind != tt.wantTarget || f.Target.Service != tt.wantTargetSvc && tt.wantTargetSvc != "" {
				t.Errorf("target %+v, want kind %q service %q", f.Target, tt.wantTarget, tt.wantTargetSvc)
			}
			if f.Policy != tt.wantPolicy {
				t.Errorf("policy %q, want %q", f.Policy, tt.wantPolicy)
			}
			if f.Chain != ix.Chain(4, tt.table, tt.chain) {
				t.Errorf("chain %+v, want what Chain says", f.Chain)
			}
			if tt.pos > 0 && ok {
				r, _ := ix.Rule(4, tt.table, tt.chain, tt.pos)
				if f.Rule != r {
					t.Errorf("rule %+v, want Rule's %+v", f.Rule, r)
				}
			}
			if tt.handle != 0 && ok {
				r, _ := ix.RuleByHandle(4, tt.table, tt.chain, tt.handle)
				if diff := cmp.Diff(r, f.Rule); diff != "" {
					t.Errorf("rule differs from RuleByHandle's (-want +got):\n%s", diff)
				}
			}
		})
	}

	t.Run("a replaced table is not answered from the cache", func(t *testing.T) {
		ix := indexOf(t, legacyNode)
		before, _ := ix.Hop(4, "nat", "KUBE-SERVICES", 3, 0)
		if err := ix.Add(load(t, legacyPod)); err != nil {
			t.Fatal(err)
		}
		after, _ := ix.Hop(4, "nat", "KUBE-SERVICES", 3, 0)
		if before.Rule.Comment == after.Rule.Comment || after.Rule.Comment != "default/myapp-np cluster IP" {
			t.Errorf("rule 3 after replacing: %q (before %q)", after.Rule.Comment, before.Rule.Comment)
		}
	})
}

func TestHopByText(t *testing.T) {
	ix := indexOf(t, nftNode)
	text := `-A KUBE-SVC-XJWXQFJLXSXKRMSG -m comment --comment "default/myapp -> 10.244.0.24:80" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-4VYPMJP5OIECG6XZ`
	f, ok := ix.HopByText(4, "nat", myappSVC, text)
	if !ok || f.Rule.Text != text || f.Rule.Pos != 3 || f.Share != 0.333333 {
		t.Errorf("HopByText = %+v, %v; want rule 3 with share 0.333333", f, ok)
	}
	if _, ok := ix.HopByText(4, "nat", myappSVC, "-A KUBE-SVC-XJWXQFJLXSXKRMSG -j NOPE"); ok {
		t.Error("HopByText found a rule the chain does not have")
	}
}

func TestNumgenShare(t *testing.T) {
	const rule = "meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.244.0.23 . 80, 1 : 10.244.0.24 . 80, 2 : 10.244.0.25 . 80 }"
	tests := []struct {
		text, endpoint string
		want           float64
	}{
		{rule, "10.244.0.24:80", 0.333333},
		{"dnat ip to numgen random mod 4 map { 0 : 10.0.0.1 . 80, 1 : 10.0.0.1 . 80, 2 : 10.0.0.2 . 80, 3 : 10.0.0.3 . 80 }", "10.0.0.1:80", 0.5},
		{rule, "10.244.0.99:80", 0},
		{"dnat to 10.244.0.24:80", "10.244.0.24:80", 0},
		{"dnat ip6 to numgen random mod 2 map { 0 : fd00::1 . 80, 1 : fd00::2 . 80 }", "[fd00::2]:80", 0.5},
	}
	for _, tt := range tests {
		if got := NumgenShare(tt.text, tt.endpoint); got != tt.want {
			t.Errorf("NumgenShare(%q, %q) = %v, want %v", tt.text, tt.endpoint, got, tt.want)
		}
	}
}
