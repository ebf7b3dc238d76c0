//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
	log *log.Logger

	// foreign is set when the last nft read found tables besides
	// iptables-nft's and kube-proxy's: their base chains are not read, so
	// which tables run at a hook is not known (snapshotEnding.hookTables).
	foreign *atomic.Bool

	// mu guards what the reads of the iptables-nft tables keep: the
	// session's chain store, and the last read's parts to build an index
	// again with chains fetched since (rebuild).
	mu     sync.Mutex
	chains chainStore
	parts  []indexPart
	built  uint64 // the chain store's version the last index was built at
}

// indexPart is one input of an index: iptables-nft chains of a family to
// compose with the chain store, or text as read.
type indexPart struct {
	fam     uint8
	nft     bool           // text is nft -a list output, else iptables-save
	text    []byte         // nil for a composed part
	current []fetchedTable // composed: the chains read, by table
}

// take reads a backend's rules for every traced family. The returned hash
// identifies the kept text, so a re-read can tell whether anything that
// matters changed.
func (s *snapshotter) take(ctx context.Context, b ipBackend) (*rules.Index, uint64, error) {
	sum := fnv.New64a()
	traced := rules.Traced{Dsts: s.cfg.Dsts, NodePorts: s.cfg.NodePorts, Proto: s.cfg.Proto}
	var parts []indexPart
	for _, f := range s.det.Families {
		fam := f.Family
		switch {
		case b == backendLegacy && f.Legacy:
			data, err := s.legacySave(ctx, fam, traced)
			if err != nil {
				return nil, 0, err
			}
			sum.Write(stripSaveNoise(data))
			parts = append(parts, indexPart{fam: fam, text: data})
		case b == backendNft && (f.Nft || f.NftTable):
			current, err := s.fetchNftIptables(ctx, fam, traced)
			if err != nil {
				return nil, 0, err
			}
			for _, t := range current {
				for _, c := range t.chains {
					sum.Write(c.block)
				}
			}
			parts = append(parts, indexPart{fam: fam, current: current})
			if f.NftTable {
				data, err := s.h.run(ctx, "nft", "-a", "list", "table", nftFamily(fam), "kube-proxy")
				if err != nil {
					return nil, 0, fmt.Errorf("snapshot kube-proxy's nftables table: %w", err)
				}
				data = pruneNftRuleset(data, traced)
				sum.Write(data)
				parts = append(parts, indexPart{fam: fam, nft: true, text: data})
			}
		}
	}
	if b == backendNft && s.foreign != nil {
		foreign, err := s.foreignTables()
		s.foreign.Store(foreign || err != nil)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b == backendNft {
		s.parts = parts
	}
	ix, err := s.build(parts)
	return ix, sum.Sum64(), err
}

// foreignTables reports whether the kernel has nft tables of the traced
// families (or inet) that the snapshot does not read.
func (s *snapshotter) foreignTables() (bool, error) {
	n, err := s.h.nftables()
	if err != nil {
		return false, err
	}
	inet, err := n.Tables(rules.FamilyInet)
	if err != nil || len(inet) > 0 {
		return len(inet) > 0, err
	}
	for _, f := range s.det.Families {
		tables, err := n.Tables(f.Family)
		if err != nil {
			return false, err
		}
		for _, t := range tables {
			if !slices.Contains(iptablesTables, t) && !(t == rules.KubeProxyTable && f.NftTable) {
				return true, nil
			}
		}
	}
	return false, nil
}

// rebuild indexes the last nft read again, with the chains read since
// (chain store): no ruleset read. It returns nil when no chain was read
// since the last index was built.
func (s *snapshotter) rebuild() (*rules.Index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.chains.version == s.built {
		return nil, nil
	}
	return s.build(s.parts)
}

// build indexes parts; the caller holds s.mu.
func (s *snapshotter) build(parts []indexPart) (*rules.Index, error) {
	s.built = s.chains.version
	ix := rules.NewIndex()
	for _, p := range parts {
		switch {
		case p.text == nil:
			save, nft := s.chains.compose(p.fam, p.current)
			if len(save) > 0 {
				if err := ix.AddIptablesSave(save, p.fam); err != nil {
					return nil, fmt.Errorf("index the iptables-nft ruleset: %w", err)
				}
			}
			if len(nft) > 0 {
				if err := ix.AddNftRuleset(nft); err != nil {
					return nil, fmt.Errorf("index the iptables-nft rule handles: %w", err)
				}
			}
		case p.nft:
			if err := ix.AddNftRuleset(p.text); err != nil {
				return nil, fmt.Errorf("index kube-proxy's nftables table: %w", err)
			}
		default:
			if err := ix.AddIptablesSave(p.text, p.fam); err != nil {
				return nil, fmt.Errorf("index the %s ruleset: %w", backendLegacy.SaveBinary(p.fam), err)
			}
		}
	}
	if ports := s.servicePorts(); len(ports) > 0 {
		ix.LearnServices(ports)
	}
	return ix, nil
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

// fetchedTable is one iptables-nft table's chains as read.
type fetchedTable struct {
	table  string
	chains []*chainText
}

// chainText is one iptables-nft chain: its policy and rules as iptables -S
// prints them, and its `nft -a list chain` block, whose handles the
// kernel's trace events name.
type chainText struct {
	name   string
	policy string
	lines  []string
	block  []byte
}

// fetchNftIptables reads the iptables-nft tables, all at once: each whole
// (two commands, readTable), but a big nat table chain by chain (its fixed
// chains, then the per-Service chains reachable from the traced
// destinations, one level of the walk at a time): `iptables-nft -S CHAIN`
// is fast where reading a nat table of 10,000 Services is not. Every chain
// read is also kept in the chain store.
func (s *snapshotter) fetchNftIptables(ctx context.Context, fam uint8, t rules.Traced) ([]fetchedTable, error) {
	n, err := s.h.nftables()
	if err != nil {
		return nil, err
	}
	tables, err := n.Tables(fam)
	if err != nil {
		return nil, err
	}
	var present []string
	for _, table := range iptablesTables {
		if slices.Contains(tables, table) {
			present = append(present, table)
		}
	}
	out := make([]fetchedTable, len(present))
	errs := make([]error, len(present))
	var wg sync.WaitGroup
	for i, table := range present {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].table = table
			if table == "nat" {
				out[i].chains, errs[i] = s.fetchNat(ctx, fam, t)
				return
			}
			out[i].chains, errs[i] = s.readTable(ctx, fam, table)
			if errs[i] != nil && isIncompatibleChain(errs[i]) {
				// A chain iptables-nft cannot print fails the whole
				// table: read the chains one by one, that one without text.
				out[i].chains, errs[i] = s.fetchTableChains(ctx, fam, table)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, ft := range out {
		for _, c := range ft.chains {
			s.chains.keep(fam, ft.table, c)
		}
	}
	s.mu.Unlock()
	return out, nil
}

// fetchTableChains reads every chain of one table, chain by chain.
func (s *snapshotter) fetchTableChains(ctx context.Context, fam uint8, table string) ([]*chainText, error) {
	n, err := s.h.nftables()
	if err != nil {
		return nil, err
	}
	chains, ok, err := n.Chains(fam, table)
	if err != nil || !ok {
		return nil, err
	}
	return s.fetchChainsAtOnce(ctx, fam, table, chains)
}

// natWholeMax is the most chains a nat table may have to be read whole and
// pruned here; a bigger one (kube-proxy's per-Service and per-endpoint
// chains of a big cluster) is read chain by chain along the walk.
const natWholeMax = 300

// fetchNat reads the nat table's fixed chains and the per-Service chains the
// traced destinations reach (nil when iptables-nft has no nat table).
func (s *snapshotter) fetchNat(ctx context.Context, fam uint8, t rules.Traced) ([]*chainText, error) {
	n, err := s.h.nftables()
	if err != nil {
		return nil, err
	}
	chains, ok, err := n.Chains(fam, "nat")
	if err != nil || !ok {
		return nil, err
	}
	r := rules.NewReach(rules.IptablesSyntax, t)
	if len(chains) <= natWholeMax {
		all, err := s.readTable(ctx, fam, "nat")
		if err == nil {
			for _, c := range all {
				for _, l := range c.lines {
					r.Line(c.name, l)
				}
			}
			r.Also(rules.ServiceChains(s.servicePorts())...)
			r.Next()
			return slices.DeleteFunc(all, func(c *chainText) bool { return !r.Keep(c.name) }), nil
		}
		if !isIncompatibleChain(err) {
			return nil, err
		}
		r = rules.NewReach(rules.IptablesSyntax, t) // chain by chain, as for a big table
	}
	var kept []*chainText
	fetch := func(names []string) error {
		got, err := s.fetchChainsAtOnce(ctx, fam, "nat", names)
		for _, c := range got {
			for _, l := range c.lines {
				r.Line(c.name, l)
			}
			kept = append(kept, c)
		}
		return err
	}
	var fixed, perService []string
	isPerService := map[string]bool{}
	for _, c := range chains {
		if r.PerService(c) {
			perService = append(perService, c)
			isPerService[c] = true
		} else {
			fixed = append(fixed, c)
		}
	}
	if err := fetch(fixed); err != nil {
		return nil, err
	}
	if !r.Rooted() {
		// Nothing leads to a per-Service chain: keep them all.
		r.Also(perService...)
	}
	r.Also(rules.ServiceChains(s.servicePorts())...)
	// Fetch what the walk reaches, and what those chains lead to.
	for next := r.Next(); len(next) > 0; next = r.Next() {
		var level []string
		for _, c := range next {
			if isPerService[c] {
				level = append(level, c)
			}
		}
		if err := fetch(level); err != nil {
			return nil, err
		}
	}
	return kept, nil
}

// chainReaders bounds the chain reads of one table under way at once.
const chainReaders = 4

// fetchChainsAtOnce reads chains of one table, a few at a time, and returns
// those read, in the order asked (gone and unprintable ones left out).
func (s *snapshotter) fetchChainsAtOnce(ctx context.Context, fam uint8, table string, names []string) ([]*chainText, error) {
	got := make([]*chainText, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, chainReaders)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			got[i], errs[i] = s.fetchChain(ctx, fam, table, name)
		}()
	}
	wg.Wait()
	return slices.DeleteFunc(got, func(c *chainText) bool { return c == nil }), errors.Join(errs...)
}

// fetchChain reads one iptables-nft chain (nil when it is gone, or when
// iptables-nft cannot print it: that chain has no text, the others do).
func (s *snapshotter) fetchChain(ctx context.Context, fam uint8, table, chain string) (*chainText, error) {
	out, err := s.h.run(ctx, backendNft.Binary(fam), "-w", "-t", table, "-S", chain)
	if err != nil && isIncompatibleChain(err) {
		// Often a chain caught mid-rewrite by its owner: once more.
		time.Sleep(50 * time.Millisecond)
		out, err = s.h.run(ctx, backendNft.Binary(fam), "-w", "-t", table, "-S", chain)
	}
	if err != nil {
		switch {
		case isNoSuchChain(err):
			return nil, nil // deleted meanwhile
		case isIncompatibleChain(err):
			s.log.Printf("no rule text for chain %s %s: %v", table, chain, err)
			return nil, nil
		}
		return nil, fmt.Errorf("snapshot %s %s: %w", table, chain, err)
	}
	c := &chainText{name: chain, policy: "-"}
	forEachLine(out, func(line string) {
		switch {
		case strings.HasPrefix(line, "-P "):
			c.policy = strings.TrimSpace(line[len("-P "+chain):])
		case strings.HasPrefix(line, "-A "):
			c.lines = append(c.lines, line)
		}
	})
	nft, err := s.h.run(ctx, "nft", "-a", "list", "chain", nftFamily(fam), table, chain)
	if err != nil {
		if isNoSuchChain(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("snapshot handles of %s %s: %w", table, chain, err)
	}
	var block bytes.Buffer
	writeChainBlock(&block, nft)
	c.block = block.Bytes()
	return c, nil
}

// fetchChains reads chains a packet named that the index lacks, into the
// chain store (for rebuild). It reports whether any was read.
func (s *snapshotter) fetchChains(ctx context.Context, fam uint8, want []tableChain) (bool, error) {
	got := false
	for _, w := range want {
		c, err := s.fetchChain(ctx, fam, w.table, w.chain)
		if err != nil {
			return got, err
		}
		if c == nil {
			continue
		}
		s.mu.Lock()
		s.chains.keep(fam, w.table, c)
		s.mu.Unlock()
		got = true
	}
	return got, nil
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
