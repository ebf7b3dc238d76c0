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

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// liveCacheTTL bounds how long a route check or masquerade address is
// reused: a flood of identical packets costs one lookup per second, and a
// routing change shows within a second.
const liveCacheTTL = time.Second

// liveExplainer completes packet explanations with what only the node can
// say: the kernel's routing decision for a packet that vanished after
// PREROUTING, and the address MASQUERADE gave a packet. It is used by one
// goroutine (the session's writer).
type liveExplainer struct {
	procRoot string
	// dial opens the rtnetlink socket on first use (a seam for tests).
	dial func() (*rtnl, error)

	r       *rtnl
	dialErr error
	routes  ttlCache[routeQuery, routeResult]
	masq    ttlCache[masqKey, netip.Addr]
	now     func() time.Time
}

type masqKey struct {
	out string
	dst netip.Addr
}

func newLiveExplainer(procRoot string) *liveExplainer {
	return &liveExplainer{
		procRoot: procRoot,
		dial:     func() (*rtnl, error) { return dialRtnl(0) },
		now:      time.Now,
	}
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

func (l *liveExplainer) conn() (*rtnl, error) {
	if l.r == nil && l.dialErr == nil {
		l.r, l.dialErr = l.dial()
	}
	return l.r, l.dialErr
}

// explain adds the live parts to rec, the record of p. Problems become
// notes on the record: the offline explanation stays.
func (l *liveExplainer) explain(rec *record.Packet, p *trace.Packet) {
	if rec.Explain == nil || len(p.Hops) == 0 || len(p.Hops) != len(rec.Hops) {
		return
	}
	if rec.Verdict == record.VerdictUnknown && p.Hops[len(p.Hops)-1].Hook == "PREROUTING" {
		if q, ok := routingQuery(rec, p); ok {
			rc, err := l.routeCheck(q)
			if err != nil {
				l.note(rec, fmt.Sprintf("the live route check failed (%v); run the command above on the node", err))
			} else {
				explain.WithRoute(rec, rc.RouteCheck)
				if rc.note != "" {
					l.note(rec, rc.note)
				}
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
		addr, err := l.masqueradeSource(rec.Hops[j].Out, dst)
		if err != nil {
			l.note(rec, fmt.Sprintf("could not read the masquerade address of %s: %v", rec.Hops[j].Out, err))
			break
		}
		explain.WithMasqueradeSource(rec, addr.String())
		break
	}
}

func (l *liveExplainer) note(rec *record.Packet, s string) {
	rec.Explain.Notes = append(rec.Explain.Notes, s)
}

// routingQuery is the lookup the kernel made for p after nat PREROUTING:
// the packet as its last hop shows it, with the destination a DNAT in
// PREROUTING gave it (traces show the header before the last rule's target
// ran, and nft traces carry it only at the start of each base chain).
func routingQuery(rec *record.Packet, p *trace.Packet) (routeQuery, bool) {
	h := p.Hops[len(p.Hops)-1].Header
	if h.In == "" || !h.Src.IsValid() || !h.Dst.IsValid() {
		return routeQuery{}, false
	}
	q := routeQuery{Src: h.Src, Dst: h.Dst, IIf: h.In, Mark: h.Mark}
	for _, n := range rec.NAT {
		if n.Kind == record.NATDNAT {
			if a, ok := hostAddr(n.To); ok && ipFamily(a) == ipFamily(q.Dst) {
				q.Dst = a
			}
			break
		}
	}
	return q, true
}

// routeResult is a route check and what the agent found out besides.
type routeResult struct {
	explain.RouteCheck
	// note is a fact for the record's notes ("" for none): the route back
	// to the source, when the reverse path decided.
	note string
}

// routeCheck runs the route lookup of q and reads the rp_filter settings
// that apply to it.
//
// The reverse-path filter is told apart from other refusals by looking up
// the route back to the source: older kernels answer such a lookup with
// EXDEV ("Invalid cross-device link"), recent ones (6.18 seen) with EINVAL,
// as for martian addresses, since input routing reports drop reasons. A refusal whose route back does not leave through the
// input interface (strict rp_filter) or that has no route back at all
// (loose) is reported with Errno EXDEV, the kernel's own words kept in Err.
func (l *liveExplainer) routeCheck(q routeQuery) (routeResult, error) {
	now := l.now()
	if rc, ok := l.routes.get(q, now); ok {
		return rc, nil
	}
	r, err := l.conn()
	if err != nil {
		return routeResult{}, err
	}
	res := routeResult{RouteCheck: explain.RouteCheck{Command: q.command(), InIface: q.IIf}}
	rc := &res.RouteCheck
	rt, err := r.getRoute(q)
	e, isErrno := errnoOf(err)
	switch {
	case err == nil:
		rc.Route = rt.String()
	case errors.Is(err, errNoInterface) || !isErrno:
		return routeResult{}, err
	default:
		rc.Err = e.Error()
		rc.Errno = unix.ErrnoName(e)
	}
	if ipFamily(q.Dst) == 4 {
		rc.RPFilter = readRPFilter(l.procRoot, q.IIf)
	}
	if err != nil && (e == unix.EXDEV || e == unix.EINVAL) && ipFamily(q.Dst) == 4 {
		mode := 0
		for _, v := range rc.RPFilter {
			mode = max(mode, v)
		}
		back := routeQuery{Dst: q.Src, Mark: q.Mark}
		brt, berr := r.getRoute(back)
		rpFails := berr != nil || (mode == 1 && brt.Dev != q.IIf)
		switch {
		case e == unix.EINVAL && (mode == 0 || !rpFails):
			res.note = fmt.Sprintf("not the reverse-path filter (rp_filter=%d; %s): the kernel refused the packet as a martian, an address it never accepts from %s", mode, back.command(), q.IIf)
		case berr != nil:
			rc.Errno = "EXDEV"
			res.note = fmt.Sprintf("the node has no route back to %s (%v; %s)", q.Src, berr, back.command())
		default:
			rc.Errno = "EXDEV"
			res.note = fmt.Sprintf("the route back to %s leaves through %s, not %s: %s (%s)", q.Src, orDash(brt.Dev), q.IIf, brt, back.command())
		}
	}
	l.routes.put(q, res, now)
	return res, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
		fam = ipFamily(dst)
	}
	addrs, err := r.addrs(out, fam)
	if err != nil {
		return netip.Addr{}, err
	}
	nh := dst
	if fam == 4 && dst.IsValid() {
		if rt, err := r.getRoute(routeQuery{Dst: dst, OIf: out}); err == nil && rt.Gateway.IsValid() {
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
func pickMasqueradeSource(addrs []ifAddr, fam uint8, nh netip.Addr) (netip.Addr, bool) {
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

// hostAddr parses the address of "ip:port", "[ip6]:port" or "ip".
func hostAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
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
