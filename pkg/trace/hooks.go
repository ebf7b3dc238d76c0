package trace

import "strings"

// The netfilter hook model the Grouper uses to tell where a packet is in its
// traversal, when a later record must belong to another packet, and when a
// packet cannot produce any more records.
//
// Legacy traces name tables and chains only. Built-in chain names give the
// hook; user chains inherit the hook of the built-in chain that jumped to
// them. Table priorities (include/uapi/linux/netfilter_ipv4.h) order the
// tables within a hook:
//
//	PREROUTING   raw -300, mangle -150, nat (DNAT) -100
//	INPUT        mangle -150, filter 0, security 50, nat (SNAT) 100
//	FORWARD      mangle -150, filter 0, security 50
//	OUTPUT       raw -300, mangle -150, nat (DNAT) -100, filter 0, security 50
//	POSTROUTING  mangle -150, nat (SNAT) 100
//
// iptables-nft uses the same table and chain names and priorities. Tables of
// other nft users (kube-proxy's "kube-proxy" table, ...) have no known rank:
// their records never move or end a packet's position. Their base chains can
// be named anything; kube-proxy's nftables mode names them TYPE-HOOK or
// TYPE-HOOK-QUALIFIER ("nat-output", "filter-input",
// "filter-prerouting-pre-dnat", "filter-output-post-dnat"), which gives their
// hook for Hop.Hook and for joining a packet whose trace id changed
// (Grouper.joinID).

type hook uint8

const (
	hookNone hook = iota
	hookPre
	hookIn
	hookFwd
	hookOut
	hookPost
)

// builtinHook returns the hook of a built-in chain name, or hookNone.
func builtinHook(chain string) hook {
	switch chain {
	case "PREROUTING":
		return hookPre
	case "INPUT":
		return hookIn
	case "FORWARD":
		return hookFwd
	case "OUTPUT":
		return hookOut
	case "POSTROUTING":
		return hookPost
	}
	return hookNone
}

// hookNames are the names Hop.Hook reports, indexed by hook.
var hookNames = [...]string{
	hookNone: "",
	hookPre:  "PREROUTING",
	hookIn:   "INPUT",
	hookFwd:  "FORWARD",
	hookOut:  "OUTPUT",
	hookPost: "POSTROUTING",
}

// String returns the built-in chain name of h, "" for hookNone.
func (h hook) String() string {
	if int(h) < len(hookNames) {
		return hookNames[h]
	}
	return ""
}

// baseHook returns the hook of a base chain: a built-in chain name in any
// table, or a kube-proxy style name (see namedHook) in a table without a
// known rank. It returns hookNone for anything else, user chains included:
// they run in the hook of the base chain that jumped to them, which only the
// packet's earlier records tell.
func baseHook(table, chain string) hook {
	if h := builtinHook(chain); h != hookNone {
		return h
	}
	if tableRank(table, hookPre) != rankUnknown {
		// An iptables table: every other chain is a user chain, whatever
		// its name.
		return hookNone
	}
	return namedHook(chain)
}

// namedHook reads the hook from a base chain named TYPE-HOOK[-QUALIFIER]
// with TYPE "filter" or "nat", as kube-proxy's nftables mode names its base
// chains. kube-proxy's regular chains ("services", "masquerading",
// "service-HASH-ns/name/tcp/port", ...) never start that way.
func namedHook(chain string) hook {
	rest, ok := strings.CutPrefix(chain, "filter-")
	if !ok {
		rest, ok = strings.CutPrefix(chain, "nat-")
	}
	if !ok {
		return hookNone
	}
	for _, n := range [...]struct {
		word string
		h    hook
	}{
		{"prerouting", hookPre},
		{"input", hookIn},
		{"forward", hookFwd},
		{"output", hookOut},
		{"postrouting", hookPost},
	} {
		if after, ok := strings.CutPrefix(rest, n.word); ok && (after == "" || after[0] == '-') {
			return n.h
		}
	}
	return hookNone
}

// follows reports whether a packet last seen at hook from can next be seen
// at hook to, a later stage of the same traversal: PREROUTING leads to
// INPUT, FORWARD or POSTROUTING (iptables-nft registers only the base
// chains that hold rules, so a forwarded packet may show none at FORWARD);
// FORWARD and OUTPUT lead to POSTROUTING. Nothing follows INPUT or
// POSTROUTING, and OUTPUT only ever starts a traversal.
func follows(from, to hook) bool {
	switch from {
	case hookPre:
		return to == hookIn || to == hookFwd || to == hookPost
	case hookFwd, hookOut:
		return to == hookPost
	}
	return false
}

// stage orders hooks along a traversal: PREROUTING or OUTPUT first, then
// INPUT or FORWARD (OUTPUT shares stage 1 with them: nothing follows INPUT
// and OUTPUT never follows FORWARD), POSTROUTING last.
func stage(h hook) int {
	switch h {
	case hookPre:
		return 0
	case hookIn, hookFwd, hookOut:
		return 1
	case hookPost:
		return 2
	}
	return -1
}

const (
	rankUnknown  int16 = -32768
	rankRaw      int16 = -300
	rankMangle   int16 = -150
	rankNatDst   int16 = -100
	rankFilter   int16 = 0
	rankSecurity int16 = 50
	rankNatSrc   int16 = 100
)

// tableRank is the priority of an iptables table at hook h.
func tableRank(table string, h hook) int16 {
	switch table {
	case "raw":
		return rankRaw
	case "mangle":
		return rankMangle
	case "nat":
		if h == hookPre || h == hookOut {
			return rankNatDst
		}
		return rankNatSrc
	case "filter":
		return rankFilter
	case "security":
		return rankSecurity
	}
	return rankUnknown
}

// isFinal reports whether a packet whose table at hook h (rank r) has just
// ended can produce no more records. natSeen says the nat table was
// traversed earlier, which happens only for a connection's first packet and
// means the nat table will be traversed at POSTROUTING / INPUT too.
func isFinal(h hook, r int16, natSeen bool, out string) bool {
	switch h {
	case hookPost:
		if out == "lo" {
			return false // loopback: comes back through PREROUTING
		}
		return r == rankNatSrc || (r == rankMangle && !natSeen)
	case hookIn:
		return r == rankNatSrc || (!natSeen && (r == rankFilter || r == rankSecurity))
	}
	return false
}
