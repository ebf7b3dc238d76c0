package rules

// LaterBaseChain reports whether a base chain of another nft table (or
// another base chain of the same one) hangs off the same hook as table/chain,
// in the same family, at a priority that is not lower: netfilter runs it
// after this chain (at an equal priority it may), so a packet this chain
// accepts can still be traced, and dropped, there. kube-proxy's nftables
// mode puts its filter-input next to iptables' filter INPUT, both at
// priority filter. For a regular chain, which runs in whatever base chain
// jumped to it, any base chain of the table counts. It is false for tables
// without an nft listing.
func (ix *Index) LaterBaseChain(family uint8, table, chain string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	tv := ix.views(family, table)
	if tv == nil || tv.nft == nil {
		return false
	}
	own := tv.nft.bases
	if self := tv.nft.chain(chain); self != nil && self.hook != "" {
		for k, i := range own {
			if &tv.nft.chains[i] == self {
				own = own[k : k+1]
				break
			}
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
