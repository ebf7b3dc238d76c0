package rules

import (
	"slices"
	"strings"
)

// LaterBaseChain reports whether a base chain of another nft table (or
// another base chain of the same one) hangs off the same hook as table/chain,
// in the same family, at a priority that is not lower: netfilter runs it
// after this chain (at an equal priority it may), so a packet this chain
// accepts can still be traced, and dropped, there. kube-proxy's nftables
// mode puts its filter-input next to iptables' filter INPUT, both at
// priority filter. A regular chain runs in the base chains whose jumps and
// gotos reach it (iptables' KUBE-POSTROUTING only in nat POSTROUTING); one
// no jump of the listing reaches (entered through a verdict map, say)
// counts every base chain of its table. It is false for tables without an
// nft listing.
func (ix *Index) LaterBaseChain(family uint8, table, chain string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	tv := ix.views(family, table)
	if tv == nil || tv.nft == nil {
		return false
	}
	own := tv.nft.bases
	if i, ok := tv.nft.byName[chain]; ok {
		if e := tv.nft.entryChains()[i]; len(e) > 0 {
			own = e
		}
	}
	for _, i := range own {
		self := &tv.nft.chains[i]
		for key, other := range ix.tables {
			if other.nft == nil || (key.family != family && key.family != FamilyInet) {
				continue
			}
			for _, j := range other.nft.bases {
				cd := &other.nft.chains[j]
				if cd != self && cd.hook == self.hook && cd.prio >= self.prio {
					return true
				}
			}
		}
	}
	return false
}

// entryChains returns, for every chain of the snapshot, the base chains
// whose traversal can enter it through jumps and gotos (a base chain
// enters itself), computed once.
func (s *snapshot) entryChains() [][]int32 {
	s.entryOnce.Do(func() {
		s.entries = make([][]int32, len(s.chains))
		seen := make([]bool, len(s.chains))
		var stack []int32
		for _, b := range s.bases {
			clear(seen)
			stack = append(stack[:0], b)
			seen[b] = true
			for len(stack) > 0 {
				c := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				s.entries[c] = append(s.entries[c], b)
				cd := &s.chains[c]
				for _, r := range s.rules[cd.start : cd.start+cd.n] {
					if r.Jump == "" {
						continue
					}
					if n, ok := s.byName[r.Jump]; ok && !seen[n] {
						seen[n] = true
						stack = append(stack, n)
					}
				}
			}
		}
	})
	return s.entries
}

// HookChain is a base chain that runs at a hook: its table, and whether it
// is of type nat. nf_nat runs the nat chains of a hook in turn until one
// translates the packet (the others are then skipped).
type HookChain struct {
	Table string
	Nat   bool
}

// HookTables lists the base chains of the nft tables of a family (and
// inet) that run at hook ("postrouting", "input", as nft names them). Each
// base chain a packet traverses ends in one trace event (an accepting rule
// or its policy), nat chains ending early once one of them translated it,
// so a packet past all of them is done at the hook. nil when no nft listing
// says.
func (ix *Index) HookTables(family uint8, hook string) []HookChain {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []HookChain
	for key, tv := range ix.tables {
		if tv.nft == nil || (key.family != family && key.family != FamilyInet) {
			continue
		}
		for _, i := range tv.nft.bases {
			if cd := &tv.nft.chains[i]; cd.hook == hook {
				out = append(out, HookChain{Table: key.name, Nat: cd.natType})
			}
		}
	}
	slices.SortFunc(out, func(a, b HookChain) int { return strings.Compare(a.Table, b.Table) })
	return out
}

// BaseChain reports whether table/chain is a base chain (one a hook
// enters) and whether that is known: from the snapshot when it lists the
// chain, else from iptables' convention for its own tables (a built-in
// chain is named after its hook, a user chain never is).
func (ix *Index) BaseChain(family uint8, table, chain string) (base, known bool) {
	if ix != nil {
		ix.mu.RLock()
		_, cd := ix.views(family, table).find(chain)
		ix.mu.RUnlock()
		if cd != nil {
			return cd.policy != "", true
		}
	}
	switch table {
	case "raw", "mangle", "nat", "filter", "security":
		return builtinHook(chain) != "", true
	}
	return false, false
}
