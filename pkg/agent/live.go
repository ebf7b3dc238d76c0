//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// liveCacheTTL bounds how long a route check or masquerade address is
// reused: a flood of identical packets costs one lookup per second, and a
// routing change shows within a second.
const liveCacheTTL = time.Second

// liveExplainer reads what only the node can say about a packet: the
// kernel's routing decision for a packet that vanished after PREROUTING,
// and the address MASQUERADE gave a packet. It reports them as facts
// (record.Live); package explain words them. It is used by one goroutine
// (the session's writer).
type liveExplainer struct {
	procRoot string
	// dial opens the rtnetlink socket on first use (a seam for tests).
	dial func() (*kernel.Rtnl, error)

	r       *kernel.Rtnl
	dialErr error
	routes  ttlCache[kernel.RouteQuery, record.RouteCheck]
	masq    ttlCache[masqKey, netip.Addr]
	now     func() time.Time
}

type masqKey struct {
	out string
	dst netip.Addr
}

func newLiveExplainer(procRoot string) *liveExplainer {
	return &liveExplainer{procRoot: procRoot, dial: kernel.OpenRtnl, now: time.Now}
}

// Close releases the netlink socket.
func (l *liveExplainer) Close() error {
	if l.r == nil {
		return nil
	}
	err := l.r.Close()
	l.r = nil
	return err
}

func (l *liveExplainer) conn() (*kernel.Rtnl, error) {
	if l.r == nil && l.dialErr == nil {
		l.r, l.dialErr = l.dial()
	}
	return l.r, l.dialErr
}

// facts reads what the node can say about rec, the annotated record of p
// (explain.AnnotateLive's live): nil when there is nothing. What could not
// be read is a fact too: the offline explanation stays.
func (l *liveExplainer) facts(rec *record.Packet, p *trace.Packet) *record.Live {
	if len(p.Hops) == 0 || len(p.Hops) != len(rec.Hops) {
		return nil
	}
	var live record.Live
	if rec.Verdict == record.VerdictUnknown && p.Hops[len(p.Hops)-1].Hook == "PREROUTING" {
		if q, ok := routingQuery(rec, p); ok {
			rc, err := l.routeCheck(q)
			if err != nil {
				live.RouteError = err.Error()
			} else {
				live.Route = &rc
			}
		}
	}
	for i := range rec.NAT {
		n := &rec.NAT[i]
		if n.Kind != record.NATMasquerade || n.To != "" {
			continue
		}
		j := masqueradeHop(rec)
		if j < 0 || rec.Hops[j].Out == "" {
			break
		}
		dst := p.Hops[j].Header.Dst
		if !dst.IsValid() {
			dst, _ = hostAddr(rec.Endpoint)
		}
		live.MasqueradeIface = rec.Hops[j].Out
		if addr, err := l.masqueradeSource(live.MasqueradeIface, dst); err != nil {
			live.MasqueradeError = err.Error()
		} else {
			live.MasqueradeSource = addr.String()
		}
		break
	}
	if live == (record.Live{}) {
		return nil
	}
	return &live
}

// routingQuery is the lookup the kernel made for p after nat PREROUTING:
// the packet as its last hop shows it, with the destination a DNAT in
// PREROUTING gave it (traces show the header before the last rule's target
// ran, and nft traces carry it only at the start of each base chain).
func routingQuery(rec *record.Packet, p *trace.Packet) (kernel.RouteQuery, bool) {
	h := p.Hops[len(p.Hops)-1].Header
	if h.In == "" || !h.Src.IsValid() || !h.Dst.IsValid() {
		return kernel.RouteQuery{}, false
	}
	q := kernel.RouteQuery{Src: h.Src, Dst: h.Dst, IIf: h.In, Mark: h.Mark}
	for _, n := range rec.NAT {
		if n.Kind == record.NATDNAT {
			if a, ok := hostAddr(n.To); ok && kernel.Family(a) == kernel.Family(q.Dst) {
				q.Dst = a
			}
			break
		}
	}
	return q, true
}

// lookupRoute asks the kernel the route of q and reports query and answer.
// A refusal is an answer; a missing interface or a socket failure is an
// error.
func lookupRoute(r *kernel.Rtnl, q kernel.RouteQuery) (record.RouteLookup, error) {
	l := record.RouteLookup{Dst: q.Dst.String(), In: q.IIf}
	if q.Src.IsValid() {
		l.Src = q.Src.String()
	}
	if q.Mark != 0 {
		l.Mark = "0x" + strconv.FormatUint(uint64(q.Mark), 16)
	}
	rt, err := r.Route(q)
	e, isErrno := kernel.Errno(err)
	switch {
	case err == nil:
		l.Route, l.Dev = rt.String(), rt.Dev
	case errors.Is(err, kernel.ErrNoInterface) || !isErrno:
		return record.RouteLookup{}, err
	default:
		l.Error, l.Errno = e.Error(), unix.ErrnoName(e)
	}
	return l, nil
}

// routeCheck runs the route lookup of q and reads the rp_filter settings
// that apply to it. When the kernel refuses an IPv4 packet with EXDEV or
// EINVAL (what the reverse-path filter answers, depending on the kernel)
// it also looks up the route back to the source: with it, package explain
// tells the filter from other refusals.
func (l *liveExplainer) routeCheck(q kernel.RouteQuery) (record.RouteCheck, error) {
	now := l.now()
	if rc, ok := l.routes.get(q, now); ok {
		return rc, nil
	}
	r, err := l.conn()
	if err != nil {
		return record.RouteCheck{}, err
	}
	lk, err := lookupRoute(r, q)
	if err != nil {
		return record.RouteCheck{}, err
	}
	rc := record.RouteCheck{RouteLookup: lk}
	if kernel.Family(q.Dst) == 4 {
		rc.RPFilter = readRPFilter(l.procRoot, q.IIf)
		if lk.Errno == "EXDEV" || lk.Errno == "EINVAL" {
			back, err := lookupRoute(r, kernel.RouteQuery{Dst: q.Src, Mark: q.Mark})
			if err != nil {
				return record.RouteCheck{}, err
			}
			rc.Back = &back
		}
	}
	l.routes.put(q, rc, now)
	return rc, nil
}

// readRPFilter reads net.ipv4.conf.{all,DEV}.rp_filter of the reader's
// network namespace; the kernel applies the larger of the two.
func readRPFilter(procRoot, dev string) map[string]int {
	out := map[string]int{}
	for _, k := range []string{"all", dev} {
		if k == "" || strings.ContainsAny(k, "/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, "sys/net/ipv4/conf", k, "rp_filter"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out[k] = n
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// masqueradeHop returns the index of the hop whose rule masqueraded, or -1.
func masqueradeHop(rec *record.Packet) int {
	for i := range rec.Hops {
		if rec.Hops[i].Verdict == record.NATMasquerade {
			return i
		}
	}
	return -1
}

// masqueradeSource returns the address MASQUERADE picks on interface out
// for a packet to dst. IPv4 (the kernel's inet_select_addr): a primary
// global address of out in the subnet of the next hop, else its first
// primary global address. IPv6: a usable global address of out, preferring
// one in dst's prefix (what source address selection ends with on an
// interface with one global address).
func (l *liveExplainer) masqueradeSource(out string, dst netip.Addr) (netip.Addr, error) {
	now := l.now()
	k := masqKey{out, dst}
	if a, ok := l.masq.get(k, now); ok {
		return a, nil
	}
	r, err := l.conn()
	if err != nil {
		return netip.Addr{}, err
	}
	fam := uint8(4)
	if dst.IsValid() {
		fam = kernel.Family(dst)
	}
	addrs, err := r.Addrs(out, fam)
	if err != nil {
		return netip.Addr{}, err
	}
	nh := dst
	if fam == 4 && dst.IsValid() {
		if rt, err := r.Route(kernel.RouteQuery{Dst: dst, OIf: out}); err == nil && rt.Gateway.IsValid() {
			nh = rt.Gateway
		}
	}
	a, ok := pickMasqueradeSource(addrs, fam, nh)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%s has no global IPv%d address", out, fam)
	}
	l.masq.put(k, a, now)
	return a, nil
}

// pickMasqueradeSource is the pure part of masqueradeSource.
func pickMasqueradeSource(addrs []kernel.Addr, fam uint8, nh netip.Addr) (netip.Addr, bool) {
	var first netip.Addr
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE {
			continue
		}
		if fam == 4 && a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		if fam == 6 && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DEPRECATED|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if nh.IsValid() && a.Prefix.Masked().Contains(nh.Unmap()) {
			return a.Prefix.Addr(), true
		}
		if !first.IsValid() {
			first = a.Prefix.Addr()
		}
	}
	return first, first.IsValid()
}

// hostAddr parses the address of a record address ("ip:port",
// "[ip6]:port" or "ip", record.Host).
func hostAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(record.Host(s))
	return a.Unmap(), err == nil
}

// ttlCache is a small map whose entries expire; it empties itself when it
// grows past ttlCacheMax (a flood of distinct keys must not grow it for
// ever).
type ttlCache[K comparable, V any] struct {
	m map[K]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v   V
	exp time.Time
}

const ttlCacheMax = 1024

func (c *ttlCache[K, V]) get(k K, now time.Time) (V, bool) {
	e, ok := c.m[k]
	if !ok || now.After(e.exp) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[K, V]) put(k K, v V, now time.Time) {
	if c.m == nil || len(c.m) >= ttlCacheMax {
		c.m = map[K]ttlEntry[V]{}
	}
	c.m[k] = ttlEntry[V]{v: v, exp: now.Add(liveCacheTTL)}
}
