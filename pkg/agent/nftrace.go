package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// NFTA_TRACE_* attributes (include/uapi/linux/netfilter/nf_tables.h).
const (
	nftaTraceTable           = 1
	nftaTraceChain           = 2
	nftaTraceRuleHandle      = 3
	nftaTraceType            = 4
	nftaTraceVerdict         = 5
	nftaTraceID              = 6
	nftaTraceNetworkHeader   = 8
	nftaTraceTransportHeader = 9
	nftaTraceIIF             = 10
	nftaTraceOIF             = 12
	nftaTraceMark            = 14
	nftaTraceNfproto         = 15
	nftaTracePolicy          = 16

	nftaVerdictCode  = 1
	nftaVerdictChain = 2

	nftTracetypePolicy = 1
	nftTracetypeReturn = 2
	nftTracetypeRule   = 3
)

// verdictName maps a netfilter verdict code to the Event.Verdict word.
func verdictName(code int32) string {
	switch code {
	case -1:
		return "CONTINUE"
	case -2:
		return "BREAK"
	case -3:
		return "JUMP"
	case -4:
		return "GOTO"
	case -5:
		return "RETURN"
	}
	// Non-negative codes carry a queue number or errno in the upper bits.
	switch code & 0xff {
	case 0:
		return "DROP"
	case 1:
		return "ACCEPT"
	case 2:
		return "STOLEN"
	case 3:
		return "QUEUE"
	case 4:
		return "REPEAT"
	case 5:
		return "STOP"
	}
	return "UNKNOWN"
}

// nftDecoder turns NFT_MSG_TRACE messages into Events. The kernel sends the
// packet's headers and interfaces only on the first event of each base
// chain traversal; the decoder keeps them per trace id and fills them into
// the following events (HasHeader false), as the text decoders of package
// trace do. Steady-state decoding allocates nothing: names are interned.
type nftDecoder struct {
	names  map[string]string
	ifname func(idx uint32) string
	hdrs   [256]struct {
		id   uint32
		used bool
		hdr  trace.Header
	}
}

func newNftDecoder(ifname func(uint32) string) *nftDecoder {
	return &nftDecoder{names: map[string]string{}, ifname: ifname}
}

// maxInterned bounds the name table (chains come and go with Services).
const maxInterned = 1 << 16

func (d *nftDecoder) intern(b []byte) string {
	b = trimNUL(b)
	if s, ok := d.names[string(b)]; ok {
		return s
	}
	if len(d.names) >= maxInterned {
		clear(d.names)
	}
	s := string(b)
	d.names[s] = s
	return s
}

func (d *nftDecoder) slot(id uint32) int { return int((id * 2654435761) >> 24) }

// decode fills ev from the payload of one NFT_MSG_TRACE message (after the
// netlink header: nfgenmsg, then attributes). It reports false for a message
// without table or chain.
func (d *nftDecoder) decode(payload []byte, now time.Duration, ev *trace.Event) bool {
	if len(payload) < 4 {
		return false
	}
	*ev = trace.Event{Time: now}
	var nh, th []byte
	var iif, oif, mark uint32
	var haveIIF, haveOIF bool
	attrs(payload[4:], func(typ uint16, v []byte) bool {
		switch typ {
		case nftaTraceTable:
			ev.Table = d.intern(v)
		case nftaTraceChain:
			ev.Chain = d.intern(v)
		case nftaTraceRuleHandle:
			if len(v) == 8 {
				ev.Handle = binary.BigEndian.Uint64(v)
			}
		case nftaTraceType:
			if len(v) == 4 {
				switch binary.BigEndian.Uint32(v) {
				case nftTracetypePolicy:
					ev.Kind = trace.KindPolicy
				case nftTracetypeReturn:
					ev.Kind = trace.KindReturn
				case nftTracetypeRule:
					ev.Kind = trace.KindRule
				}
			}
		case nftaTraceVerdict:
			attrs(v, func(t uint16, w []byte) bool {
				switch t {
				case nftaVerdictCode:
					if len(w) == 4 {
						ev.Verdict = verdictName(int32(binary.BigEndian.Uint32(w)))
					}
				case nftaVerdictChain:
					ev.Target = d.intern(w)
				}
				return true
			})
		case nftaTraceID:
			if len(v) == 4 {
				ev.TraceID = binary.BigEndian.Uint32(v)
				ev.HasID = true
			}
		case nftaTraceNetworkHeader:
			nh = v
		case nftaTraceTransportHeader:
			th = v
		case nftaTraceIIF:
			if len(v) == 4 {
				iif, haveIIF = binary.BigEndian.Uint32(v), true
			}
		case nftaTraceOIF:
			if len(v) == 4 {
				oif, haveOIF = binary.BigEndian.Uint32(v), true
			}
		case nftaTraceMark:
			if len(v) == 4 {
				mark = binary.BigEndian.Uint32(v)
			}
		case nftaTracePolicy:
			// Sent with policy events only: the base chain's policy.
			if len(v) == 4 {
				ev.Verdict = verdictName(int32(binary.BigEndian.Uint32(v)))
			}
		}
		return true
	})
	if ev.Table == "" || ev.Chain == "" || ev.Kind == 0 {
		return false
	}
	slot := &d.hdrs[d.slot(ev.TraceID)]
	if nh != nil {
		var h trace.Header
		parseNetworkHeader(nh, th, &h)
		if haveIIF {
			h.In = d.ifname(iif)
		}
		if haveOIF {
			h.Out = d.ifname(oif)
		}
		h.Mark = mark
		ev.Header, ev.HasHeader = h, true
		slot.id, slot.used, slot.hdr = ev.TraceID, true, h
	} else if slot.used && slot.id == ev.TraceID {
		ev.Header = slot.hdr
		ev.Header.Mark = mark // sent with every event: the mark as it is now
	}
	return true
}

// parseNetworkHeader fills h from the raw IPv4/IPv6 header bytes and the
// transport header bytes of a trace event.
func parseNetworkHeader(nh, th []byte, h *trace.Header) {
	if len(nh) < 1 {
		return
	}
	switch nh[0] >> 4 {
	case 4:
		if len(nh) < 20 {
			return
		}
		h.Family = 4
		h.Len = binary.BigEndian.Uint16(nh[2:4])
		h.IPID = uint32(binary.BigEndian.Uint16(nh[4:6]))
		h.Proto = nh[9]
		h.Src = netip.AddrFrom4([4]byte(nh[12:16]))
		h.Dst = netip.AddrFrom4([4]byte(nh[16:20]))
	case 6:
		if len(nh) < 40 {
			return
		}
		h.Family = 6
		h.IPID = binary.BigEndian.Uint32(nh[0:4]) & 0xfffff
		h.Len = binary.BigEndian.Uint16(nh[4:6]) + 40
		h.Proto = nh[6]
		h.Src = netip.AddrFrom16([16]byte(nh[8:24]))
		h.Dst = netip.AddrFrom16([16]byte(nh[24:40]))
	default:
		return
	}
	switch h.Proto {
	case trace.ProtoTCP:
		if len(th) >= 14 {
			h.SPort = binary.BigEndian.Uint16(th[0:2])
			h.DPort = binary.BigEndian.Uint16(th[2:4])
			h.TCPSeq = binary.BigEndian.Uint32(th[4:8])
			h.TCPFlags = th[13]
		}
	case trace.ProtoUDP, trace.ProtoSCTP:
		if len(th) >= 4 {
			h.SPort = binary.BigEndian.Uint16(th[0:2])
			h.DPort = binary.BigEndian.Uint16(th[2:4])
		}
	case trace.ProtoICMP, trace.ProtoICMPv6:
		if len(th) >= 2 {
			h.ICMPType, h.ICMPCode = th[0], th[1]
		}
		if len(th) >= 8 {
			h.ICMPID = binary.BigEndian.Uint16(th[4:6])
			h.ICMPSeq = binary.BigEndian.Uint16(th[6:8])
		}
	}
}

// endFolder turns the kernel's "end of chain" events into what the other
// trace tools show. When no rule ends a chain's traversal, the kernel sends
// a rule event without a handle and with verdict CONTINUE. For a base chain
// the policy event follows at once and says it all: the end event is
// dropped. For a user chain it means the packet went back to the calling
// chain: it becomes a KindReturn event, as a legacy "return" record.
type endFolder struct {
	pending trace.Event
	has     bool
}

func isImplicitEnd(ev *trace.Event) bool {
	return ev.Kind == trace.KindRule && ev.Handle == 0 && ev.Verdict == "CONTINUE"
}

// push takes the next decoded event.
func (f *endFolder) push(ev *trace.Event, emit func(*trace.Event)) {
	if f.has {
		p := &f.pending
		if ev.Kind == trace.KindPolicy && ev.TraceID == p.TraceID && ev.Table == p.Table && ev.Chain == p.Chain {
			// Dropped: the policy event now opens the traversal.
			ev.HasHeader = ev.HasHeader || p.HasHeader
		} else {
			f.flush(emit)
		}
		f.has = false
	}
	if isImplicitEnd(ev) {
		f.pending, f.has = *ev, true
		return
	}
	emit(ev)
}

// flush emits a held end event as a return (nothing more is queued).
func (f *endFolder) flush(emit func(*trace.Event)) {
	if !f.has {
		return
	}
	f.has = false
	f.pending.Kind = trace.KindReturn
	f.pending.Verdict = "RETURN"
	emit(&f.pending)
}

// ifNames resolves interface indexes to names, caching them: a trace event
// names interfaces by index only. It asks over a route netlink socket
// opened with the trace socket, so names come from the network namespace
// the events come from, whichever thread asks.
type ifNames struct {
	mu   sync.Mutex
	m    map[uint32]string
	rtnl *netlink.Conn // nil: ask the calling thread's namespace
}

const (
	rtmGetLink = 18
	iflaIfname = 3
)

func (c *ifNames) name(idx uint32) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.m[idx]; ok {
		return n
	}
	n := c.lookup(idx)
	if n == "" {
		n = fmt.Sprintf("if%d", idx)
	}
	if c.m == nil {
		c.m = map[uint32]string{}
	}
	c.m[idx] = n
	return n
}

func (c *ifNames) lookup(idx uint32) string {
	if c.rtnl == nil {
		if ifi, err := net.InterfaceByIndex(int(idx)); err == nil {
			return ifi.Name
		}
		return ""
	}
	// struct ifinfomsg: family, pad, type, index, flags, change.
	req := make([]byte, 16)
	binary.NativeEndian.PutUint32(req[4:8], idx)
	msgs, err := c.rtnl.Execute(netlink.Message{
		Header: netlink.Header{Type: rtmGetLink, Flags: netlink.Request},
		Data:   req,
	})
	if err != nil {
		return ""
	}
	for _, m := range msgs {
		if len(m.Data) > 16 {
			if v, ok := attrString(m.Data[16:], iflaIfname); ok {
				return v
			}
		}
	}
	return ""
}

// NftraceSource listens to nftables trace events (NFNLGRP_NFTRACE) on a
// netlink socket: where iptables-nft TRACE output goes (never to the kernel
// log). Events the socket's receive buffer could not hold are lost with
// ENOBUFS; their number is not known at that point (the session counts the
// traced packets that never showed up from its rules' counters).
type NftraceSource struct {
	// RcvBuf is the socket receive buffer in bytes (0: 32 MiB).
	RcvBuf int

	conn *netlink.Conn
	dec  *nftDecoder
	ifn  ifNames
}

// NewNftraceSource returns a netlink trace source.
func NewNftraceSource() *NftraceSource { return &NftraceSource{} }

// Name implements Source.
func (s *NftraceSource) Name() string { return SourceNftrace }

// Open implements Source: the group is joined before Open returns.
func (s *NftraceSource) Open() error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("open netfilter netlink socket (the agent needs CAP_NET_ADMIN): %w", err)
	}
	if err := c.JoinGroup(nfnlgrpNftrace); err != nil {
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
	rtnl, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		c.Close()
		return fmt.Errorf("open a route netlink socket to name interfaces: %w", err)
	}
	s.conn = c
	s.ifn.rtnl = rtnl
	s.dec = newNftDecoder(s.ifn.name)
	return nil
}

// Run implements Source.
func (s *NftraceSource) Run(ctx context.Context, emit func(*trace.Event), lost func(uint64)) error {
	if s.conn == nil {
		return errors.New("nftrace source used before Open")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetReadDeadline(time.Now()) })
	defer stop()
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("read nftables trace events: %w", err)
	}
	// Reading the raw socket into one reused buffer keeps the hot path free
	// of allocations (netlink.Conn.Receive allocates per datagram).
	buf := make([]byte, 256<<10)
	var ev trace.Event
	var fold endFolder
	for {
		var n int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if rerr == unix.EAGAIN {
				// Nothing queued: a held end event has no policy
				// event coming after it.
				fold.flush(emit)
				return false
			}
			return true
		})
		if err == nil {
			err = rerr
		}
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
		now := monotonic()
		b := buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			typ := binary.NativeEndian.Uint16(b[4:6])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			if typ == nfnlSubsysNftables<<8|nftMsgTrace && s.dec.decode(b[unix.NLMSG_HDRLEN:l], now, &ev) {
				fold.push(&ev, emit)
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}

// Close implements Source.
func (s *NftraceSource) Close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	s.ifn.mu.Lock()
	if s.ifn.rtnl != nil {
		err = errors.Join(err, s.ifn.rtnl.Close())
		s.ifn.rtnl = nil
	}
	s.ifn.mu.Unlock()
	return err
}
