package trace

import (
	"bytes"
	"net/netip"
	"strings"
	"time"
)

// Kind says why a trace record was emitted.
type Kind uint8

const (
	// KindRule: a rule matched (logged before its target runs).
	KindRule Kind = iota + 1
	// KindReturn: the packet fell off the end of a user-defined chain.
	KindReturn
	// KindPolicy: the packet fell off the end of a built-in (base) chain and
	// the chain's policy applies.
	KindPolicy
)

// String returns "rule", "return" or "policy" (the words the kernel prints).
func (k Kind) String() string {
	switch k {
	case KindRule:
		return "rule"
	case KindReturn:
		return "return"
	case KindPolicy:
		return "policy"
	}
	return "unknown"
}

// IP protocol numbers used in Header.Proto.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// TCP flag bits in Header.TCPFlags (the order of the TCP header).
const (
	TCPFin uint8 = 1 << iota
	TCPSyn
	TCPRst
	TCPPsh
	TCPAck
	TCPUrg
	TCPEce
	TCPCwr
)

// Header is the packet as one trace record shows it. Fields a record does not
// carry are zero. Strings are interned by the decoder that produced them.
type Header struct {
	In, Out         string // interface names ("" when unset)
	PhysIn, PhysOut string // bridge ports (bridge netfilter)
	Family          uint8  // 4 or 6
	Proto           uint8  // IP protocol number (ProtoTCP, ...)
	Src, Dst        netip.Addr
	SPort, DPort    uint16
	IPID            uint32 // IPv4 identification, or IPv6 flow label
	TCPSeq          uint32
	TCPFlags        uint8
	ICMPType        uint8
	ICMPCode        uint8
	ICMPID, ICMPSeq uint16
	Mark            uint32
	Len             uint16
}

// Event is one trace record: one packet hitting a rule, returning from a user
// chain, or reaching a base chain's policy.
type Event struct {
	// Seq is the kernel log sequence number (kmsg), 0 when the container has none.
	Seq uint64
	// Time is the kernel timestamp (time since boot) when the record has
	// one; a netlink trace event has none and is stamped when it is read.
	Time time.Duration
	// TraceID is the nftables trace id (HasID reports whether there is one).
	TraceID uint32
	HasID   bool

	Table, Chain string
	Kind         Kind
	// Rule is the 1-based rule position within the chain (legacy), 0 if unknown.
	// For KindReturn and KindPolicy the kernel reports N+1 (one past the last rule).
	Rule int
	// Handle is the nftables rule handle, 0 if unknown.
	Handle uint64
	// Verdict is the verdict the trace itself reports (nft only), upper case:
	// ACCEPT, DROP, CONTINUE, JUMP, GOTO, RETURN, QUEUE, STOLEN; "" if none.
	Verdict string
	// Target is the chain a JUMP/GOTO verdict names (nft only).
	Target string
	// Text is the rule text when the trace carries it (xtables-monitor, nft).
	Text string
	// HasHeader reports whether Header was carried by this record: legacy
	// records always carry it; for nft only the first record of each base
	// chain traversal does (the kernel sends the packet headers with that
	// event, the text formats print a "packet:" / "PACKET:" line before
	// it). Decoders fill the id's last header into the records that follow
	// (HasHeader false, Header set), with the mark updated when a record
	// shows it; Header is zero when no header was seen for the id.
	HasHeader bool
	Header    Header
	// LinkDst and LinkSrc are the received frame's destination and source
	// MAC addresses (the legacy MAC= field, present when IN= is set);
	// HasLink reports whether the record carried them. They tell which
	// node's interface received a frame when several network namespaces
	// share one kernel log.
	LinkDst, LinkSrc [6]byte
	HasLink          bool
}

// Packet is one packet's ordered traversal of the netfilter hooks: what the
// Grouper emits.
type Packet struct {
	// TraceID is the nftables trace id of the packet's first record (HasID
	// reports whether there is one). The kernel can change a bridged
	// packet's trace id between hooks; the Grouper joins the records of
	// the new id to the packet, which keeps its first id.
	TraceID uint32
	HasID   bool
	// First is the packet as first seen (before any NAT).
	First Header
	// Start and End are the kernel timestamps of the first and last hop.
	Start, End time.Duration
	Hops       []Hop
}

// Hop is one step of a Packet's path.
type Hop struct {
	Table, Chain string
	// Hook is the netfilter hook the chain ran in: "PREROUTING", "INPUT",
	// "FORWARD", "OUTPUT" or "POSTROUTING", or "" when unknown. A built-in
	// chain names its hook; a user chain runs in the hook of the base chain
	// that jumped to it (the packet's last base chain before the hop). In
	// nft tables other than iptables' own, base chains named the way
	// kube-proxy's nftables mode names them carry the hook in the name:
	// "nat-output", "filter-input", "filter-prerouting-pre-dnat". Hooks of
	// other nft base chains are unknown, and so are those of user chains
	// before any base chain with a known hook.
	Hook    string
	Kind    Kind
	Rule    int
	Handle  uint64
	Verdict string
	Target  string
	Text    string
	// Header is the packet as it was at this hop (addresses after earlier NAT).
	Header Header
}

// tcpFlagNames are the TCP flags in the order the kernel log prints them.
var tcpFlagNames = [...]struct {
	bit  uint8
	name string
}{
	{TCPCwr, "CWR"}, {TCPEce, "ECE"}, {TCPUrg, "URG"}, {TCPAck, "ACK"},
	{TCPPsh, "PSH"}, {TCPRst, "RST"}, {TCPSyn, "SYN"}, {TCPFin, "FIN"},
}

// TCPFlagBit returns the flag a name stands for, in any case ("SYN" in the
// kernel log and xtables-monitor, "syn" in nft; nft's "ecn" is ECE), or 0.
func TCPFlagBit(name []byte) uint8 {
	if bytes.EqualFold(name, []byte("ecn")) {
		return TCPEce
	}
	for _, f := range tcpFlagNames {
		if bytes.EqualFold(name, []byte(f.name)) {
			return f.bit
		}
	}
	return 0
}

// FormatTCPFlags renders flags as the kernel log does: "ACK PSH".
func FormatTCPFlags(f uint8) string { return tcpFlagStrings[f] }

// tcpFlagStrings is every combination of flags rendered, made once.
var tcpFlagStrings = func() (s [256]string) {
	for f := range s {
		s[f] = formatTCPFlags(uint8(f))
	}
	return s
}()

func formatTCPFlags(f uint8) string {
	var b strings.Builder
	for _, n := range tcpFlagNames {
		if f&n.bit != 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(n.name)
		}
	}
	return b.String()
}
