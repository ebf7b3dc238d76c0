package rules

import (
	"net/netip"
	"strconv"
	"strings"
)

// A ruleset snapshot annotates hops with rule text. A kube-proxy node with
// 10,000 Services has 150,000 rules, nearly all in per-Service chains the
// traced packets never enter; indexing them all would cost the agent tens
// of MiB, and printing them takes iptables-nft-save ~10 s. So a snapshot
// keeps every chain except the per-Service chains the traced packets cannot
// reach: Reach is that walk, for every way the agent reads a ruleset.

// Traced is what a session traces, as far as the reach walk needs it.
type Traced struct {
	// Dsts are the traced destinations (ClusterIPs, external IPs).
	Dsts []netip.AddrPort
	// NodePorts are the traced node ports.
	NodePorts []uint16
	// Proto is "tcp", "udp" or "sctp".
	Proto string
}

// Syntax is the text a Reach reads.
type Syntax int

const (
	// IptablesSyntax is iptables -S / iptables-save rule lines.
	IptablesSyntax Syntax = iota
	// NftSyntax is `nft list` output (kube-proxy's nftables mode).
	NftSyntax
)

// Reach finds the kube-proxy per-Service chains the traced packets can
// reach. Feed it rule lines (Line, in any order, each line once); the
// chains a line of a fixed chain leads to, when the line matches a traced
// destination, are reachable, and so is every per-Service chain a
// reachable one jumps to. Next hands out the reachable chains as they are
// found, so a caller can read chains one by one (fetching what Next
// returns) or read everything first. Lines are not retained.
type Reach struct {
	syntax  Syntax
	traced  Traced
	edges   map[string][]string // per-Service chain -> per-Service targets
	reached map[string]bool
	queue   []string
	rooted  bool
}

// NewReach returns a walk over rules of syntax s for what t traces.
func NewReach(s Syntax, t Traced) *Reach {
	return &Reach{syntax: s, traced: t, edges: map[string][]string{}, reached: map[string]bool{}}
}

// PerService reports whether chain is a kube-proxy per-Service chain of
// the walk's syntax (what Reach prunes).
func (r *Reach) PerService(chain string) bool {
	if r.syntax == NftSyntax {
		info, ok := classifyNftMode(chain)
		return ok && perServiceKind(info.Kind)
	}
	return iptablesServicePrefix(chain) != ""
}

// Line takes one rule line of chain.
func (r *Reach) Line(chain, line string) {
	var targets []string
	if r.syntax == NftSyntax {
		targets = nftTargets(line)
	} else {
		targets = iptablesTargets(line)
	}
	if r.PerService(chain) {
		for _, t := range targets {
			if !r.PerService(t) {
				continue
			}
			c, t := strings.Clone(chain), strings.Clone(t)
			r.edges[c] = append(r.edges[c], t)
			if r.reached[c] {
				r.queue = append(r.queue, t)
			}
		}
		return
	}
	for _, t := range targets {
		if r.PerService(t) && r.leadsIn(line) {
			r.rooted = true
			r.queue = append(r.queue, strings.Clone(t))
		}
	}
}

// Also makes chains reachable whatever the rules say (the chains named
// after the traced Services, ServiceChains). They do not count as found by
// a rule (Rooted).
func (r *Reach) Also(chains ...string) {
	r.queue = append(r.queue, chains...)
}

// Rooted reports whether some rule leads the traced packets into a
// per-Service chain. When none does, the walk says nothing: the trace may
// go anywhere, and every chain should be kept.
func (r *Reach) Rooted() bool { return r.rooted }

// Next returns the per-Service chains found reachable since the last call,
// each once, and their closure over the lines read so far.
func (r *Reach) Next() []string {
	var out []string
	for len(r.queue) > 0 {
		c := r.queue[len(r.queue)-1]
		r.queue = r.queue[:len(r.queue)-1]
		if r.reached[c] {
			continue
		}
		r.reached[c] = true
		out = append(out, c)
		r.queue = append(r.queue, r.edges[c]...)
	}
	return out
}

// Keep reports whether a snapshot keeps chain: every chain that is not
// per-Service, and the reachable per-Service ones (call Next first). Before
// any rule led into a per-Service chain, it keeps everything.
func (r *Reach) Keep(chain string) bool {
	return !r.rooted || !r.PerService(chain) || r.reached[chain]
}

// leadsIn reports whether a rule line of a fixed chain matches a traced
// destination.
func (r *Reach) leadsIn(line string) bool {
	if r.syntax == NftSyntax {
		return r.nftLine(line)
	}
	return r.iptablesLine(line)
}

// iptablesLine: "-d IP/32 ... --dport P" or "--dport NODEPORT" (KUBE-NODEPORTS).
func (r *Reach) iptablesLine(line string) bool {
	for _, d := range r.traced.Dsts {
		bits := "/32"
		if d.Addr().Is6() {
			bits = "/128"
		}
		if hasToken(line, "-d "+d.Addr().String()+bits) && hasToken(line, "--dport "+strconv.Itoa(int(d.Port()))) {
			return true
		}
	}
	for _, p := range r.traced.NodePorts {
		// Keeping a chain too many costs little; missing one loses text.
		if hasToken(line, "--dport "+strconv.Itoa(int(p))) {
			return true
		}
	}
	return false
}

// nftLine: a service-ips element "IP . tcp . P : goto ..." or a
// service-nodeports element "tcp . NODEPORT : goto ...".
func (r *Reach) nftLine(line string) bool {
	proto := r.traced.Proto
	for _, d := range r.traced.Dsts {
		if strings.Contains(line, d.Addr().String()+" . "+proto+" . "+strconv.Itoa(int(d.Port()))+" ") {
			return true
		}
	}
	for _, p := range r.traced.NodePorts {
		if strings.Contains(line, proto+" . "+strconv.Itoa(int(p))+" ") && !strings.Contains(line, ". "+proto+" .") {
			return true
		}
	}
	return false
}

func hasToken(line, tok string) bool {
	i := strings.Index(line, tok)
	for i >= 0 {
		end := i + len(tok)
		if end == len(line) || line[end] == ' ' || line[end] == ',' || line[end] == '}' {
			return true
		}
		j := strings.Index(line[end:], tok)
		if j < 0 {
			return false
		}
		i = end + j
	}
	return false
}

// iptablesTargets returns the chains a rule line jumps or goes to.
func iptablesTargets(line string) []string {
	var out []string
	for _, flag := range []string{" -j ", " -g "} {
		if i := strings.Index(line, flag); i >= 0 {
			t := line[i+len(flag):]
			if j := strings.IndexByte(t, ' '); j >= 0 {
				t = t[:j]
			}
			out = append(out, t)
		}
	}
	return out
}

// nftTargets returns the chains a line names after goto/jump (also inside
// verdict maps: "0 : goto endpoint-...").
func nftTargets(line string) []string {
	var out []string
	for _, kw := range []string{"goto ", "jump "} {
		rest := line
		for {
			i := strings.Index(rest, kw)
			if i < 0 {
				break
			}
			rest = rest[i+len(kw):]
			end := strings.IndexAny(rest, " ,}\t")
			t := rest
			if end >= 0 {
				t = rest[:end]
			}
			out = append(out, strings.Trim(t, `"`))
		}
	}
	return out
}

// ServiceChains returns the iptables-mode chains kube-proxy names after
// the given Service ports (KUBE-SVC-, KUBE-SVL-, KUBE-EXT-, KUBE-FW- plus
// the hash), for Reach.Also: a snapshot keeps them even if no rule read
// names them.
func ServiceChains(ports []ServicePort) []string {
	var out []string
	for _, sv := range ports {
		name := ServicePortName(sv.Namespace, sv.Name, sv.Port)
		for _, p := range servicePrefixes {
			out = append(out, ServiceChainName(p, name, sv.Proto))
		}
	}
	return out
}
