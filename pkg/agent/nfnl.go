package agent

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnetlink / nf_tables constants (include/uapi/linux/netfilter/nf_tables.h,
// nfnetlink.h). Only the ones svctrace uses.
const (
	nfnlSubsysNftables = 10

	nftMsgGetTable = 1
	nftMsgGetChain = 4
	nftMsgGetRule  = 7
	nftMsgGetGen   = 16
	nftMsgTrace    = 17

	nfprotoIPv4 = 2
	nfprotoIPv6 = 10

	nftaTableName       = 1
	nftaChainTable      = 1
	nftaChainName       = 3
	nftaRuleTable       = 1
	nftaRuleChain       = 2
	nftaRuleHandle      = 3
	nftaRuleExpressions = 4
	nftaRuleUData       = 7

	nftaListElem  = 1
	nftaExprName  = 1
	nftaExprData  = 2
	nftaMatchName = 1
	nftaMatchInfo = 3
	nftaGenID     = 1

	nlaTypeMask = 0x3fff // strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

	// nfnlgrpNftrace is the multicast group of nftables trace events.
	nfnlgrpNftrace = 9
)

// nftMsgType is the netlink message type of an nf_tables message.
func nftMsgType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(nfnlSubsysNftables<<8 | msg)
}

func nfproto(family uint8) uint8 {
	if family == 6 {
		return nfprotoIPv6
	}
	return nfprotoIPv4
}

// nfnl is a request/response nf_tables netlink connection (not the trace
// listener): it lists tables, chains and rule handles without running nft,
// whose cache makes `nft list tables` take seconds on a 10,000-Service node.
type nfnl struct {
	c *netlink.Conn
}

func dialNfnl() (*nfnl, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open nf_tables netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	return &nfnl{c: c}, nil
}

func (n *nfnl) Close() error { return n.c.Close() }

// request sends one nf_tables request (nfgenmsg + attributes) and returns
// the replies' payloads after their nfgenmsg header.
func (n *nfnl) request(msg uint16, family uint8, dump bool, attrs []byte) ([][]byte, error) {
	data := make([]byte, 4+len(attrs))
	data[0] = family
	copy(data[4:], attrs)
	// No Acknowledge flag: the reply itself answers, and an extra ack
	// left in the socket would be read as the reply to the next request.
	flags := netlink.Request
	if dump {
		flags |= netlink.Dump
	}
	msgs, err := n.c.Execute(netlink.Message{
		Header: netlink.Header{Type: nftMsgType(msg), Flags: flags},
		Data:   data,
	})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type == netlink.Error || m.Header.Type == netlink.Done || len(m.Data) < 4 {
			continue
		}
		out = append(out, m.Data[4:])
	}
	return out, nil
}

// tables returns the names of the nftables tables of a family (4 or 6),
// including the ones iptables-nft manages (nat, filter, raw, ...).
func (n *nfnl) tables(family uint8) ([]string, error) {
	replies, err := n.request(nftMsgGetTable, nfproto(family), true, nil)
	if err != nil {
		return nil, fmt.Errorf("dump nftables tables: %w", err)
	}
	var names []string
	for _, r := range replies {
		if v, ok := attrString(r, nftaTableName); ok {
			names = append(names, v)
		}
	}
	return names, nil
}

// chains returns the chain names of one table; ok=false when the table does
// not exist.
func (n *nfnl) chains(family uint8, table string) (names []string, ok bool, err error) {
	// A dump filtered on a missing table is empty, not an error: ask for
	// the table list to tell "no chains" from "no table".
	tables, err := n.tables(family)
	if err != nil {
		return nil, false, err
	}
	if !contains(tables, table) {
		return nil, false, nil
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(nftaChainTable, table)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, false, err
	}
	replies, err := n.request(nftMsgGetChain, nfproto(family), true, attrs)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("dump chains of nftables table %s: %w", table, err)
	}
	ok = true
	for _, r := range replies {
		if t, _ := attrString(r, nftaChainTable); t != table {
			continue
		}
		if v, found := attrString(r, nftaChainName); found {
			names = append(names, v)
		}
	}
	return names, ok, nil
}

// chainExists asks the kernel for one chain by name: cheap even when the
// table holds 40,000 chains.
func (n *nfnl) chainExists(family uint8, table, chain string) (bool, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(nftaChainTable, table)
	ae.String(nftaChainName, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return false, err
	}
	if _, err := n.request(nftMsgGetChain, nfproto(family), false, attrs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("look up chain %s in nftables table %s: %w", chain, table, err)
	}
	return true, nil
}

// nftRule is one rule of a chain as the kernel lists it.
type nftRule struct {
	Handle  uint64
	Comment string // iptables-nft's -m comment, kept in the rule's userdata
}

// rules lists a chain's rules in order (the order of iptables -S).
func (n *nfnl) rules(family uint8, table, chain string) ([]nftRule, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(nftaRuleTable, table)
	ae.String(nftaRuleChain, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	replies, err := n.request(nftMsgGetRule, nfproto(family), true, attrs)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("dump rules of %s %s: %w", table, chain, err)
	}
	var out []nftRule
	for _, r := range replies {
		if t, _ := attrString(r, nftaRuleTable); t != table {
			continue
		}
		if c, _ := attrString(r, nftaRuleChain); c != chain {
			continue
		}
		var rule nftRule
		if v, ok := attrBytes(r, nftaRuleHandle); ok && len(v) == 8 {
			rule.Handle = binary.BigEndian.Uint64(v)
		}
		if v, ok := attrBytes(r, nftaRuleUData); ok {
			rule.Comment = udataComment(v)
		}
		if v, ok := attrBytes(r, nftaRuleExpressions); ok && rule.Comment == "" {
			rule.Comment = xtComment(v)
		}
		out = append(out, rule)
	}
	return out, nil
}

// genID returns the nf_tables ruleset generation: it changes with every
// nftables transaction (iptables-nft included), so polling it is a free way
// to notice kube-proxy rewriting rules.
func (n *nfnl) genID() (uint32, error) {
	replies, err := n.request(nftMsgGetGen, unix.AF_UNSPEC, false, nil)
	if err != nil {
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	for _, r := range replies {
		if v, ok := attrBytes(r, nftaGenID); ok && len(v) == 4 {
			return binary.BigEndian.Uint32(v), nil
		}
	}
	return 0, errors.New("read nftables generation: no generation id in the kernel's reply")
}

// xtComment finds the comment of an iptables-nft rule kept as an xtables
// "comment" match (iptables-nft 1.8.9 and older): expression "match" whose
// data names the "comment" match and holds struct xt_comment_info.
func xtComment(exprs []byte) string {
	comment := ""
	attrs(exprs, func(typ uint16, elem []byte) bool {
		if typ != nftaListElem {
			return true
		}
		name, _ := attrString(elem, nftaExprName)
		if name != "match" {
			return true
		}
		data, ok := attrBytes(elem, nftaExprData)
		if !ok {
			return true
		}
		if m, _ := attrString(data, nftaMatchName); m != "comment" {
			return true
		}
		if info, ok := attrBytes(data, nftaMatchInfo); ok {
			comment = string(trimNUL(info))
			return false
		}
		return true
	})
	return comment
}

// udataComment extracts the comment from nftables rule userdata (TLVs of
// type, length, value; type 0 is NFTNL_UDATA_RULE_COMMENT).
func udataComment(b []byte) string {
	for len(b) >= 2 {
		typ, l := b[0], int(b[1])
		if 2+l > len(b) {
			return ""
		}
		if typ == 0 {
			v := b[2 : 2+l]
			for i, c := range v {
				if c == 0 {
					v = v[:i]
					break
				}
			}
			return string(v)
		}
		b = b[2+l:]
	}
	return ""
}

// attrs iterates over the netlink attributes in b without allocating: fn
// gets each attribute's type (flags stripped) and payload.
func attrs(b []byte, fn func(typ uint16, v []byte) bool) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return
		}
		if !fn(typ, b[4:l]) {
			return
		}
		al := (l + 3) &^ 3
		if al > len(b) {
			return
		}
		b = b[al:]
	}
}

func attrBytes(b []byte, want uint16) (out []byte, ok bool) {
	attrs(b, func(typ uint16, v []byte) bool {
		if typ == want {
			out, ok = v, true
			return false
		}
		return true
	})
	return out, ok
}

func attrString(b []byte, want uint16) (string, bool) {
	v, ok := attrBytes(b, want)
	if !ok {
		return "", false
	}
	return string(trimNUL(v)), true
}

func trimNUL(v []byte) []byte {
	for i, c := range v {
		if c == 0 {
			return v[:i]
		}
	}
	return v
}
