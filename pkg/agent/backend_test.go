//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeProber is a node for Detect: the tables each backend holds and what
// iptables -S prints for them.
type fakeProber struct {
	legacy map[uint8][]string // existing legacy tables per family
	nft    map[uint8][]string // existing nftables tables per family
	// chains per "BINARY TABLE": the chains iptables -S lists.
	chains map[string][]string
	links  []string
	calls  []string
}

func (f *fakeProber) legacyTables(fam uint8) ([]string, error) { return f.legacy[fam], nil }
func (f *fakeProber) nftTables(fam uint8) ([]string, error)    { return f.nft[fam], nil }
func (f *fakeProber) linkExists(name string) bool              { return slices.Contains(f.links, name) }

func (f *fakeProber) nftChainExists(fam uint8, table, chain string) (bool, error) {
	f.calls = append(f.calls, fmt.Sprintf("netlink: chain %s in ip%d %s", chain, fam, table))
	return slices.Contains(f.nft[fam], table) && slices.Contains(f.chains["iptables-nft "+table], chain), nil
}

func (f *fakeProber) run(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	// args: -w -t TABLE -S [CHAIN [1]]
	table := args[2]
	chains := f.chains[name+" "+table]
	if len(args) >= 5 {
		if !slices.Contains(chains, args[4]) {
			return nil, &commandError{Cmd: name, Stderr: "iptables: No chain/target/match by that name.", Err: errors.New("exit status 1")}
		}
		return []byte("-N " + args[4] + "\n"), nil
	}
	var b strings.Builder
	for _, c := range chains {
		b.WriteString("-N " + c + "\n")
	}
	return []byte(b.String()), nil
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name      string
		node      fakeProber
		want      []uint8
		optional  []uint8
		wantFam   []familyDetection
		wantBack  string
		wantMode  proxyMode
		wantErr   string
		wantWarn  string
		wantCalls []string
	}{
		{
			name: "legacy kube-proxy; kubelet's chains in nft (the capture node)",
			node: fakeProber{
				legacy: map[uint8][]string{4: {"mangle", "nat", "filter"}},
				nft:    map[uint8][]string{4: {"mangle", "nat", "filter"}},
				chains: map[string][]string{
					"iptables-legacy mangle": {"KUBE-PROXY-CANARY"},
					"iptables-nft mangle":    {"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"},
					"iptables-nft nat":       {"KUBE-KUBELET-CANARY"},
				},
			},
			want:     []uint8{4},
			wantFam:  []familyDetection{{Family: 4, Legacy: true}},
			wantBack: "legacy",
			wantMode: modeIptables,
			// The canary in the small mangle table answers at once.
			wantCalls: []string{"iptables-legacy -w -t mangle -S", "netlink: chain KUBE-PROXY-CANARY in ip4 mangle", "netlink: chain KUBE-SERVICES in ip4 nat",
				// Is a network plugin's policy in the nft filter table?
				"netlink: chain KUBE-ROUTER-FORWARD in ip4 filter", "netlink: chain cali-FORWARD in ip4 filter", "netlink: chain CILIUM_FORWARD in ip4 filter"},
		},
		{
			name: "legacy kube-proxy, kube-router's policy chains in nft (the local cluster's legacy setup)",
			node: fakeProber{
				legacy: map[uint8][]string{4: {"mangle", "nat", "filter"}},
				nft:    map[uint8][]string{4: {"mangle", "nat", "filter"}},
				chains: map[string][]string{
					"iptables-legacy mangle": {"KUBE-PROXY-CANARY"},
					"iptables-nft filter":    {"KUBE-ROUTER-FORWARD", "KUBE-ROUTER-INPUT"},
				},
			},
			want:     []uint8{4},
			wantFam:  []familyDetection{{Family: 4, Legacy: true}},
			wantBack: "legacy",
			wantMode: modeIptables,
			wantWarn: "IPv4: kube-router's NetworkPolicy chains (KUBE-ROUTER-FORWARD) are in iptables-nft but kube-proxy's are in iptables-legacy",
		},
		{
			name: "nft kube-proxy without a canary: KUBE-SERVICES in nat",
			node: fakeProber{
				nft:    map[uint8][]string{4: {"nat", "filter"}},
				chains: map[string][]string{"iptables-nft nat": {"KUBE-SERVICES", "KUBE-POSTROUTING"}},
			},
			want:     []uint8{4},
			wantFam:  []familyDetection{{Family: 4, Nft: true}},
			wantBack: "nft",
			wantMode: modeIptables,
		},
		{
			name: "both backends hold kube-proxy chains",
			node: fakeProber{
				legacy: map[uint8][]string{4: {"nat"}},
				nft:    map[uint8][]string{4: {"nat"}},
				chains: map[string][]string{"iptables-legacy nat": {"KUBE-SERVICES"}, "iptables-nft nat": {"KUBE-SERVICES"}},
			},
			want:     []uint8{4},
			wantFam:  []familyDetection{{Family: 4, Legacy: true, Nft: true}},
			wantBack: "both",
			wantMode: modeIptables,
			wantWarn: "tracing both backends",
		},
		{
			name: "nftables mode, dual-stack",
			node: fakeProber{
				nft: map[uint8][]string{4: {"kube-proxy"}, 6: {"kube-proxy"}},
			},
			want:     []uint8{4, 6},
			wantFam:  []familyDetection{{Family: 4, NftTable: true}, {Family: 6, NftTable: true}},
			wantBack: "nft",
			wantMode: modeNftables,
		},
		{
			name: "ipvs mode",
			node: fakeProber{
				legacy: map[uint8][]string{4: {"mangle", "nat"}},
				chains: map[string][]string{"iptables-legacy mangle": {"KUBE-PROXY-CANARY"}},
				links:  []string{"kube-ipvs0"},
			},
			want:     []uint8{4},
			wantFam:  []familyDetection{{Family: 4, Legacy: true, IPVS: true}},
			wantBack: "legacy",
			wantMode: modeIPVS,
			wantWarn: "ipvs mode",
		},
		{
			name: "IPv6 NodePorts only when kube-proxy has IPv6 rules",
			node: fakeProber{
				nft:    map[uint8][]string{4: {"nat"}},
				chains: map[string][]string{"iptables-nft nat": {"KUBE-SERVICES"}},
			},
			want:     []uint8{4},
			optional: []uint8{6},
			wantFam:  []familyDetection{{Family: 4, Nft: true}},
			wantBack: "nft",
			wantMode: modeIptables,
		},
		{
			name:    "Cilium kube-proxy replacement",
			node:    fakeProber{nft: map[uint8][]string{4: {"filter"}}, links: []string{"cilium_host"}},
			want:    []uint8{4},
			wantErr: "cilium monitor",
		},
		{
			name:    "nothing at all",
			node:    fakeProber{},
			want:    []uint8{4},
			wantErr: "no kube-proxy rules on this node for IPv4",
		},
		{
			name: "a wanted IPv6 without kube-proxy rules",
			node: fakeProber{
				nft:    map[uint8][]string{4: {"nat"}},
				chains: map[string][]string{"iptables-nft nat": {"KUBE-SERVICES"}},
			},
			want:    []uint8{4, 6},
			wantErr: "for IPv6",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := tt.node
			d, err := detect(context.Background(), &node, tt.want, tt.optional)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Detect error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if diff := cmp.Diff(tt.wantFam, d.Families); diff != "" {
				t.Errorf("families (-want +got):\n%s", diff)
			}
			if d.BackendName() != tt.wantBack || d.ModeName() != tt.wantMode {
				t.Errorf("backend %s mode %s, want %s %s", d.BackendName(), d.ModeName(), tt.wantBack, tt.wantMode)
			}
			if tt.wantWarn != "" && !strings.Contains(strings.Join(d.Warnings, "\n"), tt.wantWarn) {
				t.Errorf("warnings %q, want one containing %q", d.Warnings, tt.wantWarn)
			}
			if tt.wantCalls != nil {
				if diff := cmp.Diff(tt.wantCalls, node.calls); diff != "" {
					t.Errorf("commands run (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestDetectionBackends(t *testing.T) {
	tests := []struct {
		f    familyDetection
		want []ipBackend
	}{
		{familyDetection{Legacy: true}, []ipBackend{backendLegacy}},
		{familyDetection{Nft: true}, []ipBackend{backendNft}},
		{familyDetection{NftTable: true}, []ipBackend{backendNft}},
		{familyDetection{Legacy: true, NftTable: true}, []ipBackend{backendLegacy, backendNft}},
		{familyDetection{}, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.f.Backends()); diff != "" {
			t.Errorf("%+v.Backends() (-want +got):\n%s", tt.f, diff)
		}
	}
}
