//go:build linux

package agent

import (
	"bytes"
	"fmt"
)

// The chain store keeps every iptables-nft chain the session read. A
// CNI that renames its chains at each sync (kube-router's KUBE-POD-FW-* and
// KUBE-NWPLCY-* carry the sync's version in their names) deletes the
// chains a packet just crossed moments later; nft rule handles are never
// reused within a table, so the text read of a deleted chain still names
// the hops of the packets that crossed it.

// maxStoredChains bounds the chains kept per table beyond those in the
// ruleset now (the oldest go first): kube-router makes a few per pod and
// sync.
const maxStoredChains = 4096

type tableChain struct{ table, chain string }

type storeKey struct {
	fam   uint8
	table string
}

type chainStore struct {
	tables map[storeKey]*storedTable
	// version counts the chains kept: an index built at this version
	// knows them all.
	version uint64
}

type storedTable struct {
	byName map[string]*chainText
	order  []string // first kept first
}

// keep stores c (a newer read of a chain replaces the older one).
func (cs *chainStore) keep(fam uint8, table string, c *chainText) {
	if cs.tables == nil {
		cs.tables = map[storeKey]*storedTable{}
	}
	k := storeKey{fam, table}
	st := cs.tables[k]
	if st == nil {
		st = &storedTable{byName: map[string]*chainText{}}
		cs.tables[k] = st
	}
	if _, ok := st.byName[c.name]; !ok {
		st.order = append(st.order, c.name)
	}
	st.byName[c.name] = c
	cs.version++
	for len(st.order) > maxStoredChains {
		delete(st.byName, st.order[0])
		st.order = st.order[1:]
	}
}

// compose is the iptables-save and `nft -a list` text of fam's tables: the
// chains just read (current), then the stored ones no longer in the
// ruleset.
func (cs *chainStore) compose(fam uint8, current []fetchedTable) (save, nft []byte) {
	var saveBuf, nftBuf bytes.Buffer
	for _, ft := range current {
		chains := ft.chains
		if st := cs.tables[storeKey{fam, ft.table}]; st != nil {
			now := make(map[string]bool, len(ft.chains))
			for _, c := range ft.chains {
				now[c.name] = true
			}
			for _, name := range st.order {
				if !now[name] {
					chains = append(chains, st.byName[name])
				}
			}
		}
		fmt.Fprintf(&saveBuf, "*%s\n", ft.table)
		for _, c := range chains {
			fmt.Fprintf(&saveBuf, ":%s %s [0:0]\n", c.name, c.policy)
		}
		for _, c := range chains {
			for _, l := range c.lines {
				saveBuf.WriteString(l)
				saveBuf.WriteByte('\n')
			}
		}
		saveBuf.WriteString("COMMIT\n")
		fmt.Fprintf(&nftBuf, "table %s %s {\n", nftFamily(fam), ft.table)
		for _, c := range chains {
			nftBuf.Write(c.block)
		}
		nftBuf.WriteString("}\n")
	}
	return saveBuf.Bytes(), nftBuf.Bytes()
}
