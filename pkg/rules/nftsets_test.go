package rules

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSetElement(t *testing.T) {
	const nftMode = "testdata/nftmode.nftlist.txt"
	tests := []struct {
		name   string
		input  string
		set    string
		key    []string
		want   SetElement
		wantOK bool
	}{
		{
			name: "no-endpoints element names its Service", input: nftModeRuleset,
			set: MapNoEndpointServices, key: []string{"10.96.190.107", "tcp", "8080"},
			want: SetElement{Key: "10.96.190.107 . tcp . 8080", Value: "goto reject-chain", Comment: "default/noep:web"}, wantOK: true,
		},
		{
			name: "service-ips element among 5,000", input: nftModeRuleset,
			set: MapServiceIPs, key: []string{"10.96.173.227", "tcp", "80"},
			want: SetElement{Key: "10.96.173.227 . tcp . 80", Value: "goto service-6QYGQ5L4-default/myapp/tcp/"}, wantOK: true,
		},
		{
			name: "NodePort element", input: nftModeRuleset,
			set: MapServiceNodePorts, key: []string{"tcp", "30080"},
			want: SetElement{Key: "tcp . 30080", Value: "goto external-BDXHFROF-default/myapp-np/tcp/"}, wantOK: true,
		},
		{
			name: "set member", input: nftModeRuleset,
			set: SetClusterIPs, key: []string{"10.96.173.227"},
			want: SetElement{Key: "10.96.173.227"}, wantOK: true,
		},
		{
			name: "hairpin element", input: nftModeRuleset,
			set: SetHairpinConnections, key: []string{"10.244.0.24", "10.244.0.24", "tcp", "80"},
			want: SetElement{Key: "10.244.0.24 . 10.244.0.24 . tcp . 80"}, wantOK: true,
		},
		{
			name: "other port of a listed address", input: nftModeRuleset,
			set: MapServiceIPs, key: []string{"10.96.173.227", "tcp", "81"},
		},
		{
			name: "empty map", input: nftModeRuleset,
			set: MapFirewallIPs, key: []string{"10.96.173.227", "tcp", "80"},
		},
		{
			name: "no such set", input: nftModeRuleset,
			set: "no-such-map", key: []string{"tcp", "80"},
		},
		{
			name: "drop element, second line of the list", input: nftMode,
			set: MapNoEndpointServices, key: []string{"10.96.0.22", "tcp", "80"},
			want: SetElement{Key: "10.96.0.22 . tcp . 80", Value: "drop", Comment: "default/itp"}, wantOK: true,
		},
		{
			name: "affinity element with expiry", input: nftMode,
			set: "affinity-57V7AMUQ-default/affine/tcp/__10.244.0.5/80", key: []string{"10.244.0.9"},
			want: SetElement{Key: "10.244.0.9"}, wantOK: true,
		},
		{
			name: "firewall element", input: nftMode,
			set: MapFirewallIPs, key: []string{"192.168.99.10", "tcp", "80"},
			want: SetElement{Key: "192.168.99.10 . tcp . 80", Value: "goto firewall-D2RGPZ6L-default/lb/tcp/http"}, wantOK: true,
		},
	}
	indexes := map[string]*Index{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := indexes[tt.input]
			if ix == nil {
				ix = NewIndex()
				if err := ix.Add(load(t, tt.input)); err != nil {
					t.Fatal(err)
				}
				indexes[tt.input] = ix
			}
			got, ok := ix.SetElement(FamilyIPv4, KubeProxyTable, tt.set, tt.key...)
			if ok != tt.wantOK {
				t.Fatalf("SetElement(%q, %q) ok = %v, want %v", tt.set, tt.key, ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SetElement(%q, %q) (-want +got):\n%s", tt.set, tt.key, diff)
			}
		})
	}
	// The table still indexes its chains as before.
	ix := indexes[nftMode]
	if r, ok := ix.Rule(FamilyIPv4, KubeProxyTable, "reject-chain", 1); !ok || r.Target != "reject" {
		t.Errorf("reject-chain rule 1 = %+v, %v; want the reject rule", r, ok)
	}
	if !ix.HasSet(FamilyIPv4, KubeProxyTable, MapServiceIPs) || ix.HasSet(FamilyIPv6, KubeProxyTable, MapServiceIPs) {
		t.Error("HasSet: want the ip table's service-ips and no ip6 table")
	}
}

func TestSetElementVerdict(t *testing.T) {
	for _, tt := range []struct{ value, verdict, chain string }{
		{"goto reject-chain", "goto", "reject-chain"},
		{"jump service-X-default/a/tcp/", "jump", "service-X-default/a/tcp/"},
		{"drop", "drop", ""},
		{"", "", ""},
	} {
		v, c := SetElement{Value: tt.value}.Verdict()
		if v != tt.verdict || c != tt.chain {
			t.Errorf("Verdict() of %q = %q, %q; want %q, %q", tt.value, v, c, tt.verdict, tt.chain)
		}
	}
}

func TestNftVmap(t *testing.T) {
	tests := []struct {
		text string
		want NftLookup
		ok   bool
	}{
		{"ip daddr . meta l4proto . th dport vmap @service-ips", NftLookup{Set: "service-ips", Key: []string{"ip daddr", "meta l4proto", "th dport"}, Vmap: true}, true},
		{"ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports", NftLookup{Set: "service-nodeports", Key: []string{"meta l4proto", "th dport"}, Vmap: true}, true},
		{"fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports", NftLookup{Set: "no-endpoint-nodeports", Key: []string{"meta l4proto", "th dport"}, Vmap: true}, true},
		{"ip6 daddr . meta l4proto . th dport vmap @firewall-ips", NftLookup{Set: "firewall-ips", Key: []string{"ip6 daddr", "meta l4proto", "th dport"}, Vmap: true}, true},
		{"iifname . ip saddr vmap @x", NftLookup{Set: "x", Key: []string{"iifname", "ip saddr"}, Vmap: true}, true},
		{"numgen random mod 2 vmap { 0 : goto a, 1 : goto b }", NftLookup{}, false},
		{"vmap @x", NftLookup{}, false},
		{"ct state new jump firewall-check", NftLookup{}, false},
	}
	for _, tt := range tests {
		got, ok := NftVmap(tt.text)
		if ok != tt.ok {
			t.Errorf("NftVmap(%q) ok = %v, want %v", tt.text, ok, tt.ok)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("NftVmap(%q) (-want +got):\n%s", tt.text, diff)
		}
	}
	if diff := cmp.Diff([]string{"cluster-ips"}, NftSetMatches(`ip daddr @cluster-ips ip saddr != 10.244.0.0/16 meta mark set meta mark | 0x00004000`)); diff != "" {
		t.Errorf("NftSetMatches (-want +got):\n%s", diff)
	}
	if got := NftSetMatches("ip daddr . meta l4proto . th dport vmap @service-ips"); got != nil {
		t.Errorf("NftSetMatches of a vmap rule = %q, want none", got)
	}
}

func TestNftNumgenTargets(t *testing.T) {
	for _, tt := range []struct {
		text string
		want []string
	}{
		{"meta l4proto tcp dnat ip to numgen random mod 3 map { 0 : 10.244.0.23 . 80, 1 : 10.244.0.24 . 80, 2 : 10.244.0.25 . 80 }",
			[]string{"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"}},
		{"meta l4proto tcp dnat ip6 to numgen random mod 1 map { 0 : fd00:10:244::17 . 8080 }", []string{"[fd00:10:244::17]:8080"}},
		{"numgen random mod 2 vmap { 0 : goto a, 1 : goto b }", nil},
		{"meta l4proto tcp dnat to 10.244.0.5:80", nil},
	} {
		if diff := cmp.Diff(tt.want, NftNumgenTargets(tt.text)); diff != "" {
			t.Errorf("NftNumgenTargets(%q) (-want +got):\n%s", tt.text, diff)
		}
	}
}
