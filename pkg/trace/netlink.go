//go:build linux

package trace

import (
	"encoding/binary"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/intern"
)

// This file decodes nftables trace events as the kernel sends them on
// netlink (NFT_MSG_TRACE, group NFNLGRP_NFTRACE): what iptables-nft TRACE
// rules and nftables' "meta nftrace set 1" produce. No library decodes them.
// It is the one Linux-only decoder: the attribute numbers come from
// golang.org/x/sys/unix, which defines them for Linux only, and only the
// Linux agent reads the socket.

// Netfilter verdict codes (include/uapi/linux/netfilter.h; x/sys/unix has
// the nf_tables ones, NFT_*, but not these).
const (
	nfDrop   = 0
	nfAccept = 1
	nfStolen = 2
	nfQueue  = 3
	nfRepeat = 4
	nfStop   = 5
)

// nlaTypeMask strips NLA_F_NESTED and NLA_F_NET_BYTEORDER from an
// attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

// nftVerdictCode maps a netfilter verdict code to the Event.Verdict word.
func nftVerdictCode(code int32) string {
	switch code {
	case unix.NFT_CONTINUE:
		return "CONTINUE"
	case unix.NFT_BREAK:
		return "BREAK"
	case unix.NFT_JUMP:
		return "JUMP"
	case unix.NFT_GOTO:
		return "GOTO"
	case unix.NFT_RETURN:
		return "RETURN"
	}
	// Non-negative codes carry a queue number or errno in the upper bits.
	switch code & 0xff {
	case nfDrop:
		return "DROP"
	case nfAccept:
		return "ACCEPT"
	case nfStolen:
		return "STOLEN"
	case nfQueue:
		return "QUEUE"
	case nfRepeat:
		return "REPEAT"
	case nfStop:
		return "STOP"
	}
	return "UNKNOWN"
}

// NetlinkDecoder turns NFT_MSG_TRACE messages into Events. The kernel sends
// the packet's headers and interfaces only on the first event of each base
// chain traversal; the decoder keeps them per trace id and fills them into
// the following events (HasHeader false), as the text decoders do.
// Steady-state decoding allocates nothing: names are interned. A
// NetlinkDecoder is used by one goroutine.
type NetlinkDecoder struct {
	names  intern.Table
	ifname func(idx uint32) string
	hdrs   [256]struct {
		id   uint32
		used bool
		hdr  Header
	}
}

// NewNetlinkDecoder returns a decoder that names interfaces with ifname
// (trace events carry interface indexes only).
func NewNetlinkDecoder(ifname func(idx uint32) string) *NetlinkDecoder {
	return &NetlinkDecoder{names: intern.New(maxNames), ifname: ifname}
}

func (d *NetlinkDecoder) slot(id uint32) int { return int((id * 2654435761) >> 24) }

// Decode fills ev from the payload of one NFT_MSG_TRACE message (after the
// netlink header: nfgenmsg, then attributes), stamped now. It reports false
// for a message without table, chain, trace type or trace id (the kernel
// sends all four with every event).
func (d *NetlinkDecoder) Decode(payload []byte, now time.Duration, ev *Event) bool {
	if len(payload) < 4 {
		return false
	}
	*ev = Event{Time: now}
	var nh, th []byte
	var iif, oif, mark uint32
	var haveIIF, haveOIF bool
	forAttrs(payload[4:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NFTA_TRACE_TABLE:
			ev.Table = d.names.Get(trimNUL(v))
		case unix.NFTA_TRACE_CHAIN:
			ev.Chain = d.names.Get(trimNUL(v))
		case unix.NFTA_TRACE_RULE_HANDLE:
			if len(v) == 8 {
				ev.Handle = binary.BigEndian.Uint64(v)
			}
		case unix.NFTA_TRACE_TYPE:
			if len(v) == 4 {
				switch binary.BigEndian.Uint32(v) {
				case unix.NFT_TRACETYPE_POLICY:
					ev.Kind = KindPolicy
				case unix.NFT_TRACETYPE_RETURN:
					ev.Kind = KindReturn
				case unix.NFT_TRACETYPE_RULE:
					ev.Kind = KindRule
				}
			}
		case unix.NFTA_TRACE_VERDICT:
			forAttrs(v, func(t uint16, w []byte) {
				switch t {
				case unix.NFTA_VERDICT_CODE:
					if len(w) == 4 {
						ev.Verdict = nftVerdictCode(int32(binary.BigEndian.Uint32(w)))
					}
				case unix.NFTA_VERDICT_CHAIN:
					ev.Target = d.names.Get(trimNUL(w))
				}
			})
		case unix.NFTA_TRACE_ID:
			if len(v) == 4 {
				ev.TraceID = binary.BigEndian.Uint32(v)
				ev.HasID = true
			}
		case unix.NFTA_TRACE_NETWORK_HEADER:
			nh = v
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			th = v
		case unix.NFTA_TRACE_IIF:
			if len(v) == 4 {
				iif, haveIIF = binary.BigEndian.Uint32(v), true
			}
		case unix.NFTA_TRACE_OIF:
			if len(v) == 4 {
				oif, haveOIF = binary.BigEndian.Uint32(v), true
			}
		case unix.NFTA_TRACE_MARK:
			if len(v) == 4 {
				mark = binary.BigEndian.Uint32(v)
			}
		case unix.NFTA_TRACE_POLICY:
			// Sent with policy events only: the base chain's policy.
			if len(v) == 4 {
				ev.Verdict = nftVerdictCode(int32(binary.BigEndian.Uint32(v)))
			}
		}
	})
	if ev.Table == "" || ev.Chain == "" || ev.Kind == 0 || !ev.HasID {
		return false
	}
	slot := &d.hdrs[d.slot(ev.TraceID)]
	if nh != nil {
		var h Header
		parseRawHeaders(nh, th, &h)
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

// parseRawHeaders fills h from the raw IPv4/IPv6 header bytes and the
// transport header bytes of a trace event.
func parseRawHeaders(nh, th []byte, h *Header) {
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
	case ProtoTCP:
		if len(th) >= 14 {
			h.SPort = binary.BigEndian.Uint16(th[0:2])
			h.DPort = binary.BigEndian.Uint16(th[2:4])
			h.TCPSeq = binary.BigEndian.Uint32(th[4:8])
			h.TCPFlags = th[13]
		}
	case ProtoUDP, ProtoSCTP:
		if len(th) >= 4 {
			h.SPort = binary.BigEndian.Uint16(th[0:2])
			h.DPort = binary.BigEndian.Uint16(th[2:4])
		}
	case ProtoICMP, ProtoICMPv6:
		if len(th) >= 2 {
			h.ICMPType, h.ICMPCode = th[0], th[1]
		}
		if len(th) >= 8 {
			h.ICMPID = binary.BigEndian.Uint16(th[4:6])
			h.ICMPSeq = binary.BigEndian.Uint16(th[6:8])
		}
	}
}

// forAttrs calls fn with the type (flags stripped) and payload of each
// netlink attribute in b. It stays ours, not mdlayher/netlink's
// AttributeDecoder: that one is allocated per message, and decoding must
// allocate nothing at tens of thousands of events a second.
func forAttrs(b []byte, fn func(typ uint16, v []byte)) {
	for len(b) >= unix.SizeofNlAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < unix.SizeofNlAttr || l > len(b) {
			return
		}
		fn(typ, b[unix.SizeofNlAttr:l])
		b = b[min((l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(b)):]
	}
}

func trimNUL(v []byte) []byte {
	for i, c := range v {
		if c == 0 {
			return v[:i]
		}
	}
	return v
}

// EndFolder turns the kernel's "end of chain" trace events into what the
// other trace tools show. When no rule ends a chain's traversal, the kernel
// sends a rule event without a handle and with verdict CONTINUE. For a base
// chain the policy event follows at once and says it all: the end event is
// dropped. For a user chain it means the packet went back to the calling
// chain: it becomes a KindReturn event, as a legacy "return" record.
type EndFolder struct {
	// Base, when set, says whether the event's chain is a base chain and
	// whether that is known (rules.Index.BaseChain). A user chain's end is
	// then a return at once; a base chain's is held until its policy event,
	// which the kernel sends right after it but may not have queued yet
	// when the reader finds the queue empty.
	Base func(ev *Event) (base, known bool)

	pending Event
	has     bool
}

func isImplicitEnd(ev *Event) bool {
	return ev.Kind == KindRule && ev.Handle == 0 && ev.Verdict == "CONTINUE"
}

// Push takes the next decoded event; emit gets the events to keep (its
// Event is reused once emit returns).
func (f *EndFolder) Push(ev *Event, emit func(*Event)) {
	if f.has {
		p := &f.pending
		if ev.Kind == KindPolicy && ev.TraceID == p.TraceID && ev.Table == p.Table && ev.Chain == p.Chain {
			// Dropped: the policy event now opens the traversal.
			ev.HasHeader = ev.HasHeader || p.HasHeader
		} else {
			f.Flush(emit)
		}
		f.has = false
	}
	if isImplicitEnd(ev) {
		if f.Base != nil {
			if base, known := f.Base(ev); known && !base {
				asReturn(ev)
				emit(ev)
				return
			}
		}
		f.pending, f.has = *ev, true
		return
	}
	emit(ev)
}

// Idle is told that nothing more is queued: a held end event of a chain not
// known as a base chain has no policy event coming and is emitted as a
// return.
func (f *EndFolder) Idle(emit func(*Event)) {
	if !f.has {
		return
	}
	if f.Base != nil {
		if base, known := f.Base(&f.pending); known && base {
			return // its policy event is on its way
		}
	}
	f.Flush(emit)
}

// Held reports whether an end event is held (read, not emitted yet).
func (f *EndFolder) Held() bool { return f.has }

func asReturn(ev *Event) {
	ev.Kind = KindReturn
	ev.Verdict = "RETURN"
}

// Flush emits a held end event as a return (no policy event follows it).
func (f *EndFolder) Flush(emit func(*Event)) {
	if !f.has {
		return
	}
	f.has = false
	asReturn(&f.pending)
	emit(&f.pending)
}
