//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
)

// traceChains are the raw-table hooks where packets enter netfilter:
// PREROUTING for packets arriving at the node, OUTPUT for the node's own.
var traceChains = []string{"PREROUTING", "OUTPUT"}

// traceRule is one TRACE rule of a session.
type traceRule struct {
	Backend ipBackend
	Family  uint8
	Chain   string
	// Spec is everything after "-A CHAIN": what -I inserts and -D deletes.
	Spec []string
	// Text is the rule as iptables -S prints it, read back after insertion.
	Text string
	// Handle is the nftables handle of an iptables-nft rule.
	Handle uint64
}

func (r *traceRule) String() string {
	if r.Text != "" {
		return r.Text
	}
	return "-A " + r.Chain + " " + strings.Join(r.Spec, " ")
}

// ruleSpecs returns the TRACE rule specs of one family for one raw chain:
// one per destination and one per NodePort, each matching only that
// address, protocol and port, by default only connection-opening packets
// and rate limited; in PREROUTING also one per endpoint of this node
// (Config.Endpoints): packets DNATed on another node arrive addressed to it.
func ruleSpecs(cfg *Config, fam uint8, chain, comment string) [][]string {
	var specs [][]string
	src := func() []string {
		if cfg.Src.IsValid() && cfg.Src.Addr().Is4() == (fam == 4) {
			return []string{"-s", cfg.Src.Masked().String()}
		}
		return nil
	}
	tail := func() []string {
		var t []string
		if !cfg.AllPackets {
			switch cfg.Proto {
			case "tcp":
				t = append(t, "--tcp-flags", "FIN,SYN,RST,ACK", "SYN")
			case "sctp":
				t = append(t, "--chunk-types", "any", "INIT")
			}
		}
		return t
	}
	limit := func() []string {
		if cfg.Rate.Unlimited() {
			return nil
		}
		n := strconv.Itoa(cfg.Rate.N)
		return []string{"-m", "limit", "--limit", n + "/" + cfg.Rate.Per, "--limit-burst", n}
	}
	end := []string{"-m", "comment", "--comment", comment, "-j", "TRACE"}
	for _, d := range cfg.Dsts {
		if d.Addr().Is4() != (fam == 4) {
			continue
		}
		bits := 32
		if fam == 6 {
			bits = 128
		}
		s := src()
		s = append(s, "-d", netip.PrefixFrom(d.Addr(), bits).String(), "-p", cfg.Proto, "-m", cfg.Proto, "--dport", strconv.Itoa(int(d.Port())))
		s = append(s, tail()...)
		s = append(s, limit()...)
		specs = append(specs, append(s, end...))
	}
	if chain == "PREROUTING" {
		for _, e := range cfg.Endpoints {
			if e.Addr().Is4() != (fam == 4) {
				continue
			}
			s := src()
			s = append(s, "-d", netip.PrefixFrom(e.Addr(), e.Addr().BitLen()).String(), "-p", cfg.Proto, "-m", cfg.Proto, "--dport", strconv.Itoa(int(e.Port())))
			s = append(s, tail()...)
			s = append(s, limit()...)
			specs = append(specs, append(s, end...))
		}
	}
	for _, p := range cfg.NodePorts {
		s := src()
		s = append(s, "-p", cfg.Proto, "-m", cfg.Proto, "--dport", strconv.Itoa(int(p)))
		s = append(s, tail()...)
		s = append(s, "-m", "addrtype", "--dst-type", "LOCAL")
		s = append(s, limit()...)
		specs = append(specs, append(s, end...))
	}
	return specs
}

// tracer owns a session's TRACE rules from insertion to removal.
type tracer struct {
	h     *host
	sid   sessionID
	cfg   *Config
	det   detection
	rules []*traceRule
	// loggerSet says for which families this session set nf_log.
	loggerSet map[uint8]bool
}

type rawChain struct {
	b     ipBackend
	fam   uint8
	chain string
}

// install inserts every TRACE rule at position 1 of its raw chain. On
// failure it removes what it inserted and returns the error.
func (t *tracer) install(ctx context.Context) error {
	for _, f := range t.det.Families {
		if !t.familyTraced(f.Family) {
			continue
		}
		for _, b := range f.Backends() {
			flags, err := t.createFlags(b, f.Family)
			if err != nil {
				return err
			}
			ipt, err := t.h.iptables(b, f.Family)
			if err != nil {
				return err
			}
			for _, chain := range traceChains {
				fl := flags[chain]
				if b == backendLegacy && t.loggerSet[f.Family] {
					fl += string(flagSetLogger)
				}
				for _, spec := range ruleSpecs(t.cfg, f.Family, chain, t.sid.Comment(fl)) {
					r := &traceRule{Backend: b, Family: f.Family, Chain: chain, Spec: spec}
					if err := ipt.Insert("raw", chain, 1, spec...); err != nil {
						_, rmErr := t.remove(context.WithoutCancel(ctx))
						return errors.Join(fmt.Errorf("insert TRACE rule %q with %s: %w", r, b.Binary(f.Family), err), rmErr)
					}
					t.rules = append(t.rules, r)
				}
			}
		}
	}
	if len(t.rules) == 0 {
		return errors.New("no TRACE rule to insert: no traced family has a kube-proxy backend")
	}
	return t.readBack()
}

func (t *tracer) familyTraced(fam uint8) bool {
	if fam == 4 && len(t.cfg.NodePorts) > 0 {
		return true
	}
	for _, d := range slices.Concat(t.cfg.Dsts, t.cfg.Endpoints) {
		if d.Addr().Is4() == (fam == 4) {
			return true
		}
	}
	// IPv6 NodePorts ride along when kube-proxy has IPv6 rules.
	return fam == 6 && len(t.cfg.NodePorts) > 0
}

// createFlags says, per raw chain, what inserting a rule will create: with
// iptables-nft a missing "raw" table or base chain is created on the fly, and
// must go again once the session's rules are gone for nft list ruleset to
// read as before.
func (t *tracer) createFlags(b ipBackend, fam uint8) (map[string]string, error) {
	flags := map[string]string{}
	if b != backendNft {
		return flags, nil
	}
	n, err := t.h.nftables()
	if err != nil {
		return nil, err
	}
	chains, ok, err := n.Chains(fam, "raw")
	if err != nil {
		return nil, err
	}
	for _, c := range traceChains {
		switch {
		case !ok:
			flags[c] = string(flagCreatedTable) + string(flagCreatedChain)
		case !slices.Contains(chains, c):
			flags[c] = string(flagCreatedChain)
		}
	}
	return flags, nil
}

// readBack fills each rule's Text (as iptables -S prints it) and, for
// iptables-nft, its nftables handle.
func (t *tracer) readBack() error {
	type key struct {
		b     ipBackend
		fam   uint8
		chain string
	}
	listed := map[key][]string{}
	handles := map[key][]kernel.NftRule{}
	for _, r := range t.rules {
		k := key{r.Backend, r.Family, r.Chain}
		if _, ok := listed[k]; !ok {
			ipt, err := t.h.iptables(r.Backend, r.Family)
			if err != nil {
				return err
			}
			lines, err := ipt.List("raw", r.Chain)
			if err != nil {
				return fmt.Errorf("list raw %s with %s: %w", r.Chain, r.Backend.Binary(r.Family), err)
			}
			listed[k] = lines
			if r.Backend == backendNft {
				n, err := t.h.nftables()
				if err != nil {
					return err
				}
				if handles[k], err = n.Rules(r.Family, "raw", r.Chain); err != nil {
					return err
				}
			}
		}
		comment := specComment(r.Spec)
		// The kernel lists an iptables-nft chain's rules in the order
		// iptables -S prints them: the k-th "-A" line has the k-th handle.
		k2 := 0
		hs := handles[k]
		for _, l := range listed[k] {
			if !strings.HasPrefix(l, "-A ") {
				continue
			}
			if ruleLineComment(l) == comment && sameRule(l, r) {
				r.Text = l
				if r.Backend == backendNft && len(hs) == countAppends(listed[k]) && hs[k2].Comment == comment {
					r.Handle = hs[k2].Handle
				}
			}
			k2++
		}
	}
	return nil
}

func countAppends(lines []string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n
}

// sameRule reports whether a listed rule line is r: same chain, same
// destination (or NodePort) and port. Lines are normalised by iptables, so
// the match is on the fields that tell a session's rules apart.
func sameRule(line string, r *traceRule) bool {
	if line == "" {
		return true
	}
	args := splitRuleArgs(line)
	if len(args) < 2 || args[0] != "-A" || args[1] != r.Chain {
		return false
	}
	return argValue(args, "-d") == argValue(r.Spec, "-d") && argValue(args, "--dport") == argValue(r.Spec, "--dport")
}

func argValue(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func specComment(spec []string) string { return argValue(spec, "--comment") }

// ruleLineComment returns the --comment of an iptables -S line.
func ruleLineComment(line string) string {
	if !strings.Contains(line, "--comment") {
		return ""
	}
	return argValue(splitRuleArgs(line), "--comment")
}

// missing returns the session's rules that are no longer in the kernel
// (someone restored the raw table without them).
func (t *tracer) missing(ctx context.Context) ([]*traceRule, error) {
	var out []*traceRule
	type key struct {
		b     ipBackend
		fam   uint8
		chain string
	}
	listed := map[key][]string{}
	for _, r := range t.rules {
		k := key{r.Backend, r.Family, r.Chain}
		lines, ok := listed[k]
		if !ok {
			ipt, err := t.h.iptables(r.Backend, r.Family)
			if err != nil {
				return nil, err
			}
			lines, err = ipt.List("raw", r.Chain)
			if err != nil && !isGoIptablesNotExist(err) {
				return nil, fmt.Errorf("check TRACE rules in raw %s with %s: %w", r.Chain, r.Backend.Binary(r.Family), err)
			}
			listed[k] = lines
		}
		found := false
		for _, l := range lines {
			if ruleLineComment(l) == specComment(r.Spec) && sameRule(l, r) {
				found = true
				break
			}
		}
		if !found {
			out = append(out, r)
		}
	}
	return out, nil
}

// reinstall inserts rules again (after missing found them gone).
func (t *tracer) reinstall(ctx context.Context, rs []*traceRule) error {
	for _, r := range rs {
		ipt, err := t.h.iptables(r.Backend, r.Family)
		if err != nil {
			return err
		}
		if err := ipt.Insert("raw", r.Chain, 1, r.Spec...); err != nil {
			return fmt.Errorf("insert TRACE rule %q again with %s: %w", r, r.Backend.Binary(r.Family), err)
		}
	}
	return t.readBack()
}

// remove deletes every rule of the session by its exact spec (never by
// number: kube-proxy may have moved it), then the nft chains and table the
// session created if they are empty. It returns how many rules it deleted.
func (t *tracer) remove(ctx context.Context) (int, error) {
	var errs []error
	created := map[rawChain]string{}
	for _, r := range t.rules {
		if _, flags, ok := parseComment(specComment(r.Spec)); ok && r.Backend == backendNft {
			created[rawChain{r.Backend, r.Family, r.Chain}] += flags
		}
	}
	// What the one-transaction removal leaves (legacy rules, or it failed)
	// is deleted rule by rule with iptables.
	gone := t.removeByHandle()
	removed := len(gone)
	for _, r := range t.rules {
		if gone[r] {
			continue
		}
		ipt, err := t.h.iptables(r.Backend, r.Family)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = ipt.Delete("raw", r.Chain, r.Spec...)
		switch {
		case err == nil:
			removed++
		case isGoIptablesNotExist(err):
			// Gone already (a raw table restore): nothing to do.
		default:
			errs = append(errs, fmt.Errorf("delete TRACE rule %q with %s: %w", r, r.Backend.Binary(r.Family), err))
		}
	}
	t.rules = nil
	if err := dropCreated(ctx, t.h, created); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// removeByHandle deletes the session's iptables-nft rules by handle, in
// one nf_tables transaction per family (an iptables-nft -D per rule takes
// 20-30 ms each), and returns those it deleted. Only handles that still hold
// this session's rule are deleted: a raw table deleted and created again
// numbers its rules anew. What it cannot delete (a listing or the
// transaction failed) is left to the caller.
func (t *tracer) removeByHandle() map[*traceRule]bool {
	byFam := map[uint8][]*traceRule{}
	for _, r := range t.rules {
		if r.Backend == backendNft && r.Handle != 0 {
			byFam[r.Family] = append(byFam[r.Family], r)
		}
	}
	if len(byFam) == 0 {
		return nil
	}
	n, err := t.h.nftables()
	if err != nil {
		return nil
	}
	type chainHandle struct {
		chain  string
		handle uint64
	}
	gone := map[*traceRule]bool{}
	for fam, rs := range byFam {
		ours := map[chainHandle]bool{}
		listed := map[string]bool{}
		for _, r := range rs {
			if listed[r.Chain] {
				continue
			}
			listed[r.Chain] = true
			cur, err := n.Rules(fam, "raw", r.Chain)
			if err != nil {
				continue
			}
			for _, c := range cur {
				if sid, _, ok := parseComment(c.Comment); ok && sid == t.sid.String() {
					ours[chainHandle{r.Chain, c.Handle}] = true
				}
			}
		}
		var refs []kernel.RuleRef
		var del []*traceRule
		for _, r := range rs {
			if ours[chainHandle{r.Chain, r.Handle}] {
				refs = append(refs, kernel.RuleRef{Chain: r.Chain, Handle: r.Handle})
				del = append(del, r)
			}
		}
		if len(refs) == 0 {
			continue
		}
		if err := n.DeleteRules(fam, "raw", refs); err != nil {
			continue
		}
		for _, r := range del {
			gone[r] = true
		}
	}
	return gone
}

// dropCreated deletes, for each nft raw chain whose svctrace rules carried
// the created-chain flag, the chain if it is now empty; and the raw table if
// a rule carried the created-table flag and the table has no chain left.
// An empty accept-policy base chain has no effect on packets, so deleting it
// cannot disturb anyone; a chain someone filled meanwhile is kept.
func dropCreated(ctx context.Context, h *host, created map[rawChain]string) error {
	var errs []error
	tables := map[uint8]bool{}
	for rc, flags := range created {
		if strings.ContainsRune(flags, flagCreatedTable) {
			tables[rc.fam] = true
		}
		if !strings.ContainsRune(flags, flagCreatedChain) {
			continue
		}
		n, err := h.nftables()
		if err != nil {
			return err
		}
		rs, err := n.Rules(rc.fam, "raw", rc.chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(rs) > 0 {
			continue
		}
		// iptables-nft deletes an empty built-in chain with -X.
		if _, err := h.run(ctx, backendNft.Binary(rc.fam), "-w", "-t", "raw", "-X", rc.chain); err != nil && !isNoSuchChain(err) {
			errs = append(errs, fmt.Errorf("delete the empty raw %s chain svctrace created: %w", rc.chain, err))
		}
	}
	for fam := range tables {
		n, err := h.nftables()
		if err != nil {
			return err
		}
		chains, ok, err := n.Chains(fam, "raw")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !ok || len(chains) > 0 {
			continue
		}
		family := "ip"
		if fam == 6 {
			family = "ip6"
		}
		if _, err := h.run(ctx, "nft", "delete", "table", family, "raw"); err != nil && !isNoSuchChain(err) {
			errs = append(errs, fmt.Errorf("delete the empty %s raw table svctrace created: %w", family, err))
		}
	}
	return errors.Join(errs...)
}

// matchedPackets returns how many packets each of the session's nft rules
// matched (rule counters), summed: every one started a trace.
func (t *tracer) matchedPackets(b ipBackend) (uint64, error) {
	var total uint64
	seen := map[rawChain]bool{}
	for _, r := range t.rules {
		k := rawChain{r.Backend, r.Family, r.Chain}
		if r.Backend != b || seen[k] {
			continue
		}
		seen[k] = true
		ipt, err := t.h.iptables(r.Backend, r.Family)
		if err != nil {
			return 0, err
		}
		lines, err := ipt.ListWithCounters("raw", r.Chain)
		if err != nil {
			return 0, fmt.Errorf("read TRACE rule counters: %w", err)
		}
		for _, l := range lines {
			sid, _, ok := parseComment(ruleLineComment(l))
			if !ok || sid != t.sid.String() {
				continue
			}
			if p, ok := lineCounter(l); ok {
				total += p
			}
		}
	}
	return total, nil
}

// lineCounter reads the packet count of an `iptables -S -v` line ("-c P B").
func lineCounter(line string) (uint64, bool) {
	v := argValue(splitRuleArgs(line), "-c")
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// texts returns the rules as iptables -S prints them (record.Ready.Rules).
func (t *tracer) texts() []string {
	out := make([]string, 0, len(t.rules))
	for _, r := range t.rules {
		out = append(out, r.String())
	}
	return out
}

// isGoIptablesNotExist reports a "no such rule/chain" error from go-iptables.
func isGoIptablesNotExist(err error) bool {
	type notExist interface{ IsNotExist() bool }
	var ne notExist
	if errors.As(err, &ne) {
		return ne.IsNotExist()
	}
	return isNoSuchChain(err)
}

// splitRuleArgs splits an iptables -S line into arguments, undoing its
// double-quoting ("svctrace:x" and "a \"quoted\" comment").
func splitRuleArgs(line string) []string {
	var args []string
	var cur strings.Builder
	inArg, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted = !quoted
			inArg = true
		case !quoted && (c == ' ' || c == '\t' || c == '\n'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// nftHandles returns the handles of the session's iptables-nft rules.
func (t *tracer) nftHandles() map[handleKey]bool {
	out := map[handleKey]bool{}
	for _, r := range t.rules {
		if r.Backend == backendNft && r.Handle != 0 {
			out[handleKey{r.Family, r.Handle}] = true
		}
	}
	return out
}
