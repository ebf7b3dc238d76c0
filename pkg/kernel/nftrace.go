//go:build linux

package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// LinkNames resolves interface indexes to names, caching them: a trace
// event names interfaces by index only. It asks over a route netlink
// socket opened with the trace socket, so names come from the network
// namespace the events come from, whichever thread asks.
type LinkNames struct {
	mu sync.Mutex
	m  map[uint32]string
	r  *Rtnl
}

// Name returns the name of interface idx, "ifN" when it is gone.
func (c *LinkNames) Name(idx uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.m[idx]; ok {
		return n
	}
	n := ""
	if c.r != nil {
		n, _ = c.r.LinkName(idx)
	}
	if n == "" {
		n = "if" + strconv.FormatUint(uint64(idx), 10)
	}
	if c.m == nil {
		c.m = map[uint32]string{}
	}
	c.m[idx] = n
	return n
}

func (c *LinkNames) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.r == nil {
		return nil
	}
	err := c.r.Close()
	c.r = nil
	return err
}

// TraceSocket listens to nftables trace events (NFNLGRP_NFTRACE) on a
// netlink socket: where iptables-nft TRACE output goes (never to the kernel
// log). The reading is ours: no library reads trace events (google/nftables'
// monitor drops them), and reading the raw socket into one reused buffer
// keeps the hot path free of allocations (netlink.Conn.Receive allocates
// per datagram). Events the socket's receive buffer could not hold are lost
// with ENOBUFS; their number is not known at that point.
type TraceSocket struct {
	// RcvBuf is the socket receive buffer in bytes (0: 32 MiB).
	RcvBuf int
	// BaseChain, when set, says whether a chain is a base chain and whether
	// that is known (rules.Index.BaseChain; family 0 when the event
	// carries no header): the end of a user chain is then a return at once,
	// and a base chain's end waits for its policy event.
	BaseChain func(family uint8, table, chain string) (base, known bool)

	conn  *netlink.Conn
	raw   syscall.RawConn // conn's, set by Open (Drained)
	gate  ReadGate
	dec   *trace.NetlinkDecoder
	names LinkNames
}

// Open joins the trace group: an event the kernel emits after Open returned
// is delivered by Run.
func (s *TraceSocket) Open() error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("open netfilter netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		c.Close()
		return fmt.Errorf("join the nftables trace group: %w", err)
	}
	n := s.RcvBuf
	if n == 0 {
		n = 32 << 20
	}
	// SetReadBuffer uses SO_RCVBUFFORCE (root may exceed rmem_max).
	if err := c.SetReadBuffer(n); err != nil {
		c.Close()
		return fmt.Errorf("set the trace socket's receive buffer: %w", err)
	}
	// Opened now, in the namespace the trace socket belongs to.
	r, err := OpenRtnl()
	if err != nil {
		c.Close()
		return fmt.Errorf("name interfaces: %w", err)
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		r.Close()
		return fmt.Errorf("read nftables trace events: %w", err)
	}
	s.conn, s.raw = c, raw
	s.names.r = r
	s.dec = trace.NewNetlinkDecoder(s.names.Name)
	return nil
}

// Run reads until ctx is done or the socket fails. emit's Event is reused
// once emit returns; lost(0) reports a loss of unknown size (ENOBUFS).
func (s *TraceSocket) Run(ctx context.Context, emit func(*trace.Event), lost func(uint64)) error {
	if s.conn == nil {
		return errors.New("nftrace source used before Open")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 256<<10)
	var ev trace.Event
	var fold trace.EndFolder
	if s.BaseChain != nil {
		fold.Base = func(ev *trace.Event) (bool, bool) { return s.BaseChain(ev.Header.Family, ev.Table, ev.Chain) }
	}
	for {
		n, err := s.gate.ReadFrom(s.raw, func(fd int) (int, error) {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			return n, err
		}, func() bool {
			// Nothing queued: a held end event may have no policy
			// event coming after it.
			fold.Idle(emit)
			return !fold.Held()
		})
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, unix.ENOBUFS):
				lost(0)
				continue
			case errors.Is(err, unix.EINTR):
				continue
			}
			return fmt.Errorf("read nftables trace events: %w", err)
		}
		now := Monotonic()
		forMessages(buf[:n], func(typ uint16, payload []byte) {
			if typ == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_TRACE && s.dec.Decode(payload, now, &ev) {
				fold.Push(&ev, emit)
			}
		})
	}
}

// forMessages calls fn with the type and payload of each netlink message
// of a datagram.
func forMessages(b []byte, fn func(typ uint16, payload []byte)) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return
		}
		fn(typ, b[unix.NLMSG_HDRLEN:l])
		b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
	}
}

// Drained reports whether Run waits with no trace event queued and none
// read but not handed to emit (ReadGate). Safe beside Run.
func (s *TraceSocket) Drained() bool { return s.raw == nil || s.gate.Drained(s.raw) }

// Close releases the sockets; it unblocks Run.
func (s *TraceSocket) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return errors.Join(err, s.names.close())
}

// Monotonic returns CLOCK_MONOTONIC: the clock of kernel log timestamps,
// used to stamp nftables trace events (which carry no time) and to Tick the
// grouper on the same time line as the events.
func Monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
