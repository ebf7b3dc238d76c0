package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// probe opens one connection (TCP) or sends one datagram (UDP) to each
// traced address, so a trace needs no outside traffic. A refused or timed
// out connection is still a traced packet: it is logged, not fatal.
func (s *session) probe(ctx context.Context) {
	if s.cfg.Proto == "sctp" {
		s.warn("--probe does not support SCTP: send traffic yourself")
		return
	}
	for _, ap := range s.probeAddrs() {
		if ctx.Err() != nil {
			return
		}
		err := probeOne(ctx, s.cfg.Proto, ap)
		switch {
		case err == nil:
			s.log.Printf("probe %s %s: sent", s.cfg.Proto, ap)
		case errors.Is(err, syscall.ECONNREFUSED):
			s.log.Printf("probe %s %s: connection refused (the trace shows where)", s.cfg.Proto, ap)
		default:
			s.log.Printf("probe %s %s: %v (the trace shows where it went)", s.cfg.Proto, ap, err)
		}
	}
}

func probeOne(ctx context.Context, proto string, ap netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, proto, ap.String())
	if err != nil {
		return err
	}
	defer c.Close()
	if proto == "udp" {
		_, err = c.Write([]byte("svctrace probe\n"))
	}
	return err
}

// nodeAddress returns the node's own address for NodePort probes: the source
// address of its default route. Connecting a UDP socket only asks the
// kernel for a route; it sends nothing.
func nodeAddress() (netip.Addr, error) {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find the node's address (no IPv4 default route?): %w", err)
	}
	defer c.Close()
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, errors.New("find the node's address: unexpected local address type")
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	if !ok {
		return netip.Addr{}, errors.New("find the node's address: invalid local address")
	}
	return ip.Unmap(), nil
}
