package explain

import (
	"fmt"
	"slices"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// RouteCheck is the node's answer to "what does the kernel's routing decision
// do with this packet?", asked by the live agent for a packet whose trace
// stops after PREROUTING (netlink RTM_GETROUTE with the packet's input
// interface and source, like `ip route get from SRC to DST iif DEV`).
type RouteCheck struct {
	// Command is the equivalent ip(8) command, for the user to rerun.
	Command string
	// Err is the kernel's error ("" when it found a route), e.g.
	// "invalid cross-device link" (reverse-path filter) or "network is unreachable".
	Err string
	// Errno is the error's name (EXDEV, ENETUNREACH, EHOSTUNREACH, EINVAL), "" without error.
	Errno string
	// Route describes the route found: "10.0.1.12 via 10.0.0.1 dev eth0", "local", ...
	Route string
	// InIface is the interface the packet came in on.
	InIface string
	// RPFilter holds net.ipv4.conf.{all,IFACE}.rp_filter values read on the node.
	RPFilter map[string]int
}

// WithRoute replaces the offline guess for a packet that vanished after
// PREROUTING with what the node's routing table says, and the verdict when
// the kernel refuses the route.
func WithRoute(rec *record.Packet, rc RouteCheck) {
	defer func() {
		// The summary ends with the verdict it was written with.
		if s, ok := strings.CutSuffix(rec.Explain.Summary, record.VerdictUnknown); ok && rec.Verdict != record.VerdictUnknown {
			rec.Explain.Summary = s + rec.Verdict
		}
	}()
	if rec.Explain == nil {
		rec.Explain = &record.Explain{}
	}
	ex := rec.Explain
	rp := rpFilterText(rc.RPFilter)
	switch {
	case rc.Errno == "EXDEV":
		ex.Reason = fmt.Sprintf("dropped by the reverse-path filter on %s: %s (the route back to the source does not leave through %s); the kernel says %q for: %s",
			ifaceOr(rc.InIface, "the input interface"), rp, ifaceOr(rc.InIface, "it"), rc.Err, rc.Command)
		rec.Verdict = record.VerdictDrop
	case rc.Err != "":
		ex.Reason = fmt.Sprintf("dropped by the routing decision: %s (%s); %s", rc.Err, rc.Command, rp)
		rec.Verdict = record.VerdictDrop
	default:
		ex.Reason = fmt.Sprintf("the routing decision finds a route now (%s: %s) but no later hook saw the packet: it may have been dropped before routing was fixed, or by something outside netfilter; %s",
			rc.Command, rc.Route, rp)
	}
}

// rpFilterText renders the rp_filter values the kernel combines (it uses the
// larger of "all" and the interface's): "rp_filter=1 (strict; all=1 eth0=0)".
func rpFilterText(v map[string]int) string {
	if len(v) == 0 {
		return "rp_filter unknown"
	}
	names := make([]string, 0, len(v))
	eff := 0
	for k, n := range v {
		names = append(names, k)
		eff = max(eff, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, v[k])
	}
	mode := map[int]string{0: "off", 1: "strict", 2: "loose"}[eff]
	return fmt.Sprintf("rp_filter=%d (%s; %s)", eff, mode, strings.Join(parts, " "))
}

// WithMasqueradeSource records the address MASQUERADE rewrote the source to
// (the live agent reads the outgoing interface's address), so the record
// says which source the endpoint sees.
func WithMasqueradeSource(rec *record.Packet, addr string) {
	for i := range rec.NAT {
		if n := &rec.NAT[i]; n.Kind == record.NATMasquerade && n.To == "" {
			n.To = addr
			if rec.Explain != nil {
				rec.Explain.SourceSeenByEndpoint = addr
				rec.Explain.Notes = slices.DeleteFunc(rec.Explain.Notes, func(s string) bool {
					return strings.HasPrefix(s, "the endpoint sees the node's address")
				})
			}
			return
		}
	}
}
