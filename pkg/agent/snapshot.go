//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// A ruleset snapshot annotates hops with rule text. A kube-proxy node with
// 10,000 Services has 150,000 rules, nearly all in per-Service chains the
// traced packets never enter; indexing them all would cost the agent tens of
// MiB and iptables-nft-save needs ~10 s to print them. So the snapshot keeps
// every chain except per-Service chains not reachable from the traced
// destinations: positions inside the kept chains stay exact.

// perServiceIptables reports kube-proxy iptables-mode per-Service chains.
func perServiceIptables(chain string) bool {
	for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"} {
		if strings.HasPrefix(chain, p) {
			return true
		}
	}
	return false
}

// perServiceNft reports kube-proxy nftables-mode per-Service chains: their
// names embed "ns/name/proto/port" (service-, endpoint-, external-,
// firewall-HASH-...), unlike the fixed chains (firewall-check, services...).
func perServiceNft(chain string) bool { return strings.ContainsRune(chain, '/') }

// relevance decides whether a rule (or nft map element) line leads the traced
// packets into a per-Service chain.
type relevance struct {
	dsts      []netip.AddrPort
	nodePorts []uint16
	proto     string
}

func hasToken(line, tok string) bool {
	i := strings.Index(line, tok)
	for i >= 0 {
		end := i + len(tok)
		if end == len(line) || line[end] == ' ' || line[end] == ',' || line[end] == '}' {
			return true
		}
		j := strings.Index(line[end:], tok)
		if j < 0 {
			return false
		}
		i = end + j
	}
	return false
}

// iptablesLine: "-d IP/32 ... --dport P" or "--dport NODEPORT" (KUBE-NODEPORTS).
func (r relevance) iptablesLine(line string) bool {
	for _, d := range r.dsts {
		bits := "/32"
		if d.Addr().Is6() {
			bits = "/128"
		}
		if hasToken(line, "-d "+d.Addr().String()+bits) && hasToken(line, "--dport "+strconv.Itoa(int(d.Port()))) {
			return true
		}
	}
	for _, p := range r.nodePorts {
		// Keeping a chain too many costs little; missing one loses text.
		if hasToken(line, "--dport "+strconv.Itoa(int(p))) {
			return true
		}
	}
	return false
}

// nftLine: a service-ips element "IP . tcp . P : goto ..." or a
// service-nodeports element "tcp . NODEPORT : goto ...".
func (r relevance) nftLine(line string) bool {
	for _, d := range r.dsts {
		if strings.Contains(line, d.Addr().String()+" . "+r.proto+" . "+strconv.Itoa(int(d.Port()))+" ") {
			return true
		}
	}
	for _, p := range r.nodePorts {
		if strings.Contains(line, r.proto+" . "+strconv.Itoa(int(p))+" ") && !strings.Contains(line, ". "+r.proto+" .") {
			return true
		}
	}
	return false
}

// iptablesTargets returns the chains a rule line jumps or goes to.
func iptablesTargets(line string) []string {
	var out []string
	for _, flag := range []string{" -j ", " -g "} {
		if i := strings.Index(line, flag); i >= 0 {
			t := line[i+len(flag):]
			if j := strings.IndexByte(t, ' '); j >= 0 {
				t = t[:j]
			}
			out = append(out, t)
		}
	}
	return out
}

// nftTargets returns the chains a line names after goto/jump (also inside
// verdict maps: "0 : goto endpoint-...").
func nftTargets(line string) []string {
	var out []string
	for _, kw := range []string{"goto ", "jump "} {
		rest := line
		for {
			i := strings.Index(rest, kw)
			if i < 0 {
				break
			}
			rest = rest[i+len(kw):]
			end := strings.IndexAny(rest, " ,}\t")
			t := rest
			if end >= 0 {
				t = rest[:end]
			}
			out = append(out, strings.Trim(t, `"`))
		}
	}
	return out
}

// closure returns the per-Service chains reachable from roots over edges.
func closure(roots []string, edges map[string][]string) map[string]bool {
	keep := map[string]bool{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		c := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if keep[c] {
			continue
		}
		keep[c] = true
		queue = append(queue, edges[c]...)
	}
	return keep
}

// saveFilter prunes iptables-save output in two passes over its lines, so
// the output of a 150,000-rule node can be streamed instead of held: pass 1
// (scan) learns the jumps between per-Service chains and which of them the
// traced destinations enter; pass 2 (keep) says which lines to keep.
type saveFilter struct {
	rel   relevance
	edges map[string][]string
	roots []string
	keep  map[string]bool // nil: keep everything
}

func newSaveFilter(rel relevance) *saveFilter {
	return &saveFilter{rel: rel, edges: map[string][]string{}}
}

// scan is pass 1. line is not retained.
func (f *saveFilter) scan(line string) {
	if !strings.HasPrefix(line, "-A ") {
		return
	}
	chain := firstField(line[3:])
	targets := iptablesTargets(line)
	if perServiceIptables(chain) {
		for _, t := range targets {
			if perServiceIptables(t) {
				c := strings.Clone(chain)
				f.edges[c] = append(f.edges[c], strings.Clone(t))
			}
		}
		return
	}
	for _, t := range targets {
		if perServiceIptables(t) && f.rel.iptablesLine(line) {
			f.roots = append(f.roots, strings.Clone(t))
		}
	}
}

// decide ends pass 1. extra are chains to keep anyway (hash names of the
// traced Services). When no rule leads to a per-Service chain, everything
// is kept: the trace may go anywhere.
func (f *saveFilter) decide(extra []string) {
	if len(f.roots) > 0 {
		f.keep = closure(append(f.roots, extra...), f.edges)
	}
	f.edges = nil
}

// keepLine is pass 2.
func (f *saveFilter) keepLine(line string) bool {
	if f.keep == nil {
		return true
	}
	var chain string
	switch {
	case strings.HasPrefix(line, "-A "):
		chain = firstField(line[3:])
	case strings.HasPrefix(line, ":"):
		chain = firstField(line[1:])
	}
	return chain == "" || !perServiceIptables(chain) || f.keep[chain]
}

// pruneIptablesSave drops from iptables-save output the per-Service chains
// the traced destinations cannot reach (saveFilter over data in memory).
func pruneIptablesSave(data []byte, rel relevance, extra []string) []byte {
	f := newSaveFilter(rel)
	forEachLine(data, f.scan)
	f.decide(extra)
	if f.keep == nil {
		return data
	}
	var out bytes.Buffer
	out.Grow(len(data) / 8)
	forEachLine(data, func(line string) {
		if f.keepLine(line) {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	})
	return out.Bytes()
}

// pruneNftRuleset drops from `nft -a list` output the kube-proxy
// per-Service chains the traced destinations cannot reach.
func pruneNftRuleset(data []byte, rel relevance) []byte {
	edges := map[string][]string{}
	var roots []string
	cur := ""
	forEachLine(data, func(line string) {
		t := strings.TrimSpace(line)
		if name, ok := nftChainStart(t); ok {
			cur = name
			return
		}
		if t == "}" {
			cur = ""
			return
		}
		targets := nftTargets(t)
		if cur != "" && perServiceNft(cur) {
			for _, x := range targets {
				if perServiceNft(x) {
					edges[cur] = append(edges[cur], x)
				}
			}
			return
		}
		for _, x := range targets {
			if perServiceNft(x) && rel.nftLine(t) {
				roots = append(roots, x)
			}
		}
	})
	if len(roots) == 0 {
		return data
	}
	keep := closure(roots, edges)
	var out bytes.Buffer
	skipping := false
	forEachLine(data, func(line string) {
		t := strings.TrimSpace(line)
		if name, ok := nftChainStart(t); ok {
			skipping = perServiceNft(name) && !keep[name]
		}
		if !skipping {
			out.WriteString(line)
			out.WriteByte('\n')
		}
		if skipping && line == "\t}" {
			skipping = false
		}
	})
	return out.Bytes()
}

// nftChainStart parses "chain NAME { # handle N".
func nftChainStart(t string) (string, bool) {
	rest, ok := strings.CutPrefix(t, "chain ")
	if !ok {
		return "", false
	}
	name := firstField(rest)
	return strings.Trim(name, `"`), true
}

func firstField(s string) string {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

func forEachLine(data []byte, fn func(line string)) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			line, data = data, nil
		} else {
			line, data = data[:i], data[i+1:]
		}
		fn(string(line))
	}
}

// snapshotter reads the ruleset of one backend into a rules.Index.
type snapshotter struct {
	h   *Host
	cfg *Config
	det Detection
}

// take reads a backend's rules for every traced family. The returned hash
// identifies the kept text, so a re-read can tell whether anything that
// matters changed.
func (s *snapshotter) take(ctx context.Context, b Backend) (*rules.Index, uint64, error) {
	ix := rules.NewIndex()
	sum := fnv.New64a()
	rel := relevance{dsts: s.cfg.Dsts, nodePorts: s.cfg.NodePorts, proto: s.cfg.Proto}
	for _, f := range s.det.Families {
		fam := f.Family
		switch {
		case b == BackendLegacy && f.Legacy:
			data, err := s.legacySave(ctx, fam, rel)
			if err != nil {
				return nil, 0, err
			}
			sum.Write(stripSaveNoise(data))
			if err := ix.AddIptablesSave(data, fam); err != nil {
				return nil, 0, fmt.Errorf("index the %s ruleset: %w", b.SaveBinary(fam), err)
			}
		case b == BackendNft && (f.Nft || f.NftTable):
			save, nft, err := s.fetchNftIptables(ctx, fam, rel)
			if err != nil {
				return nil, 0, err
			}
			sum.Write(save)
			sum.Write(nft)
			if len(save) > 0 {
				if err := ix.AddIptablesSave(save, fam); err != nil {
					return nil, 0, fmt.Errorf("index the iptables-nft ruleset: %w", err)
				}
			}
			if len(nft) > 0 {
				if err := ix.AddNftRuleset(nft); err != nil {
					return nil, 0, fmt.Errorf("index the iptables-nft rule handles: %w", err)
				}
			}
			if f.NftTable {
				data, err := s.h.run(ctx, "nft", "-a", "list", "table", nftFamily(fam), "kube-proxy")
				if err != nil {
					return nil, 0, fmt.Errorf("snapshot kube-proxy's nftables table: %w", err)
				}
				data = pruneNftRuleset(data, rel)
				sum.Write(data)
				if err := ix.AddNftRuleset(data); err != nil {
					return nil, 0, fmt.Errorf("index kube-proxy's nftables table: %w", err)
				}
			}
		}
	}
	if len(s.cfg.Services) > 0 {
		ports := make([]rules.ServicePort, 0, len(s.cfg.Services))
		for _, sv := range s.cfg.Services {
			ports = append(ports, rules.ServicePort{Namespace: sv.Namespace, Name: sv.Name, Port: sv.Port, Proto: sv.Proto})
		}
		ix.LearnServices(ports)
	}
	return ix, sum.Sum64(), nil
}

// legacySave streams iptables-legacy-save twice through a saveFilter: the
// agent never holds the full output (20 MB for 10,000 Services), only what
// it keeps. A rewrite between the two reads may leave a new chain without
// text; the session's watcher re-reads after rewrites anyway.
func (s *snapshotter) legacySave(ctx context.Context, fam uint8, rel relevance) ([]byte, error) {
	bin := BackendLegacy.SaveBinary(fam)
	f := newSaveFilter(rel)
	if err := s.h.stream(ctx, bin, nil, f.scan); err != nil {
		return nil, fmt.Errorf("snapshot the ruleset: %w", err)
	}
	f.decide(s.serviceChains())
	var out bytes.Buffer
	if err := s.h.stream(ctx, bin, nil, func(line string) {
		if f.keepLine(line) {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}); err != nil {
		return nil, fmt.Errorf("snapshot the ruleset: %w", err)
	}
	return out.Bytes(), nil
}

func nftFamily(fam uint8) string {
	if fam == 6 {
		return "ip6"
	}
	return "ip"
}

// serviceChains returns the iptables chain names of the traced Services
// (their hashes), kept even if no rule in the snapshot names them.
func (s *snapshotter) serviceChains() []string {
	var out []string
	for _, sv := range s.cfg.Services {
		name := rules.ServicePortName(sv.Namespace, sv.Name, sv.Port)
		for _, p := range []string{"KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-"} {
			out = append(out, rules.ServiceChainName(p, name, sv.Proto))
		}
	}
	return out
}

// stripSaveNoise removes what changes in iptables-save output without the
// rules changing (the date comments, chain counters).
func stripSaveNoise(data []byte) []byte {
	var out bytes.Buffer
	forEachLine(data, func(line string) {
		if strings.HasPrefix(line, "#") {
			return
		}
		if strings.HasPrefix(line, ":") {
			if i := strings.LastIndexByte(line, '['); i > 0 {
				line = line[:i]
			}
		}
		out.WriteString(line)
		out.WriteByte('\n')
	})
	return out.Bytes()
}

// iptablesTables are the tables iptables-nft manages, in iptables-save order.
var iptablesTables = []string{"raw", "mangle", "nat", "filter", "security"}

// fetchNftIptables reads the iptables-nft tables chain by chain (fixed
// chains, then the per-Service chains reachable from the traced
// destinations): `iptables-nft -S CHAIN` is fast where iptables-nft-save
// is not. It returns the rules as iptables-save text and the same chains as
// `nft -a list chain` text, whose handles the kernel's trace events name.
func (s *snapshotter) fetchNftIptables(ctx context.Context, fam uint8, rel relevance) (save, nft []byte, err error) {
	n, err := s.h.nftables()
	if err != nil {
		return nil, nil, err
	}
	tables, err := n.Tables(fam)
	if err != nil {
		return nil, nil, err
	}
	bin := BackendNft.Binary(fam)
	var saveBuf, nftBuf bytes.Buffer
	for _, table := range iptablesTables {
		if !contains(tables, table) {
			continue
		}
		chains, ok, err := n.Chains(fam, table)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		type fetched struct {
			name   string
			policy string
			lines  []string
		}
		var got []fetched
		done := map[string]bool{}
		var queue []string
		var roots []string
		fetch := func(chain string) error {
			out, err := s.h.run(ctx, bin, "-w", "-t", table, "-S", chain)
			if err != nil {
				if isNoSuchChain(err) {
					return nil // deleted meanwhile
				}
				return fmt.Errorf("snapshot %s %s: %w", table, chain, err)
			}
			fc := fetched{name: chain, policy: "-"}
			forEachLine(out, func(line string) {
				switch {
				case strings.HasPrefix(line, "-P "):
					fc.policy = strings.TrimSpace(line[len("-P "+chain):])
				case strings.HasPrefix(line, "-A "):
					fc.lines = append(fc.lines, line)
					for _, t := range iptablesTargets(line) {
						if !perServiceIptables(t) || done[t] {
							continue
						}
						if perServiceIptables(chain) || rel.iptablesLine(line) {
							queue = append(queue, t)
						}
					}
				}
			})
			got = append(got, fc)
			return nil
		}
		for _, c := range chains {
			if perServiceIptables(c) {
				continue
			}
			done[c] = true
			if err := fetch(c); err != nil {
				return nil, nil, err
			}
		}
		roots = append(roots, queue...)
		if table == "nat" {
			queue = append(queue, s.serviceChains()...)
		}
		if len(roots) == 0 && table == "nat" && hasPerService(chains) {
			// Nothing leads to a per-Service chain: keep them all.
			queue = perServiceOnly(chains)
		}
		for len(queue) > 0 {
			c := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			if done[c] || !contains(chains, c) {
				continue
			}
			done[c] = true
			if err := fetch(c); err != nil {
				return nil, nil, err
			}
		}
		fmt.Fprintf(&saveBuf, "*%s\n", table)
		for _, fc := range got {
			fmt.Fprintf(&saveBuf, ":%s %s [0:0]\n", fc.name, fc.policy)
		}
		for _, fc := range got {
			for _, l := range fc.lines {
				saveBuf.WriteString(l)
				saveBuf.WriteByte('\n')
			}
		}
		saveBuf.WriteString("COMMIT\n")
		// Handles: one `nft -a list chain` per kept chain, merged into
		// one table block.
		fmt.Fprintf(&nftBuf, "table %s %s {\n", nftFamily(fam), table)
		for _, fc := range got {
			out, err := s.h.run(ctx, "nft", "-a", "list", "chain", nftFamily(fam), table, fc.name)
			if err != nil {
				if isNoSuchChain(err) {
					continue
				}
				return nil, nil, fmt.Errorf("snapshot handles of %s %s: %w", table, fc.name, err)
			}
			writeChainBlock(&nftBuf, out)
		}
		nftBuf.WriteString("}\n")
	}
	return saveBuf.Bytes(), nftBuf.Bytes(), nil
}

// writeChainBlock copies the chain block of `nft -a list chain` output
// (without its table wrapper).
func writeChainBlock(w *bytes.Buffer, out []byte) {
	in := false
	forEachLine(out, func(line string) {
		t := strings.TrimSpace(line)
		if _, ok := nftChainStart(t); ok {
			in = true
		}
		if in {
			w.WriteString(line)
			w.WriteByte('\n')
		}
		if in && line == "\t}" {
			in = false
		}
	})
}

func hasPerService(chains []string) bool {
	for _, c := range chains {
		if perServiceIptables(c) {
			return true
		}
	}
	return false
}

func perServiceOnly(chains []string) []string {
	var out []string
	for _, c := range chains {
		if perServiceIptables(c) {
			out = append(out, c)
		}
	}
	return out
}
