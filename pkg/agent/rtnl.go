package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// rtnl is a request/response rtnetlink connection bound to one network
// namespace: the kernel's own route lookup (what `ip route get` asks),
// interface addresses and names, all without running ip(8), which the
// agent image need not have and whose output would have to be parsed.
type rtnl struct {
	c *netlink.Conn
}

// dialRtnl opens an rtnetlink socket in the network namespace of the file
// descriptor nsFD, or in the calling thread's namespace when nsFD is 0.
func dialRtnl(nsFD int) (*rtnl, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: nsFD})
	if err != nil {
		return nil, fmt.Errorf("open a route netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	return &rtnl{c: c}, nil
}

// Close releases the socket.
func (r *rtnl) Close() error { return r.c.Close() }

// routeQuery is one route lookup. With IIf set it is the lookup the kernel
// makes for a packet arriving on that interface (reverse-path filter
// included), like `ip route get from SRC to DST iif IIF`; without, the one
// for a packet the node sends.
type routeQuery struct {
	Src, Dst netip.Addr
	IIf      string
	OIf      string
	Mark     uint32
}

// command is the ip(8) command that makes the same lookup.
func (q routeQuery) command() string {
	var b strings.Builder
	b.WriteString("ip ")
	if q.Dst.Is6() {
		b.WriteString("-6 ")
	}
	b.WriteString("route get")
	if q.Src.IsValid() {
		b.WriteString(" from " + q.Src.String())
	}
	b.WriteString(" to " + q.Dst.String())
	if q.IIf != "" {
		b.WriteString(" iif " + q.IIf)
	}
	if q.OIf != "" {
		b.WriteString(" oif " + q.OIf)
	}
	if q.Mark != 0 {
		fmt.Fprintf(&b, " mark 0x%x", q.Mark)
	}
	return b.String()
}

// route is the kernel's answer to a routeQuery.
type route struct {
	Type    uint8 // RTN_UNICAST, RTN_LOCAL, ...
	Dst     netip.Addr
	Gateway netip.Addr
	Dev     string
	PrefSrc netip.Addr
}

// routeTypes names route types the way ip(8) prints them; unicast routes
// print no type.
var routeTypes = map[uint8]string{
	unix.RTN_LOCAL:       "local",
	unix.RTN_BROADCAST:   "broadcast",
	unix.RTN_ANYCAST:     "anycast",
	unix.RTN_MULTICAST:   "multicast",
	unix.RTN_BLACKHOLE:   "blackhole",
	unix.RTN_UNREACHABLE: "unreachable",
	unix.RTN_PROHIBIT:    "prohibit",
	unix.RTN_THROW:       "throw",
	unix.RTN_NAT:         "nat",
}

// String renders the route as `ip route get` does: "local 10.0.1.12 dev lo",
// "10.244.0.5 dev cni0 src 10.244.0.1", "1.2.3.4 via 10.0.0.1 dev eth0 src 10.0.0.2".
func (rt route) String() string {
	var parts []string
	if t, ok := routeTypes[rt.Type]; ok {
		parts = append(parts, t)
	}
	if rt.Dst.IsValid() {
		parts = append(parts, rt.Dst.String())
	}
	if rt.Gateway.IsValid() {
		parts = append(parts, "via", rt.Gateway.String())
	}
	if rt.Dev != "" {
		parts = append(parts, "dev", rt.Dev)
	}
	if rt.PrefSrc.IsValid() {
		parts = append(parts, "src", rt.PrefSrc.String())
	}
	return strings.Join(parts, " ")
}

// getRoute asks the kernel for the route of q. A refusal (no route, the
// reverse-path filter, a prohibit route) comes back as an error wrapping
// the kernel's unix.Errno.
func (r *rtnl) getRoute(q routeQuery) (route, error) {
	if !q.Dst.IsValid() {
		return route{}, errors.New("route lookup without a destination")
	}
	fam, bits := familyOf(q.Dst)
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.RTA_DST, q.Dst.Unmap().AsSlice())
	hdr := unix.RtMsg{Family: fam, Dst_len: bits}
	if q.Src.IsValid() {
		ae.Bytes(unix.RTA_SRC, q.Src.Unmap().AsSlice())
		hdr.Src_len = bits
	}
	for _, dev := range []struct {
		name string
		attr uint16
	}{{q.IIf, unix.RTA_IIF}, {q.OIf, unix.RTA_OIF}} {
		if dev.name == "" {
			continue
		}
		idx, err := r.linkIndex(dev.name)
		if err != nil {
			return route{}, err
		}
		ae.Uint32(dev.attr, idx)
	}
	if q.Mark != 0 {
		ae.Uint32(unix.RTA_MARK, q.Mark)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return route{}, err
	}
	msgs, err := r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request},
		Data:   append(structBytes(&hdr), attrs...),
	})
	if err != nil {
		return route{}, err
	}
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			continue
		}
		return r.parseRoute(m.Data)
	}
	return route{}, errors.New("the kernel answered the route lookup without a route")
}

func (r *rtnl) parseRoute(b []byte) (route, error) {
	rt := route{Type: b[7]} // rtm_type
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofRtMsg:])
	if err != nil {
		return route{}, fmt.Errorf("decode the route: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			rt.Dst, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_GATEWAY:
			rt.Gateway, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_PREFSRC:
			rt.PrefSrc, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_OIF:
			if name, err := r.linkName(ad.Uint32()); err == nil {
				rt.Dev = name
			}
		}
	}
	if err := ad.Err(); err != nil {
		return route{}, fmt.Errorf("decode the route: %w", err)
	}
	return rt, nil
}

// ifAddr is one address of an interface.
type ifAddr struct {
	Prefix netip.Prefix
	Scope  uint8
	Flags  uint32 // IFA_F_*
}

// addrs returns the addresses of one family (4 or 6) on interface dev.
func (r *rtnl) addrs(dev string, fam uint8) ([]ifAddr, error) {
	idx, err := r.linkIndex(dev)
	if err != nil {
		return nil, err
	}
	all, err := r.dumpAddrs(fam)
	if err != nil {
		return nil, err
	}
	var out []ifAddr
	for _, a := range all {
		if a.index == idx {
			out = append(out, a.ifAddr)
		}
	}
	return out, nil
}

type indexedAddr struct {
	ifAddr
	index uint32
}

// dumpAddrs lists every address of one family (4 or 6) in the namespace.
func (r *rtnl) dumpAddrs(fam uint8) ([]indexedAddr, error) {
	af := uint8(unix.AF_INET)
	if fam == 6 {
		af = unix.AF_INET6
	}
	req := unix.IfAddrmsg{Family: af}
	msgs, err := r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETADDR, Flags: netlink.Request | netlink.Dump},
		Data:   structBytes(&req),
	})
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []indexedAddr
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg {
			continue
		}
		bits, flags, scope := m.Data[1], uint32(m.Data[2]), m.Data[3]
		idx := binary.NativeEndian.Uint32(m.Data[4:8])
		ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfAddrmsg:])
		if err != nil {
			continue
		}
		var local, address netip.Addr
		for ad.Next() {
			switch ad.Type() {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(ad.Bytes())
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(ad.Bytes())
			case unix.IFA_FLAGS:
				// The full flags; ifa_flags holds only the low 8 bits.
				flags = ad.Uint32()
			}
		}
		// IFA_LOCAL is the interface's own address (IFA_ADDRESS is
		// the peer's on point-to-point links); IPv6 sends only IFA_ADDRESS.
		a := local
		if !a.IsValid() {
			a = address
		}
		if !a.IsValid() || ad.Err() != nil {
			continue
		}
		out = append(out, indexedAddr{ifAddr: ifAddr{Prefix: netip.PrefixFrom(a, int(bits)), Scope: scope, Flags: flags}, index: idx})
	}
	return out, nil
}

// hasAddr reports whether any interface of the namespace has address a.
func (r *rtnl) hasAddr(a netip.Addr) (bool, error) {
	all, err := r.dumpAddrs(ipFamily(a))
	if err != nil {
		return false, err
	}
	for _, x := range all {
		if x.Prefix.Addr() == a.Unmap() {
			return true, nil
		}
	}
	return false, nil
}

// errNoInterface marks a lookup that could not start because an interface
// is gone: not an answer of the kernel's routing code.
var errNoInterface = errors.New("no interface")

// linkIndex returns the index of interface name. Its errors wrap
// errNoInterface, not the kernel's errno (ENODEV would read as a routing
// answer).
func (r *rtnl) linkIndex(name string) (uint32, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	var req unix.IfInfomsg
	msgs, err := r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   append(structBytes(&req), attrs...),
	})
	if err != nil {
		return 0, fmt.Errorf("%w %s: %v", errNoInterface, name, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK && len(m.Data) >= unix.SizeofIfInfomsg {
			return binary.NativeEndian.Uint32(m.Data[4:8]), nil
		}
	}
	return 0, fmt.Errorf("%w %s", errNoInterface, name)
}

// linkName returns the name of interface index idx.
func (r *rtnl) linkName(idx uint32) (string, error) {
	req := unix.IfInfomsg{Index: int32(idx)}
	msgs, err := r.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   structBytes(&req),
	})
	if err != nil {
		return "", fmt.Errorf("find interface %d: %w", idx, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK && len(m.Data) > unix.SizeofIfInfomsg {
			if v, ok := attrString(m.Data[unix.SizeofIfInfomsg:], unix.IFLA_IFNAME); ok {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("find interface %d: no name", idx)
}

// ipFamily returns 4 or 6.
func ipFamily(a netip.Addr) uint8 {
	if a.Is4() || a.Is4In6() {
		return 4
	}
	return 6
}

// familyOf returns the address family and full prefix length of a.
func familyOf(a netip.Addr) (af uint8, bits uint8) {
	if a.Is4() || a.Is4In6() {
		return unix.AF_INET, 32
	}
	return unix.AF_INET6, 128
}

// structBytes returns the bytes of a fixed-size kernel header struct (no
// pointers, native layout), as the kernel reads it.
func structBytes[T unix.RtMsg | unix.IfAddrmsg | unix.IfInfomsg](v *T) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))...)
}

// errnoOf returns the kernel errno an rtnetlink error carries.
func errnoOf(err error) (unix.Errno, bool) {
	var e unix.Errno
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}
