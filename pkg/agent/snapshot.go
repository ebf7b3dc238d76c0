//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// A snapshot keeps every chain except the kube-proxy per-Service chains
// the traced packets cannot reach (rules.Reach): positions inside the kept
// chains stay exact. These are the three ways the agent reads a ruleset
// through that walk: streamed iptables-save (legacySave, pruneIptablesSave),
// nft list output (pruneNftRuleset) and iptables-nft chain by chain
// (fetchNftIptables).

// saveChain returns the chain an iptables-save line declares or appends
// to ("" for other lines).
func saveChain(line string) string {
	switch {
	case strings.HasPrefix(line, "-A "):
		return firstField(line[3:])
	case strings.HasPrefix(line, ":"):
		return firstField(line[1:])
	}
	return ""
}

// scanSave is the first pass over iptables-save output: r learns its rule
// lines (line is not retained).
func scanSave(r *rules.Reach) func(line string) {
	return func(line string) {
		if strings.HasPrefix(line, "-A ") {
			r.Line(firstField(line[3:]), line)
		}
	}
}

// keepSaveLine is the second pass: whether a snapshot keeps the line.
func keepSaveLine(r *rules.Reach, line string) bool {
	c := saveChain(line)
	return c == "" || r.Keep(c)
}

// pruneIptablesSave drops from iptables-save output the per-Service chains
// the traced packets cannot reach; extra are chains to keep anyway.
func pruneIptablesSave(data []byte, t rules.Traced, extra []string) []byte {
	r := rules.NewReach(rules.IptablesSyntax, t)
	forEachLine(data, scanSave(r))
	if !r.Rooted() {
		return data
	}
	r.Also(extra...)
	r.Next()
	var out bytes.Buffer
	out.Grow(len(data) / 8)
	forEachLine(data, func(line string) {
		if keepSaveLine(r, line) {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	})
	return out.Bytes()
}

// pruneNftRuleset drops from `nft -a list` output the kube-proxy
// per-Service chains the traced packets cannot reach.
func pruneNftRuleset(data []byte, t rules.Traced) []byte {
	r := rules.NewReach(rules.NftSyntax, t)
	cur := ""
	forEachLine(data, func(line string) {
		l := strings.TrimSpace(line)
		if name, ok := nftChainStart(l); ok {
			cur = name
			return
		}
		if l == "}" {
			cur = ""
			return
		}
		// Outside a chain: map elements (service-ips, service-nodeports).
		r.Line(cur, l)
	})
	if !r.Rooted() {
		return data
	}
	r.Next()
	var out bytes.Buffer
	skipping := false
	forEachLine(data, func(line string) {
		if name, ok := nftChainStart(strings.TrimSpace(line)); ok {
			skipping = !r.Keep(name)
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
	h   *host
	cfg *Config
	det detection
}

// take reads a backend's rules for every traced family. The returned hash
// identifies the kept text, so a re-read can tell whether anything that
// matters changed.
func (s *snapshotter) take(ctx context.Context, b ipBackend) (*rules.Index, uint64, error) {
	ix := rules.NewIndex()
	sum := fnv.New64a()
	traced := rules.Traced{Dsts: s.cfg.Dsts, NodePorts: s.cfg.NodePorts, Proto: s.cfg.Proto}
	for _, f := range s.det.Families {
		fam := f.Family
		switch {
		case b == backendLegacy && f.Legacy:
			data, err := s.legacySave(ctx, fam, traced)
			if err != nil {
				return nil, 0, err
			}
			sum.Write(stripSaveNoise(data))
			if err := ix.AddIptablesSave(data, fam); err != nil {
				return nil, 0, fmt.Errorf("index the %s ruleset: %w", b.SaveBinary(fam), err)
			}
		case b == backendNft && (f.Nft || f.NftTable):
			save, nft, err := s.fetchNftIptables(ctx, fam, traced)
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
				data = pruneNftRuleset(data, traced)
				sum.Write(data)
				if err := ix.AddNftRuleset(data); err != nil {
					return nil, 0, fmt.Errorf("index kube-proxy's nftables table: %w", err)
				}
			}
		}
	}
	if ports := s.servicePorts(); len(ports) > 0 {
		ix.LearnServices(ports)
	}
	return ix, sum.Sum64(), nil
}

// legacySave streams iptables-legacy-save twice through a rules.Reach: the
// agent never holds the full output (20 MB for 10,000 Services), only what
// it keeps. A rewrite between the two reads may leave a new chain without
// text; the session's watcher re-reads after rewrites anyway.
func (s *snapshotter) legacySave(ctx context.Context, fam uint8, t rules.Traced) ([]byte, error) {
	bin := backendLegacy.SaveBinary(fam)
	r := rules.NewReach(rules.IptablesSyntax, t)
	if err := s.h.stream(ctx, bin, nil, scanSave(r)); err != nil {
		return nil, fmt.Errorf("snapshot the ruleset: %w", err)
	}
	r.Also(rules.ServiceChains(s.servicePorts())...)
	r.Next()
	var out bytes.Buffer
	if err := s.h.stream(ctx, bin, nil, func(line string) {
		if keepSaveLine(r, line) {
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

// servicePorts are the traced Services' ports, as package rules knows them.
func (s *snapshotter) servicePorts() []rules.ServicePort {
	ports := make([]rules.ServicePort, 0, len(s.cfg.Services))
	for _, sv := range s.cfg.Services {
		ports = append(ports, rules.ServicePort{Namespace: sv.Namespace, Name: sv.Name, Port: sv.Port, Proto: sv.Proto})
	}
	return ports
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
func (s *snapshotter) fetchNftIptables(ctx context.Context, fam uint8, t rules.Traced) (save, nft []byte, err error) {
	n, err := s.h.nftables()
	if err != nil {
		return nil, nil, err
	}
	tables, err := n.Tables(fam)
	if err != nil {
		return nil, nil, err
	}
	bin := backendNft.Binary(fam)
	var saveBuf, nftBuf bytes.Buffer
	for _, table := range iptablesTables {
		if !slices.Contains(tables, table) {
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
		r := rules.NewReach(rules.IptablesSyntax, t)
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
					r.Line(chain, line)
				}
			})
			got = append(got, fc)
			return nil
		}
		var perService []string
		isPerService := map[string]bool{}
		for _, c := range chains {
			if r.PerService(c) {
				perService = append(perService, c)
				isPerService[c] = true
				continue
			}
			if err := fetch(c); err != nil {
				return nil, nil, err
			}
		}
		if table == "nat" {
			if !r.Rooted() {
				// Nothing leads to a per-Service chain: keep them all.
				r.Also(perService...)
			}
			r.Also(rules.ServiceChains(s.servicePorts())...)
		}
		// Fetch what the walk reaches, and what those chains lead to.
		for next := r.Next(); len(next) > 0; next = r.Next() {
			for _, c := range next {
				if !isPerService[c] {
					continue
				}
				if err := fetch(c); err != nil {
					return nil, nil, err
				}
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
