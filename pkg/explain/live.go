package explain

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// withLive puts the live facts on rec and what follows from them on the
// record: a refused route makes the verdict DROP, a masquerade address is
// the new source. The explanation written after it words them
// (routeReason, liveNotes).
func withLive(rec *record.Packet, live *record.Live) {
	rec.Live = live
	if rc := live.Route; rc != nil && rc.Error != "" {
		rec.Verdict = record.VerdictDrop
	}
	if live.MasqueradeSource != "" {
		for i := range rec.NAT {
			if n := &rec.NAT[i]; n.Kind == record.NATMasquerade && n.To == "" {
				n.To = live.MasqueradeSource
				break
			}
		}
	}
}

// routeCause is what a route check says about a packet.
type routeCause int

const (
	routeFound    routeCause = iota // a route exists (now)
	routeRefused                    // the routing decision refused it
	routeRPFilter                   // the reverse-path filter dropped it
	routeMartian                    // refused as a martian, not by rp_filter
)

// routeCauseOf tells the reverse-path filter from other refusals. The
// kernel answers a lookup the filter refuses with EXDEV in older kernels,
// with EINVAL (as for martians) in recent ones (6.18 seen), which report
// drop reasons from input routing; so an EINVAL is the filter's only when
// the route back to the source fails it: no route back (loose or strict),
// or one that leaves through another interface (strict).
func routeCauseOf(rc *record.RouteCheck) routeCause {
	switch {
	case rc.Error == "":
		return routeFound
	case rc.Back == nil:
		if rc.Errno == "EXDEV" {
			return routeRPFilter
		}
		return routeRefused
	}
	mode := rpMode(rc.RPFilter)
	rpFails := rc.Back.Error != "" || (mode == 1 && rc.Back.Dev != rc.In)
	if rc.Errno == "EINVAL" && (mode == 0 || !rpFails) {
		return routeMartian
	}
	return routeRPFilter
}

// routeReason says why a packet that vanished after PREROUTING ended as
// the route check found.
func routeReason(rc *record.RouteCheck) string {
	rp := rpFilterText(rc.RPFilter)
	cmd := routeCommand(&rc.RouteLookup)
	switch routeCauseOf(rc) {
	case routeRPFilter:
		return fmt.Sprintf("dropped by the reverse-path filter on %s: %s (the route back to the source does not leave through %s); the kernel says %q for: %s",
			ifaceOr(rc.In, "the input interface"), rp, ifaceOr(rc.In, "it"), rc.Error, cmd)
	case routeRefused, routeMartian:
		return fmt.Sprintf("dropped by the routing decision: %s (%s); %s", rc.Error, cmd, rp)
	}
	return fmt.Sprintf("the routing decision finds a route now (%s: %s) but no later hook saw the packet: it may have been dropped before routing was fixed, or by something outside netfilter; %s",
		cmd, rc.Route, rp)
}

// liveNotes are the notes the live facts add: what the route back to the
// source showed, and what could not be read.
func liveNotes(l *record.Live) []string {
	var notes []string
	if l.RouteError != "" {
		notes = append(notes, fmt.Sprintf("the live route check failed (%s); run the command above on the node", l.RouteError))
	}
	if rc := l.Route; rc != nil && rc.Back != nil {
		back := routeCommand(rc.Back)
		switch {
		case routeCauseOf(rc) == routeMartian:
			notes = append(notes, fmt.Sprintf("not the reverse-path filter (rp_filter=%d; %s): the kernel refused the packet as a martian, an address it never accepts from %s", rpMode(rc.RPFilter), back, rc.In))
		case rc.Back.Error != "":
			notes = append(notes, fmt.Sprintf("the node has no route back to %s (%s; %s)", rc.Src, rc.Back.Error, back))
		default:
			notes = append(notes, fmt.Sprintf("the route back to %s leaves through %s, not %s: %s (%s)", rc.Src, ifaceOr(rc.Back.Dev, "-"), rc.In, rc.Back.Route, back))
		}
	}
	if l.MasqueradeError != "" {
		notes = append(notes, fmt.Sprintf("could not read the masquerade address of %s: %s", l.MasqueradeIface, l.MasqueradeError))
	}
	return notes
}

// routeCommand is the ip(8) command that makes the same lookup, for the
// user to rerun: "ip route get from SRC to DST iif DEV mark 0x4000".
func routeCommand(l *record.RouteLookup) string {
	var b strings.Builder
	b.WriteString("ip ")
	if a, err := netip.ParseAddr(l.Dst); err == nil && a.Is6() && !a.Is4In6() {
		b.WriteString("-6 ")
	}
	b.WriteString("route get")
	if l.Src != "" {
		b.WriteString(" from " + l.Src)
	}
	b.WriteString(" to " + l.Dst)
	if l.In != "" {
		b.WriteString(" iif " + l.In)
	}
	if l.Mark != "" {
		b.WriteString(" mark " + l.Mark)
	}
	return b.String()
}

// rpMode is the rp_filter mode the kernel applies: the larger of "all" and
// the interface's.
func rpMode(v map[string]int) int {
	eff := 0
	for _, n := range v {
		eff = max(eff, n)
	}
	return eff
}

// rpFilterText renders the rp_filter values the kernel combines (it uses the
// larger of "all" and the interface's): "rp_filter=1 (strict; all=1 eth0=0)".
func rpFilterText(v map[string]int) string {
	if len(v) == 0 {
		return "rp_filter unknown"
	}
	names := make([]string, 0, len(v))
	for k := range v {
		names = append(names, k)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, v[k])
	}
	eff := rpMode(v)
	mode := map[int]string{0: "off", 1: "strict", 2: "loose"}[eff]
	return fmt.Sprintf("rp_filter=%d (%s; %s)", eff, mode, strings.Join(parts, " "))
}
