//go:build linux

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Nftables lists nf_tables tables, chains, rule handles and comments and
// reads the ruleset generation, without running nft, whose cache makes
// `nft list tables` take seconds on a 10,000-Service node.
//
// Tables and rules come from google/nftables. Chains and the generation
// are asked here, with mdlayher/netlink's attribute encoder and decoder:
// google/nftables dumps the chains of every table of a family (kube-proxy's
// table holds 40,000 on a big node) where the kernel can filter on one
// table, its single-chain lookup loses the kernel's errno (a missing chain
// must not read as a failure), and it has no call for the generation id.
type Nftables struct {
	nft *nftables.Conn
	nl  *netlink.Conn
}

// OpenNftables opens the nf_tables netlink sockets in the calling thread's
// network namespace.
func OpenNftables() (*Nftables, error) {
	return openNftables(func() (*netlink.Conn, error) { return netlink.Dial(unix.NETLINK_NETFILTER, nil) })
}

// openNftables opens both connections, the mdlayher/netlink one with dial
// (a seam for tests: nltest).
func openNftables(dial func() (*netlink.Conn, error), opts ...nftables.ConnOption) (*Nftables, error) {
	nft, err := nftables.New(append(opts, nftables.AsLasting())...)
	if err != nil {
		return nil, fmt.Errorf("open an nf_tables netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	nl, err := dial()
	if err != nil {
		_ = nft.CloseLasting()
		return nil, fmt.Errorf("open an nf_tables netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	return &Nftables{nft: nft, nl: nl}, nil
}

// Close releases the sockets.
func (n *Nftables) Close() error {
	return errors.Join(n.nft.CloseLasting(), n.nl.Close())
}

func tableFamily(fam uint8) nftables.TableFamily {
	switch fam {
	case 6:
		return nftables.TableFamilyIPv6
	case familyInet:
		return nftables.TableFamilyINet
	}
	return nftables.TableFamilyIPv4
}

// familyInet is nft's inet family (NFPROTO_INET), tables for IPv4 and IPv6.
const familyInet = unix.NFPROTO_INET

// Tables returns the names of the nftables tables of a family (4, 6, or 1
// for inet), including the ones iptables-nft manages (nat, filter, raw, ...).
func (n *Nftables) Tables(fam uint8) ([]string, error) {
	ts, err := n.nft.ListTablesOfFamily(tableFamily(fam))
	if err != nil {
		return nil, fmt.Errorf("dump nftables tables: %w", err)
	}
	names := make([]string, 0, len(ts))
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names, nil
}

// request sends one nf_tables request (nfgenmsg + attributes) and returns
// the replies' attributes, after their nfgenmsg header.
func (n *Nftables) request(msg uint16, family uint8, dump bool, attrs []byte) ([][]byte, error) {
	data := make([]byte, 4+len(attrs))
	data[0] = family
	copy(data[4:], attrs)
	// No Acknowledge flag: the reply itself answers, and an extra ack
	// left in the socket would be read as the reply to the next request.
	flags := netlink.Request
	if dump {
		flags |= netlink.Dump
	}
	msgs, err := n.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg), Flags: flags},
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

// chainAttrs encodes a chain request: the table, and the chain if named.
func chainAttrs(table, chain string) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_CHAIN_TABLE, table)
	if chain != "" {
		ae.String(unix.NFTA_CHAIN_NAME, chain)
	}
	return ae.Encode()
}

// Chains returns the chain names of one table; ok=false when the table does
// not exist.
func (n *Nftables) Chains(fam uint8, table string) (names []string, ok bool, err error) {
	// A dump filtered on a missing table is empty, not an error: ask for
	// the table list to tell "no chains" from "no table".
	tables, err := n.Tables(fam)
	if err != nil {
		return nil, false, err
	}
	if !slices.Contains(tables, table) {
		return nil, false, nil
	}
	attrs, err := chainAttrs(table, "")
	if err != nil {
		return nil, false, err
	}
	replies, err := n.request(unix.NFT_MSG_GETCHAIN, uint8(tableFamily(fam)), true, attrs)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("dump chains of nftables table %s: %w", table, err)
	}
	for _, r := range replies {
		var t, name string
		if err := decodeAttrs(r, func(ad *netlink.AttributeDecoder) {
			switch ad.Type() {
			case unix.NFTA_CHAIN_TABLE:
				t = ad.String()
			case unix.NFTA_CHAIN_NAME:
				name = ad.String()
			}
		}); err != nil {
			return nil, false, fmt.Errorf("dump chains of nftables table %s: %w", table, err)
		}
		if t == table && name != "" {
			names = append(names, name)
		}
	}
	return names, true, nil
}

// ChainExists asks the kernel for one chain by name: cheap even when the
// table holds 40,000 chains.
func (n *Nftables) ChainExists(fam uint8, table, chain string) (bool, error) {
	attrs, err := chainAttrs(table, chain)
	if err != nil {
		return false, err
	}
	if _, err := n.request(unix.NFT_MSG_GETCHAIN, uint8(tableFamily(fam)), false, attrs); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("look up chain %s in nftables table %s: %w", chain, table, err)
	}
	return true, nil
}

// NftRule is one rule of a chain as the kernel lists it.
type NftRule struct {
	Handle  uint64
	Comment string // iptables-nft's -m comment
}

// Rules lists a chain's rules in order (the order of iptables -S); a chain
// that does not exist has none.
func (n *Nftables) Rules(fam uint8, table, chain string) ([]NftRule, error) {
	t := &nftables.Table{Name: table, Family: tableFamily(fam)}
	rs, err := n.nft.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if err != nil {
		// google/nftables drops the errno: ask whether the chain is gone.
		if ok, cerr := n.ChainExists(fam, table, chain); cerr == nil && !ok {
			return nil, nil
		}
		return nil, fmt.Errorf("dump rules of %s %s: %w", table, chain, err)
	}
	out := make([]NftRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, NftRule{Handle: r.Handle, Comment: ruleComment(r)})
	}
	return out, nil
}

// ruleComment is the comment of an iptables-nft rule: kept in the rule's
// userdata (iptables-nft 1.8.10 and later), or as an xtables "comment"
// match (1.8.9 and older).
func ruleComment(r *nftables.Rule) string {
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
		return c
	}
	for _, e := range r.Exprs {
		if m, ok := e.(*expr.Match); ok && m.Name == "comment" {
			if c, ok := m.Info.(*xt.Comment); ok {
				return string(*c)
			}
		}
	}
	return ""
}

// GenID returns the nf_tables ruleset generation: it changes with every
// nftables transaction (iptables-nft included), so polling it is a free way
// to notice kube-proxy rewriting rules.
func (n *Nftables) GenID() (uint32, error) {
	replies, err := n.request(unix.NFT_MSG_GETGEN, unix.AF_UNSPEC, false, nil)
	if err != nil {
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	for _, r := range replies {
		var id uint32
		var found bool
		if err := decodeAttrs(r, func(ad *netlink.AttributeDecoder) {
			if ad.Type() == unix.NFTA_GEN_ID {
				id, found = ad.Uint32(), true
			}
		}); err != nil {
			return 0, fmt.Errorf("read nftables generation: %w", err)
		}
		if found {
			return id, nil
		}
	}
	return 0, errors.New("read nftables generation: no generation id in the kernel's reply")
}

// decodeAttrs walks nf_tables attributes (integers big-endian).
func decodeAttrs(b []byte, fn func(*netlink.AttributeDecoder)) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		fn(ad)
	}
	return ad.Err()
}

// RuleRef names one rule of a table for DeleteRules.
type RuleRef struct {
	Chain  string
	Handle uint64
}

// DeleteRules deletes rules of one table by handle in one transaction: all
// of them, or none (one that is gone fails the transaction).
func (n *Nftables) DeleteRules(fam uint8, table string, refs []RuleRef) error {
	t := &nftables.Table{Name: table, Family: tableFamily(fam)}
	for _, r := range refs {
		if err := n.nft.DelRule(&nftables.Rule{Table: t, Chain: &nftables.Chain{Name: r.Chain, Table: t}, Handle: r.Handle}); err != nil {
			return fmt.Errorf("delete rule %d of %s %s: %w", r.Handle, table, r.Chain, err)
		}
	}
	if err := n.nft.Flush(); err != nil {
		return fmt.Errorf("delete %d rule(s) of table %s: %w", len(refs), table, err)
	}
	return nil
}
