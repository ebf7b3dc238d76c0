//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rtnl is a route netlink handle bound to one network namespace: the
// kernel's own route lookup (what `ip route get` asks), interface addresses
// and names, without running ip(8), which the agent image need not have
// and whose output would have to be parsed. It is vishvananda/netlink's
// Handle; this type keeps the few calls svctrace makes and their errors.
type Rtnl struct {
	h *netlink.Handle
}

// OpenRtnl opens a route netlink socket in the calling thread's network
// namespace.
func OpenRtnl() (*Rtnl, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open a route netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	return &Rtnl{h: h}, nil
}

// OpenRtnlAt opens a route netlink socket in network namespace ns.
func OpenRtnlAt(ns *Netns) (*Rtnl, error) {
	h, err := netlink.NewHandleAt(ns.h, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open a route netlink socket in the namespace of pid %d (the agent needs CAP_SYS_ADMIN): %w", ns.PID, err)
	}
	return &Rtnl{h: h}, nil
}

// Close releases the socket.
func (r *Rtnl) Close() error {
	r.h.Close()
	return nil
}

// RouteQuery is one route lookup. With IIf set it is the lookup the kernel
// makes for a packet arriving on that interface (reverse-path filter
// included), like `ip route get from SRC to DST iif IIF`; without, the one
// for a packet the node sends.
type RouteQuery struct {
	Src, Dst netip.Addr
	IIf      string
	OIf      string
	Mark     uint32
}

// Route is the kernel's answer to a RouteQuery.
type Route struct {
	Type    int // unix.RTN_UNICAST, RTN_LOCAL, ...
	Dst     netip.Addr
	Gateway netip.Addr
	Dev     string
	PrefSrc netip.Addr
}

// routeTypes names route types the way ip(8) prints them; unicast routes
// print no type.
var routeTypes = map[int]string{
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
func (rt Route) String() string {
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

// ErrNoInterface marks a lookup that could not start because an interface
// is gone: not an answer of the kernel's routing code.
var ErrNoInterface = errors.New("no interface")

// Route asks the kernel for the route of q. A refusal (no route, the
// reverse-path filter, a prohibit route) comes back as an error wrapping
// the kernel's unix.Errno (see Errno); a missing interface as one wrapping
// ErrNoInterface.
func (r *Rtnl) Route(q RouteQuery) (Route, error) {
	if !q.Dst.IsValid() {
		return Route{}, errors.New("route lookup without a destination")
	}
	opts := &netlink.RouteGetOptions{Mark: q.Mark}
	// Resolved here, not by the library: its "link not found" would
	// read as the kernel's answer.
	var err error
	if q.IIf != "" {
		if opts.IifIndex, err = r.LinkIndex(q.IIf); err != nil {
			return Route{}, err
		}
	}
	if q.OIf != "" {
		if opts.OifIndex, err = r.LinkIndex(q.OIf); err != nil {
			return Route{}, err
		}
	}
	if q.Src.IsValid() {
		opts.SrcAddr = q.Src.Unmap().AsSlice()
	}
	routes, err := r.h.RouteGetWithOptions(q.Dst.Unmap().AsSlice(), opts)
	if err != nil {
		return Route{}, err
	}
	if len(routes) == 0 {
		return Route{}, errors.New("the kernel answered the route lookup without a route")
	}
	nr := routes[0]
	rt := Route{Type: nr.Type, Gateway: addrOf(nr.Gw), PrefSrc: addrOf(nr.Src)}
	if nr.Dst != nil {
		rt.Dst = addrOf(nr.Dst.IP)
	}
	if nr.LinkIndex > 0 {
		if name, err := r.LinkName(uint32(nr.LinkIndex)); err == nil {
			rt.Dev = name
		}
	}
	return rt, nil
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// Addr is one address of an interface.
type Addr struct {
	Prefix netip.Prefix
	Scope  int // unix.RT_SCOPE_*
	Flags  int // unix.IFA_F_*
}

// Addrs returns the addresses of one family (4 or 6) on interface dev.
func (r *Rtnl) Addrs(dev string, fam uint8) ([]Addr, error) {
	l, err := r.link(dev)
	if err != nil {
		return nil, err
	}
	return r.addrs(l, fam)
}

func (r *Rtnl) addrs(l netlink.Link, fam uint8) ([]Addr, error) {
	af := unix.AF_INET
	if fam == 6 {
		af = unix.AF_INET6
	}
	list, err := r.h.AddrList(l, af)
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]Addr, 0, len(list))
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, Addr{Prefix: netip.PrefixFrom(ip.Unmap(), ones), Scope: a.Scope, Flags: a.Flags})
	}
	return out, nil
}

// HasAddr reports whether any interface of the namespace has address a.
func (r *Rtnl) HasAddr(a netip.Addr) (bool, error) {
	a = a.Unmap()
	all, err := r.addrs(nil, Family(a))
	if err != nil {
		return false, err
	}
	for _, x := range all {
		if x.Prefix.Addr() == a {
			return true, nil
		}
	}
	return false, nil
}

func (r *Rtnl) link(name string) (netlink.Link, error) {
	l, err := r.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrNoInterface, name, err)
	}
	return l, nil
}

// LinkIndex returns the index of interface name. Its errors wrap
// ErrNoInterface, not the kernel's errno (ENODEV would read as a routing
// answer).
func (r *Rtnl) LinkIndex(name string) (int, error) {
	l, err := r.link(name)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// LinkName returns the name of interface index idx. It is svctrace's one
// interface name resolver (LinkNames caches it for trace events).
func (r *Rtnl) LinkName(idx uint32) (string, error) {
	l, err := r.h.LinkByIndex(int(idx))
	if err != nil {
		return "", fmt.Errorf("find interface %d: %w", idx, err)
	}
	return l.Attrs().Name, nil
}

// Family returns 4 or 6.
func Family(a netip.Addr) uint8 {
	if a.Is4() || a.Is4In6() {
		return 4
	}
	return 6
}

// Errno returns the kernel errno a netlink error carries.
func Errno(err error) (unix.Errno, bool) {
	var e unix.Errno
	if errors.As(err, &e) {
		return e, true
	}
	return 0, false
}
