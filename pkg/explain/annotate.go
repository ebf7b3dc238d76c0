package explain

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// Hop verdicts beyond the packet verdicts of package record.
const (
	verdictJump       = "JUMP"
	verdictGoto       = "GOTO"
	verdictReturn     = "RETURN"
	verdictContinue   = "CONTINUE"
	verdictDNAT       = "DNAT"
	verdictSNAT       = "SNAT"
	verdictMasquerade = "MASQUERADE"
)

// Annotate builds the record of one packet. ix may be nil (no ruleset
// snapshot): the bare path is still produced, rule text comes from the trace
// where it carries it, and NAT is inferred from address changes.
func Annotate(p *trace.Packet, ix *rules.Index) record.Packet {
	return AnnotateLive(p, ix, nil)
}

// AnnotateLive is Annotate for the live agent: live, when not nil, gets the
// annotated record (path, NAT, verdict) and returns what the node's kernel
// says about the packet besides its trace (nil: nothing); the explanation
// is written from those facts too (live.go).
func AnnotateLive(p *trace.Packet, ix *rules.Index, live func(*record.Packet) *record.Live) record.Packet {
	var rec record.Packet
	annotate(&rec, p, ix, live, nil)
	return rec
}

// annotate writes the record of p to rec (all of it). With mem, the
// record's hops, translations and explanation come from mem, and so do its
// formatted strings (see recordMem).
func annotate(rec *record.Packet, p *trace.Packet, ix *rules.Index, live func(*record.Packet) *record.Live, mem *recordMem) {
	fam := p.First.Family
	sc := scratchPool.Get().(*scratch)
	defer sc.put()
	a := annotator{ix: ix, fam: fam, rec: rec, p: p, mem: mem, buf: sc.buf[:0], hooks: sc.hooks[:0], rules: sc.rules[:0], hopFacts: sc.facts[:0]}
	defer func() { sc.hooks, sc.rules, sc.facts, sc.buf = a.hooks, a.rules, a.hopFacts, a.buf }()
	*rec = record.Packet{
		Type:       record.TypePacket,
		Family:     familyName(fam),
		Proto:      protoName(p.First.Proto),
		Src:        a.endpoint(p.First.Src, p.First.SPort, p.First.Proto),
		Dst:        a.endpoint(p.First.Dst, p.First.DPort, p.First.Proto),
		Flags:      tcpFlags(p.First.TCPFlags, p.First.Proto),
		Hops:       mem.newHops(len(p.Hops)),
		NAT:        mem.newNAT(len(p.Hops)),
		Verdict:    record.VerdictUnknown,
		VerdictHop: -1,
		IPID:       p.First.IPID,
	}
	switch p.First.Proto {
	case trace.ProtoTCP:
		rec.TCPSeq = p.First.TCPSeq
	case trace.ProtoICMP, trace.ProtoICMPv6:
		rec.ICMPID, rec.ICMPSeq = p.First.ICMPID, p.First.ICMPSeq
	}
	if p.HasID {
		rec.TraceID = fmt.Sprintf("%08x", p.TraceID)
	}
	for i := range p.Hops {
		a.hop(i)
	}
	a.inferNAT()
	rec.NAT = mem.keepNAT(rec.NAT)
	for i := range rec.Hops {
		a.role(i)
	}
	for i := range rec.Hops {
		rec.Hops[i].Meaning = a.meaning(i, a.rules[i])
	}
	a.decide()
	if live != nil {
		if l := live(rec); l != nil {
			withLive(rec, l)
		}
	}
	rec.Explain = a.explain()
	a.policyChecks()
}

// scratch is the per-hop working memory of one Annotate call, reused by
// later calls: nothing in it outlives the call.
type scratch struct {
	hooks []string
	rules []*rules.Rule
	facts []rules.Facts
	buf   []byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (sc *scratch) put() {
	clear(sc.hooks)
	clear(sc.rules)
	clear(sc.facts) // drop the references into the index
	sc.hooks, sc.rules, sc.facts, sc.buf = sc.hooks[:0], sc.rules[:0], sc.facts[:0], sc.buf[:0]
	scratchPool.Put(sc)
}

// annotator carries the per-packet state of Annotate.
type annotator struct {
	ix    *rules.Index
	fam   uint8
	rec   *record.Packet
	p     *trace.Packet
	mem   *recordMem // where the record's memory comes from (nil: its own)
	buf   []byte     // scratch for the strings being formatted
	hooks []string   // hook of each hop (PREROUTING, OUTPUT, ...; "" when unknown)
	rules []*rules.Rule
	facts pathFacts // what the meanings found out (meaning.go)
	// hopFacts is what the ruleset says about each hop (one lookup each).
	hopFacts []rules.Facts
}

func (a *annotator) hop(i int) {
	h := &a.p.Hops[i]
	out := &a.rec.Hops[i]
	*out = record.Hop{
		Table:  h.Table,
		Chain:  h.Chain,
		Kind:   h.Kind.String(),
		Handle: h.Handle,
		In:     h.Header.In,
		Out:    h.Header.Out,
		Hook:   h.Hook,
	}
	if h.Header.Mark != 0 {
		a.buf = strconv.AppendUint(append(a.buf[:0], "0x"...), uint64(h.Header.Mark), 16)
		out.Mark = a.mem.text(a.buf)
	}
	if i > 0 {
		prev := &a.p.Hops[i-1].Header
		if prev.Src != h.Header.Src || prev.SPort != h.Header.SPort {
			out.Src = a.endpoint(h.Header.Src, h.Header.SPort, h.Header.Proto)
		}
		if prev.Dst != h.Header.Dst || prev.DPort != h.Header.DPort {
			out.Dst = a.endpoint(h.Header.Dst, h.Header.DPort, h.Header.Proto)
		}
	}
	a.hooks = append(a.hooks, h.Hook)

	if h.Kind == trace.KindRule {
		// For returns and policies the kernel's number is one past the
		// chain's last rule, not a rule's position.
		out.Rule = h.Rule
	}
	f := a.lookup(h)
	r := f.Rule
	a.hopFacts = append(a.hopFacts, f)
	a.rules = append(a.rules, r)
	if r != nil {
		out.Text = r.Text
		if out.Rule == 0 {
			out.Rule = r.Pos
		}
	}
	if h.Text != "" {
		out.Text = h.Text
	}
	switch h.Kind {
	case trace.KindReturn:
		out.Verdict = verdictReturn
	case trace.KindPolicy:
		out.Verdict = h.Verdict
		if out.Verdict == "" {
			out.Verdict = f.Policy
		}
		if out.Verdict == "" && i+1 < len(a.p.Hops) {
			// The kernel went on with the packet: the policy accepted it.
			out.Verdict = record.VerdictAccept
		}
	case trace.KindRule:
		out.Verdict, out.Target = ruleVerdict(h, r)
		if r == nil && out.Verdict == "" && i+1 < len(a.p.Hops) {
			// Without the rule, the next record tells: a record in another
			// user chain of the same table means this rule jumped there.
			next := &a.p.Hops[i+1]
			if next.Table == h.Table && next.Chain != h.Chain && rules.ClassifyName(next.Chain).Kind != rules.ChainBuiltin {
				out.Verdict, out.Target = verdictJump, next.Chain
			}
		}
	}
}

// lookup asks the snapshot, once, everything about the hop's chain and
// rule; without the rule there, it parses the rule text the trace carried.
func (a *annotator) lookup(h *trace.Hop) rules.Facts {
	var f rules.Facts
	ok := false
	if a.ix != nil {
		pos, handle := 0, uint64(0)
		if h.Kind == trace.KindRule {
			pos, handle = h.Rule, h.Handle
		}
		f, ok = a.ix.Hop(a.fam, h.Table, h.Chain, pos, handle)
		if !ok && handle != 0 && h.Text != "" {
			// xtables-monitor with iptables-save output: no handles there.
			f, ok = a.ix.HopByText(a.fam, h.Table, h.Chain, h.Text)
		}
	} else {
		f = rules.RuleFacts(h.Chain, nil)
	}
	if h.Kind != trace.KindRule {
		f.Rule = nil
		return f
	}
	if (!ok || f.Rule == nil) && h.Text != "" {
		r := rules.ParseRuleText(h.Text)
		chain, policy := f.Chain, f.Policy
		f = rules.RuleFacts(h.Chain, &r)
		f.Chain, f.Policy = chain, policy
		if r.Jump != "" {
			f.Target = a.chainInfo(h.Table, r.Jump)
		}
	}
	return f
}

// role says what hop i decided, from its verdict and the chains involved,
// and for the endpoint choice the share the rules give that endpoint.
func (a *annotator) role(i int) {
	h := &a.rec.Hops[i]
	f := &a.hopFacts[i]
	switch h.Verdict {
	case verdictDNAT:
		h.Role = record.RoleDNAT
		if r := a.rules[i]; r != nil && h.Target != "" {
			// kube-proxy's nftables mode chooses the endpoint in the
			// DNAT rule itself.
			h.Share = rules.NumgenShare(r.Text, h.Target)
		}
	case verdictSNAT, verdictMasquerade:
		h.Role = record.RoleSNAT
	case record.VerdictAccept:
		if h.Kind == "rule" {
			h.Role = record.RoleAccept
		}
	case verdictJump, verdictGoto:
		switch to := a.targetInfo(i); to.Kind {
		case rules.ChainService, rules.ChainServiceLocal, rules.ChainExternal, rules.ChainFirewall:
			h.Role = record.RoleService
		case rules.ChainEndpoint:
			h.Role, h.Share = record.RoleEndpoint, f.Share
		case rules.ChainMarkMasq:
			h.Role = record.RoleMasqueradeMark
		}
	case verdictContinue:
		if f.Chain.Kind != rules.ChainMarkMasq && rules.SetsMasqueradeMark(h.Text) {
			h.Role = record.RoleMasqueradeMark
		}
	}
}

// ruleVerdict says what a matched rule did: the trace's own verdict (nft)
// refined by the rule's target.
func ruleVerdict(h *trace.Hop, r *rules.Rule) (verdict, target string) {
	verdict, target = h.Verdict, h.Target
	if r == nil {
		return verdict, target
	}
	t := strings.ToUpper(r.Target)
	switch {
	case r.Jump != "":
		if r.Goto {
			return verdictGoto, r.Jump
		}
		return verdictJump, r.Jump
	case t == verdictDNAT:
		return verdictDNAT, r.ToDestination
	case t == verdictSNAT:
		return verdictSNAT, r.ToSource
	case t == verdictMasquerade:
		return verdictMasquerade, ""
	case t == record.VerdictReject:
		// nftables reports a reject as a drop: the rule says which it was.
		return record.VerdictReject, ""
	case t == record.VerdictAccept, t == record.VerdictDrop, t == verdictReturn,
		t == "QUEUE", t == "NFQUEUE":
		return t, ""
	}
	if verdict == "" || verdict == verdictContinue {
		return verdictContinue, ""
	}
	return verdict, target
}

// inferNAT records the translations the rules applied and those only the
// packet's addresses show (no snapshot, or nft maps choosing the endpoint).
func (a *annotator) inferNAT() {
	rec := a.rec
	hops := a.p.Hops
	dnatSeen := false
	for i := range rec.Hops {
		h := &rec.Hops[i]
		switch h.Verdict {
		case verdictDNAT, verdictSNAT, verdictMasquerade:
			n := record.NAT{Kind: h.Verdict, Table: h.Table, Chain: h.Chain, Rule: h.Rule, To: h.Target}
			if h.Verdict == verdictDNAT {
				dnatSeen = true
				if n.To == "" || strings.Contains(n.To, " ") {
					// nft "dnat to numgen ... map {...}": the next hop's
					// header shows the endpoint chosen.
					n.To = a.changedDst(i)
					h.Target = n.To
				}
				if rec.Endpoint == "" {
					rec.Endpoint = n.To
				}
			}
			rec.NAT = append(rec.NAT, n)
		}
		if i == 0 {
			continue
		}
		prev, cur := &hops[i-1].Header, &hops[i].Header
		if !dnatSeen && (prev.Dst != cur.Dst || prev.DPort != cur.DPort) && cur.Dst.IsValid() && prev.Dst.IsValid() {
			dnatSeen = true
			to := a.endpoint(cur.Dst, cur.DPort, cur.Proto)
			// The last nat-table rule before the change made it; with no
			// nat rule traced, conntrack translated an existing connection.
			n := record.NAT{Kind: verdictDNAT, To: to, Inferred: true}
			if j := a.lastNATRule(i); j >= 0 {
				n.Table, n.Chain, n.Rule = rec.Hops[j].Table, rec.Hops[j].Chain, rec.Hops[j].Rule
				if rec.Hops[j].Verdict == "" {
					rec.Hops[j].Verdict, rec.Hops[j].Target = verdictDNAT, to
				}
			}
			rec.NAT = append(rec.NAT, n)
			if rec.Endpoint == "" {
				rec.Endpoint = to
			}
		}
		if (prev.Src != cur.Src || prev.SPort != cur.SPort) && cur.Src.IsValid() && prev.Src.IsValid() && !a.hasSNAT() {
			rec.NAT = append(rec.NAT, record.NAT{Kind: verdictSNAT, Table: hops[i-1].Table, Chain: hops[i-1].Chain,
				To: a.endpoint(cur.Src, cur.SPort, cur.Proto), Inferred: true})
		}
	}
}

// lastNATRule returns the index of the last nat-table rule hop before hop i
// in the same hook, or -1.
func (a *annotator) lastNATRule(i int) int {
	for j := i - 1; j >= 0 && a.hooks[j] == a.hooks[i-1]; j-- {
		h := &a.rec.Hops[j]
		if h.Table == "nat" && h.Kind == "rule" {
			return j
		}
	}
	return -1
}

func (a *annotator) hasSNAT() bool {
	for _, n := range a.rec.NAT {
		if n.Kind == verdictSNAT || n.Kind == verdictMasquerade {
			return true
		}
	}
	return false
}

// changedDst returns the first destination after hop i that differs from the
// destination at hop i.
func (a *annotator) changedDst(i int) string {
	at := a.p.Hops[i].Header
	for _, h := range a.p.Hops[i+1:] {
		if h.Header.Dst.IsValid() && (h.Header.Dst != at.Dst || h.Header.DPort != at.DPort) {
			return a.endpoint(h.Header.Dst, h.Header.DPort, h.Header.Proto)
		}
	}
	return ""
}

// decide sets the packet's verdict, the hop that decided it, and the Service.
func (a *annotator) decide() {
	rec := a.rec
	for i := range rec.Hops {
		if rec.Service == "" {
			rec.Service = a.service(i)
		}
	}
	for i, h := range rec.Hops {
		if h.Verdict == record.VerdictDrop || h.Verdict == record.VerdictReject {
			rec.Verdict, rec.VerdictHop = h.Verdict, i
			return
		}
	}
	n := len(rec.Hops)
	if n == 0 {
		return
	}
	last := a.hooks[n-1]
	if last == "PREROUTING" {
		// Netfilter let the packet go but no later hook saw it: the routing
		// decision (or something outside netfilter) discarded it.
		rec.VerdictHop = n - 1
		return
	}
	if last == "POSTROUTING" || last == "INPUT" {
		// The packet reached its last hook: nothing in its path stopped it.
		rec.Verdict, rec.VerdictHop = record.VerdictAccept, n-1
		return
	}
	for i := n - 1; i >= 0; i-- {
		switch rec.Hops[i].Verdict {
		case record.VerdictAccept, verdictDNAT, verdictSNAT, verdictMasquerade:
			rec.Verdict, rec.VerdictHop = record.VerdictAccept, i
			return
		}
	}
}

// service names the Service a hop's chain (or its jump target, or a
// no-endpoints rule's comment) belongs to.
func (a *annotator) service(i int) string {
	h := &a.rec.Hops[i]
	if s := a.hopFacts[i].Chain.Service; s != "" {
		return s
	}
	if s := a.mapService(i); s != "" {
		return s
	}
	if r := a.rules[i]; r != nil {
		if s := serviceFromComment(r.Comment); s != "" && (h.Verdict == record.VerdictReject || h.Verdict == record.VerdictDrop) {
			return s
		}
		if r.Jump != "" {
			return a.hopFacts[i].Target.Service
		}
	}
	return ""
}

// targetInfo says what hop i's target chain is: what the hop's lookup found
// when its rule jumps there, else what the index says (a target the trace
// or a verdict map named).
func (a *annotator) targetInfo(i int) rules.ChainInfo {
	h := &a.rec.Hops[i]
	if r := a.rules[i]; r != nil && r.Jump != "" && r.Jump == h.Target {
		return a.hopFacts[i].Target
	}
	return a.chainInfo(h.Table, h.Target)
}

func (a *annotator) chainInfo(table, chain string) rules.ChainInfo {
	if a.ix != nil {
		return a.ix.Chain(a.fam, table, chain)
	}
	return rules.ClassifyName(chain)
}

// serviceFromComment names the Service of a kube-proxy "ns/name:port has no
// endpoints" (or "has no local endpoints") comment, "" for other comments.
func serviceFromComment(c string) string {
	if strings.HasSuffix(c, " has no endpoints") || strings.HasSuffix(c, " has no local endpoints") {
		return rules.ServiceFromComment(c)
	}
	return ""
}

// protoName names an IP protocol number the way the JSON contract does.
func protoName(p uint8) string {
	switch p {
	case trace.ProtoTCP:
		return "tcp"
	case trace.ProtoUDP:
		return "udp"
	case trace.ProtoICMP:
		return "icmp"
	case trace.ProtoICMPv6:
		return "icmpv6"
	case trace.ProtoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// tcpFlags renders a TCP packet's flags in the kernel's words ("ACK PSH"),
// "" for other protocols.
func tcpFlags(f uint8, proto uint8) string {
	if proto != trace.ProtoTCP {
		return ""
	}
	return trace.FormatTCPFlags(f)
}

func familyName(f uint8) string {
	if f == 6 {
		return "ipv6"
	}
	return "ipv4"
}

// endpoint formats "ip:port" ("[ip]:port" for IPv6), or "ip" for protocols
// without ports, "" for an invalid address, from the record's memory.
func (a *annotator) endpoint(ip netip.Addr, port uint16, proto uint8) string {
	a.buf = appendEndpoint(a.buf[:0], ip, port, proto)
	return a.mem.text(a.buf)
}
