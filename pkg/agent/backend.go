//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// ipBackend is an iptables backend.
type ipBackend string

// The two iptables backends.
const (
	backendLegacy ipBackend = "legacy"
	backendNft    ipBackend = "nft"
)

// proxyMode is how kube-proxy programs Services on the node.
type proxyMode string

// kube-proxy modes (record.Ready.Mode).
const (
	modeIptables proxyMode = "iptables"
	modeNftables proxyMode = "nftables"
	modeIPVS     proxyMode = "ipvs"
	modeNone     proxyMode = "none"
)

// Binary returns the iptables binary of a backend and family
// ("iptables-legacy", "ip6tables-nft", ...).
func (b ipBackend) Binary(family uint8) string {
	p := "iptables"
	if family == 6 {
		p = "ip6tables"
	}
	return p + "-" + string(b)
}

// SaveBinary returns the iptables-save binary of a backend and family.
func (b ipBackend) SaveBinary(family uint8) string {
	p := "iptables"
	if family == 6 {
		p = "ip6tables"
	}
	return p + "-" + string(b) + "-save"
}

// familyDetection is what one IP family of the node looks like.
type familyDetection struct {
	Family uint8
	// Legacy and Nft report that kube-proxy's iptables chains (its canary
	// or KUBE-SERVICES) live in that backend.
	Legacy, Nft bool
	// NftTable reports kube-proxy's nftables-mode table (ip|ip6 kube-proxy).
	NftTable bool
	// IPVS reports the kube-ipvs0 link (kube-proxy ipvs mode).
	IPVS bool
	// Cilium reports signs of Cilium (cilium_host link or CILIUM_ chains).
	Cilium bool
}

// Mode is the kube-proxy mode of this family.
func (f familyDetection) Mode() proxyMode {
	switch {
	case f.IPVS && (f.Legacy || f.Nft):
		return modeIPVS
	case f.Legacy || f.Nft:
		return modeIptables
	case f.NftTable:
		return modeNftables
	}
	return modeNone
}

// Backends returns the backends whose raw table must hold TRACE rules: the
// ones holding kube-proxy's chains, and nft for nftables mode (an iptables-nft
// TRACE rule sets nftrace, which follows the packet into kube-proxy's table).
func (f familyDetection) Backends() []ipBackend {
	var out []ipBackend
	if f.Legacy {
		out = append(out, backendLegacy)
	}
	if f.Nft || f.NftTable {
		out = append(out, backendNft)
	}
	return out
}

// detection is the node's backend and mode for each traced family.
type detection struct {
	Families []familyDetection
	Warnings []string
}

// Backends returns every backend used by any family, legacy first.
func (d detection) Backends() []ipBackend {
	var legacy, nft bool
	for _, f := range d.Families {
		for _, b := range f.Backends() {
			legacy = legacy || b == backendLegacy
			nft = nft || b == backendNft
		}
	}
	var out []ipBackend
	if legacy {
		out = append(out, backendLegacy)
	}
	if nft {
		out = append(out, backendNft)
	}
	return out
}

// BackendName is record.Ready.Backend: legacy, nft or both.
func (d detection) BackendName() string {
	b := d.Backends()
	switch {
	case len(b) == 2:
		return "both"
	case len(b) == 1:
		return string(b[0])
	}
	return "none"
}

// ModeName is record.Ready.Mode: the first family's mode (families of one
// node agree in practice; a disagreement is reported as a warning).
func (d detection) ModeName() proxyMode {
	if len(d.Families) == 0 {
		return modeNone
	}
	return d.Families[0].Mode()
}

// Family returns the detection for family 4 or 6.
func (d detection) Family(fam uint8) (familyDetection, bool) {
	for _, f := range d.Families {
		if f.Family == fam {
			return f, true
		}
	}
	return familyDetection{}, false
}

// prober is what detection needs from the host; the real one is *host.
type prober interface {
	legacyTables(family uint8) ([]string, error)
	nftTables(family uint8) ([]string, error)
	nftChainExists(family uint8, table, chain string) (bool, error)
	run(ctx context.Context, name string, args ...string) ([]byte, error)
	linkExists(name string) bool
}

// detect finds where kube-proxy's rules live for the families in want
// (4 and/or 6). It fails with an explanation when a wanted family has no
// kube-proxy dataplane netfilter can trace. Optional says families that are
// traced only if present (IPv6 NodePorts).
func detect(ctx context.Context, h prober, want, optional []uint8) (detection, error) {
	var d detection
	ipvs := h.linkExists("kube-ipvs0")
	cilium := h.linkExists("cilium_host")
	var errs []error
	check := func(fam uint8, required bool) error {
		f := familyDetection{Family: fam, IPVS: ipvs, Cilium: cilium}
		var err error
		if f.Legacy, err = hasKubeProxyChains(ctx, h, backendLegacy, fam); err != nil {
			return err
		}
		nftTables, err := h.nftTables(fam)
		if err != nil {
			return fmt.Errorf("list nftables tables: %w", err)
		}
		if f.Nft, err = hasKubeProxyChainsNft(ctx, h, fam, nftTables); err != nil {
			return err
		}
		f.NftTable = slices.Contains(nftTables, "kube-proxy")
		if f.Mode() == modeNone {
			if required {
				errs = append(errs, noKubeProxyError(f))
			}
			return nil
		}
		if (f.Legacy || f.Nft) && f.NftTable {
			d.Warnings = append(d.Warnings, fmt.Sprintf("IPv%d: both kube-proxy iptables chains and the nftables table \"kube-proxy\" exist (a leftover of a mode switch?): tracing both", fam))
		}
		if f.Legacy && f.Nft {
			d.Warnings = append(d.Warnings, fmt.Sprintf("IPv%d: kube-proxy chains exist in both iptables-legacy and iptables-nft: tracing both backends", fam))
		}
		if f.Legacy && !f.Nft && slices.Contains(nftTables, "filter") {
			// kube-proxy in legacy, a network plugin in iptables-nft (the
			// local cluster's kube-router): its policy chains are not traced.
			for _, e := range rules.FirewallEntryChains {
				ok, err := h.nftChainExists(fam, "filter", e.Chain)
				if err != nil {
					return err
				}
				if ok {
					d.Warnings = append(d.Warnings, fmt.Sprintf("IPv%d: %s's NetworkPolicy chains (%s) are in iptables-nft but kube-proxy's are in iptables-legacy, and only the legacy tables are traced: a packet a policy drops shows as a path that ends without a verdict; check `iptables-nft -S %s` on the node", fam, e.CNI, e.Chain, e.Chain))
				}
			}
		}
		if f.IPVS {
			d.Warnings = append(d.Warnings, "kube-proxy runs in ipvs mode: IPVS picks the endpoint outside netfilter, so traces show the Service address up to INPUT and the endpoint only after IPVS rewrote it")
		}
		d.Families = append(d.Families, f)
		return nil
	}
	for _, fam := range want {
		if err := check(fam, true); err != nil {
			return d, err
		}
	}
	for _, fam := range optional {
		if _, ok := d.Family(fam); ok {
			continue
		}
		if err := check(fam, false); err != nil {
			return d, err
		}
	}
	if err := errors.Join(errs...); err != nil {
		return d, err
	}
	sort.Slice(d.Families, func(i, j int) bool { return d.Families[i].Family < d.Families[j].Family })
	if len(d.Families) > 1 && d.Families[0].Mode() != d.Families[1].Mode() {
		d.Warnings = append(d.Warnings, fmt.Sprintf("kube-proxy mode differs per family: IPv4 %s, IPv6 %s", d.Families[0].Mode(), d.Families[1].Mode()))
	}
	return d, nil
}

func noKubeProxyError(f familyDetection) error {
	why := "no kube-proxy rules on this node for IPv%d: neither iptables chains (KUBE-SERVICES, KUBE-PROXY-CANARY) in iptables-legacy or iptables-nft nor an nftables table \"kube-proxy\""
	switch {
	case f.Cilium:
		why += "; Cilium is present: its kube-proxy replacement balances Services in eBPF, which netfilter TRACE cannot see (use `cilium monitor` or Hubble instead)"
	default:
		why += "; the Services may be handled by an eBPF dataplane (Cilium, Calico eBPF) that netfilter TRACE cannot see, or kube-proxy is not running on this node: check `kubectl -n kube-system get pods -o wide`"
	}
	return fmt.Errorf(why, f.Family)
}

// hasKubeProxyChains reports whether a legacy family's tables hold
// kube-proxy chains. It reads the tables that exist only: asking for a legacy
// table that is not there would create it.
func hasKubeProxyChains(ctx context.Context, h prober, b ipBackend, fam uint8) (bool, error) {
	tables, err := h.legacyTables(fam)
	if err != nil {
		return false, err
	}
	return kubeProxyChainsIn(ctx, h, b, fam, tables)
}

// hasKubeProxyChainsNft asks the kernel directly: listing an iptables-nft
// table with iptables-nft -S costs 100+ ms on a 10,000-Service node.
func hasKubeProxyChainsNft(ctx context.Context, h prober, fam uint8, tables []string) (bool, error) {
	for _, tc := range [][2]string{{"mangle", "KUBE-PROXY-CANARY"}, {"nat", "KUBE-SERVICES"}} {
		if !slices.Contains(tables, tc[0]) {
			continue
		}
		ok, err := h.nftChainExists(fam, tc[0], tc[1])
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// kubeProxyChainsIn looks for kube-proxy's canary in the legacy mangle table
// first (small: cheap even with 10,000 Services), then for KUBE-SERVICES in
// nat.
func kubeProxyChainsIn(ctx context.Context, h prober, b ipBackend, fam uint8, tables []string) (bool, error) {
	bin := b.Binary(fam)
	if slices.Contains(tables, "mangle") {
		out, err := h.run(ctx, bin, "-w", "-t", "mangle", "-S")
		if err != nil {
			return false, fmt.Errorf("read %s mangle table: %w", bin, err)
		}
		if strings.Contains(string(out), "-N KUBE-PROXY-CANARY\n") {
			return true, nil
		}
	}
	if !slices.Contains(tables, "nat") {
		return false, nil
	}
	// Listing one rule of one chain keeps the output small; the chain's
	// absence is an error iptables reports.
	_, err := h.run(ctx, bin, "-w", "-t", "nat", "-S", "KUBE-SERVICES", "1")
	if err != nil {
		if isNoSuchChain(err) {
			return false, nil
		}
		return false, fmt.Errorf("look for KUBE-SERVICES in %s nat: %w", bin, err)
	}
	return true, nil
}
