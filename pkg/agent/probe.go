//go:build linux

package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// probe opens one connection (TCP) or sends one datagram (UDP) to each
// traced address, so a trace needs no outside traffic: from the node, or
// with --probe-from-ip from inside the pod that has that address. A refused
// or timed out connection is still a traced packet: it is logged, not
// fatal; not getting into the pod's namespace is.
func (s *session) probe(ctx context.Context) {
	if s.cfg.Proto == "sctp" {
		s.warn("--probe does not support SCTP: send traffic yourself")
		return
	}
	if s.cfg.ProbeWhenTold && !s.awaitProbeWord(ctx) {
		return
	}
	if s.cfg.RulesSnapshot {
		select {
		case <-s.settled:
		case <-ctx.Done():
			return
		}
	}
	from := ""
	if s.fromNS != nil {
		from = fmt.Sprintf(" from %s (network namespace of pid %d)", s.fromNS.Addr, s.fromNS.PID)
	}
	for _, ap := range s.probeAddrs() {
		if ctx.Err() != nil {
			return
		}
		var err error
		if s.fromNS != nil {
			err = s.fromNS.Do(func() error { return probeOne(ctx, s.cfg.Proto, ap) })
		} else {
			err = probeOne(ctx, s.cfg.Proto, ap)
		}
		switch {
		case err == nil:
			s.log.Printf("probe %s %s%s: sent", s.cfg.Proto, ap, from)
		case errors.Is(err, kernel.ErrEnterNetns):
			s.cancel(fmt.Errorf("probe from %s: %w", s.cfg.ProbeFrom, err))
			return
		case ctx.Err() != nil:
			s.log.Printf("probe %s %s%s: sent; the session ended before it was answered", s.cfg.Proto, ap, from)
			return
		case errors.Is(err, syscall.ECONNREFUSED):
			s.log.Printf("probe %s %s%s: connection refused (the trace shows where)", s.cfg.Proto, ap, from)
		default:
			s.log.Printf("probe %s %s%s: %v (the trace shows where it went)", s.cfg.Proto, ap, from, err)
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

// probeWordWait bounds the wait for the plugin's word: a plugin whose
// stdin stream could not be held never sends it, and the probe should still
// happen (the nodes it is followed to may then miss its first packet).
const probeWordWait = 20 * time.Second

// awaitProbeWord waits for the plugin's "probe" line (ProbeWhenTold); false
// when the session ends first.
func (s *session) awaitProbeWord(ctx context.Context) bool {
	t := time.NewTimer(probeWordWait)
	defer t.Stop()
	select {
	case <-s.probeTold:
		return true
	case <-ctx.Done():
		return false
	case <-t.C:
		s.warn(fmt.Sprintf("no word from the plugin to probe after %s: probing now (agents on the nodes the packet is followed to may not be ready)", probeWordWait))
		return true
	}
}

// readStdin reads the plugin's lines until EOF. The first one, whichever
// it is, is answered with an Attached record: the plugin counts on this
// agent stopping when it goes away only from then on. record.WordProbe
// releases the probe (ProbeWhenTold); anything else is ignored.
func (s *session) readStdin(r io.Reader) {
	sc := bufio.NewScanner(r)
	answered, told := false, false
	for sc.Scan() {
		if !answered {
			answered = true
			// A failed write fails the session's next one as well.
			_ = s.out.write(&record.Attached{Type: record.TypeAttached, Node: s.cfg.Node})
		}
		if sc.Text() == record.WordProbe && !told {
			told = true
			s.toldAt.Store(time.Now().UnixNano())
			close(s.probeTold)
		}
	}
}
