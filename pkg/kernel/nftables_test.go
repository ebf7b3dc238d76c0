//go:build linux

package kernel

import (
	"encoding/binary"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// fakeNftables answers nf_tables requests the way the kernel does, from a
// small ruleset: tables raw and nat (IPv4), chains raw PREROUTING and
// OUTPUT and nat KUBE-SERVICES, three rules in raw PREROUTING (comments in
// userdata, in an xtables comment match, none), generation 42. It records
// the requests it got.
type fakeNftables struct {
	reqs []netlink.Message
}

func nftType(msg uint16) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)
}

func nftMsg(msg uint16, family uint8, attrs []netlink.Attribute) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: nftType(msg)},
		Data:   append([]byte{family, 0, 0, 0}, nltest.MustMarshalAttributes(attrs)...),
	}
}

// multipart marks msgs as one dump, ended by a done message.
func multipart(msgs []netlink.Message) ([]netlink.Message, error) {
	return nltest.Multipart(append(msgs, netlink.Message{Data: make([]byte, 4)}))
}

func str(typ uint16, s string) netlink.Attribute {
	return netlink.Attribute{Type: typ, Data: append([]byte(s), 0)}
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func nested(typ uint16, attrs ...netlink.Attribute) netlink.Attribute {
	return netlink.Attribute{Type: typ | unix.NLA_F_NESTED, Data: nltest.MustMarshalAttributes(attrs)}
}

// xtCommentExprs is the expression list of an iptables-nft 1.8.9 rule
// whose comment is an xtables "comment" match.
func xtCommentExprs(comment string) netlink.Attribute {
	info := make([]byte, 256)
	copy(info, comment)
	return nested(unix.NFTA_RULE_EXPRESSIONS, nested(unix.NFTA_LIST_ELEM,
		str(unix.NFTA_EXPR_NAME, "match"),
		nested(unix.NFTA_EXPR_DATA,
			str(unix.NFTA_MATCH_NAME, "comment"),
			netlink.Attribute{Type: unix.NFTA_MATCH_REV, Data: be32(0)},
			netlink.Attribute{Type: unix.NFTA_MATCH_INFO, Data: info},
		)))
}

func attrsOf(t *testing.T, m netlink.Message) map[uint16]string {
	t.Helper()
	out := map[uint16]string{}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		out[ad.Type()] = ad.String()
	}
	return out
}

func (f *fakeNftables) serve(t *testing.T) nltest.Func {
	return func(reqs []netlink.Message) ([]netlink.Message, error) {
		if len(reqs) == 0 {
			return nil, io.EOF // nothing is multicast here
		}
		msgs, err := f.answer(t, reqs)
		for i := range msgs {
			msgs[i].Header.Sequence, msgs[i].Header.PID = reqs[0].Header.Sequence, reqs[0].Header.PID
		}
		return msgs, err
	}
}

func (f *fakeNftables) answer(t *testing.T, reqs []netlink.Message) ([]netlink.Message, error) {
	f.reqs = append(f.reqs, reqs...)
	req := reqs[0]
	fam := req.Data[0]
	dump := req.Header.Flags&netlink.Dump != 0
	switch req.Header.Type {
	case nftType(unix.NFT_MSG_GETTABLE):
		return multipart([]netlink.Message{
			nftMsg(unix.NFT_MSG_NEWTABLE, fam, []netlink.Attribute{str(unix.NFTA_TABLE_NAME, "raw")}),
			nftMsg(unix.NFT_MSG_NEWTABLE, fam, []netlink.Attribute{str(unix.NFTA_TABLE_NAME, "nat")}),
		})
	case nftType(unix.NFT_MSG_GETCHAIN):
		a := attrsOf(t, req)
		chains := map[string][]string{"raw": {"PREROUTING", "OUTPUT"}, "nat": {"KUBE-SERVICES"}}[a[unix.NFTA_CHAIN_TABLE]]
		if !dump {
			for _, c := range chains {
				if c == a[unix.NFTA_CHAIN_NAME] {
					return []netlink.Message{nftMsg(unix.NFT_MSG_NEWCHAIN, fam, []netlink.Attribute{str(unix.NFTA_CHAIN_TABLE, a[unix.NFTA_CHAIN_TABLE]), str(unix.NFTA_CHAIN_NAME, c)})}, nil
				}
			}
			return nltest.Error(int(unix.ENOENT), reqs)
		}
		var msgs []netlink.Message
		for _, c := range chains {
			msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWCHAIN, fam, []netlink.Attribute{str(unix.NFTA_CHAIN_TABLE, a[unix.NFTA_CHAIN_TABLE]), str(unix.NFTA_CHAIN_NAME, c)}))
		}
		// A chain of another table: the kernel filters, but the
		// listing must not trust it blindly.
		msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWCHAIN, fam, []netlink.Attribute{str(unix.NFTA_CHAIN_TABLE, "filter"), str(unix.NFTA_CHAIN_NAME, "INPUT")}))
		return multipart(msgs)
	case nftType(unix.NFT_MSG_GETRULE):
		a := attrsOf(t, req)
		if a[unix.NFTA_RULE_TABLE] != "raw" || a[unix.NFTA_RULE_CHAIN] != "PREROUTING" {
			return nltest.Error(int(unix.ENOENT), reqs)
		}
		rule := func(handle uint64, extra ...netlink.Attribute) netlink.Message {
			return nftMsg(unix.NFT_MSG_NEWRULE, fam, append([]netlink.Attribute{
				str(unix.NFTA_RULE_TABLE, "raw"), str(unix.NFTA_RULE_CHAIN, "PREROUTING"),
				{Type: unix.NFTA_RULE_HANDLE, Data: be64(handle)},
			}, extra...))
		}
		return multipart([]netlink.Message{
			rule(11, netlink.Attribute{Type: unix.NFTA_RULE_USERDATA, Data: userdata.AppendString(nil, userdata.TypeComment, "svctrace:abc:tc")}),
			rule(12, xtCommentExprs("svctrace:old")),
			rule(13),
		})
	case nftType(unix.NFT_MSG_GETGEN):
		return []netlink.Message{nftMsg(unix.NFT_MSG_NEWGEN, 0, []netlink.Attribute{{Type: unix.NFTA_GEN_ID, Data: be32(42)}})}, nil
	}
	t.Errorf("unexpected request type %v", req.Header.Type)
	return nltest.Error(int(unix.EOPNOTSUPP), reqs)
}

func openFake(t *testing.T) (*Nftables, *fakeNftables) {
	t.Helper()
	f := &fakeNftables{}
	n, err := openNftables(func() (*netlink.Conn, error) { return nltest.Dial(f.serve(t)), nil }, nftablesTestDial(f.serve(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, f
}

func TestNftablesListings(t *testing.T) {
	n, f := openFake(t)
	tables, err := n.Tables(4)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"raw", "nat"}, tables); diff != "" {
		t.Errorf("Tables (-want +got):\n%s", diff)
	}

	chains, ok, err := n.Chains(4, "raw")
	if err != nil || !ok {
		t.Fatalf("Chains(raw) = %v, %v, %v", chains, ok, err)
	}
	if diff := cmp.Diff([]string{"PREROUTING", "OUTPUT"}, chains); diff != "" {
		t.Errorf("Chains(raw) (-want +got):\n%s", diff)
	}
	if _, ok, err := n.Chains(4, "mangle"); ok || err != nil {
		t.Errorf("Chains(mangle) ok=%v err=%v, want a missing table (false, nil)", ok, err)
	}
	// The dump asked the kernel for one table's chains (it filters: a
	// table of 40,000 chains must not be listed for another's).
	var filtered bool
	for _, r := range f.reqs {
		if r.Header.Type == nftType(unix.NFT_MSG_GETCHAIN) && r.Header.Flags&netlink.Dump != 0 && attrsOf(t, r)[unix.NFTA_CHAIN_TABLE] == "raw" {
			filtered = true
		}
	}
	if !filtered {
		t.Error("the chain dump did not name its table")
	}

	for _, c := range []struct {
		table, chain string
		want         bool
	}{{"raw", "OUTPUT", true}, {"nat", "KUBE-SERVICES", true}, {"nat", "KUBE-PROXY-CANARY", false}} {
		got, err := n.ChainExists(4, c.table, c.chain)
		if err != nil || got != c.want {
			t.Errorf("ChainExists(%s, %s) = %v, %v; want %v, nil", c.table, c.chain, got, err, c.want)
		}
	}

	rules, err := n.Rules(4, "raw", "PREROUTING")
	if err != nil {
		t.Fatal(err)
	}
	want := []NftRule{{Handle: 11, Comment: "svctrace:abc:tc"}, {Handle: 12, Comment: "svctrace:old"}, {Handle: 13}}
	if diff := cmp.Diff(want, rules); diff != "" {
		t.Errorf("Rules (-want +got):\n%s", diff)
	}
	if rules, err := n.Rules(4, "raw", "GONE"); err != nil || len(rules) != 0 {
		t.Errorf("Rules of a missing chain = %v, %v; want none and no error", rules, err)
	}

	gen, err := n.GenID()
	if err != nil || gen != 42 {
		t.Errorf("GenID = %d, %v; want 42", gen, err)
	}
}

func TestForMessages(t *testing.T) {
	// Two messages in one datagram, the first padded to 4 bytes, then a
	// truncated header: the walk stops there.
	var b []byte
	add := func(typ uint16, payload []byte) {
		l := unix.NLMSG_HDRLEN + len(payload)
		h := make([]byte, unix.NLMSG_HDRLEN)
		binary.NativeEndian.PutUint32(h[0:4], uint32(l))
		binary.NativeEndian.PutUint16(h[4:6], typ)
		b = append(b, h...)
		b = append(b, payload...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	add(0x0a11, []byte{1, 2, 3})
	add(0x0a12, []byte{4, 5, 6, 7})
	b = append(b, 0xff, 0xff)
	type msg struct {
		Typ     uint16
		Payload []byte
	}
	var got []msg
	forMessages(b, func(typ uint16, payload []byte) { got = append(got, msg{typ, append([]byte(nil), payload...)}) })
	want := []msg{{0x0a11, []byte{1, 2, 3}}, {0x0a12, []byte{4, 5, 6, 7}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func nftablesTestDial(fn nltest.Func) nftables.ConnOption { return nftables.WithTestDial(fn) }
