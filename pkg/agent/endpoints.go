//go:build linux

package agent

import (
	"fmt"
	"net/netip"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// tracedBy says which of the session's TRACE rules a packet, as first
// seen, matched: record.TracedService (a Service address or NodePort),
// record.TracedEndpoint (one of this node's endpoints: the packet arrived
// already DNATed, from another node or straight to the pod), or "" for
// none (another tracer's packet: /dev/kmsg is shared by every network
// namespace and tracer on the node).
func (c *Config) tracedBy(h *trace.Header) string {
	for _, d := range c.Dsts {
		if d.Addr() == h.Dst && d.Port() == h.DPort {
			return record.TracedService
		}
	}
	for _, p := range c.NodePorts {
		if p == h.DPort {
			return record.TracedService
		}
	}
	for _, e := range c.Endpoints {
		if e.Addr() == h.Dst && e.Port() == h.DPort {
			return record.TracedEndpoint
		}
	}
	return ""
}

// validateEndpoints checks --endpoint values.
func (c *Config) validateEndpoints() []error {
	var errs []error
	seen := map[netip.AddrPort]bool{}
	for _, e := range c.Endpoints {
		switch {
		case !e.Addr().IsValid() || e.Addr().IsUnspecified():
			errs = append(errs, fmt.Errorf("invalid --endpoint %s: the address must be an endpoint's IP", e))
		case e.Port() == 0:
			errs = append(errs, fmt.Errorf("invalid --endpoint %s: port 0 cannot be traced", e))
		case seen[e]:
			errs = append(errs, fmt.Errorf("--endpoint %s given twice", e))
		}
		seen[e] = true
	}
	return errs
}
