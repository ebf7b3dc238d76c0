package rules

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Index answers "which rule is rule N (or handle H) of chain C" and "what is
// chain C" over one or more ruleset snapshots. It is safe for concurrent use.
//
// Each (family, table) can hold two views: one from iptables-save output and
// one from nft -a list output. For iptables-nft tables both views describe
// the same rules in the same order, so RuleByHandle answers in iptables form
// when it can. Adding a snapshot of a table replaces that table's earlier
// snapshot of the same kind (iptables-save or nft).
//
// Rules returned are shared, read-only values: do not modify them.
type Index struct {
	mu      sync.RWMutex
	tables  map[tableKey]*tableViews
	learned map[string]ChainInfo // chain name -> Service/Proto/Endpoint from LearnServices
	nrules  int
	// facts caches what is known about each chain, computed once on first
	// use; commit and LearnServices start a new map.
	factsMu sync.RWMutex
	facts   map[factKey]*chainFacts
}

type factKey struct {
	family       uint8
	table, chain string
}

// chainFacts is everything the Index knows about one chain and its rules.
type chainFacts struct {
	info        ChainInfo
	policy      string
	policyChain *PolicyFact
	// rules are the chain's rules by position, from the view Rule answers
	// from; shares[i] is rules[i]'s endpoint share (see Facts.Share),
	// each[i] what rules[i] says on its own.
	rules  []Rule
	shares []float64
	each   []ruleFacts
	// byHandle maps an nft handle to the rule RuleByHandle returns and its
	// share; built on first use.
	handleOnce sync.Once
	byHandle   map[uint64]handleFacts
	// byText maps a rule's text to its position; built on first use.
	textOnce sync.Once
	byText   map[string]int
}

type handleFacts struct {
	rule  *Rule
	share float64
	ruleFacts
}

// ruleFacts is what a rule says on its own, read once from its text.
type ruleFacts struct {
	policy *PolicyFact
	vmap   *NftLookup // nil: no verdict map
}

// noPolicy is the shared zero PolicyFact: most rules belong to no policy
// plugin.
var noPolicy = &PolicyFact{}

func policyFact(f PolicyFact) *PolicyFact {
	if reflect.DeepEqual(f, PolicyFact{}) {
		return noPolicy
	}
	return &f
}

func readRuleFacts(chain string, r *Rule) ruleFacts {
	f := ruleFacts{policy: policyFact(PolicyRuleFact(chain, r))}
	if l, ok := NftVmap(r.Text); ok {
		f.vmap = &l
	}
	return f
}

// Facts is everything the Index knows about the rule of one hop (or, for a
// chain's return or policy, about the chain).
type Facts struct {
	// Rule is the rule, nil when unknown or not asked for.
	Rule *Rule
	// Chain is the hop's chain, as Chain describes it.
	Chain ChainInfo
	// Policy is a base chain's policy ("ACCEPT" / "DROP"), "" for user
	// chains and chains the Index does not know.
	Policy string
	// Target is the chain the rule jumps to, as Chain describes it (zero
	// when the rule does not jump).
	Target ChainInfo
	// Share is, for a rule that sends the packet to an endpoint chain, the
	// part of the Service's new connections it sends there. kube-proxy
	// tries the endpoint rules in order, rule k with the conditional
	// probability p_k of its statistic match (1 for the last), so its share
	// is (1-p_1)...(1-p_{k-1})*p_k: 1/3 each for 0.333, 0.5 and the last of
	// three. 0 when the rule chooses no endpoint.
	Share float64
	// CNIChain is what the chain's name says about NetworkPolicy
	// enforcement (PolicyChainFact); CNIRule what the rule says
	// (PolicyRuleFact), nil without a rule. Shared: do not modify.
	CNIChain, CNIRule *PolicyFact
	// Vmap is the rule's nft verdict map lookup (NftVmap), nil for none.
	// Shared: do not modify.
	Vmap *NftLookup
}

// RuleFacts is what a rule known only from a trace (no snapshot) says on
// its own, as Hop would answer: its chain from the name, its policy and
// verdict map facts. Where it jumps and its share need the ruleset.
func RuleFacts(chain string, r *Rule) Facts {
	f := Facts{Rule: r, Chain: ClassifyName(chain), CNIChain: policyFact(PolicyChainFact(chain))}
	if r != nil {
		rf := readRuleFacts(chain, r)
		f.CNIRule, f.Vmap = rf.policy, rf.vmap
	}
	return f
}

type tableKey struct {
	family uint8
	name   string
}

type tableViews struct {
	ipt *snapshot // from iptables-save
	nft *snapshot // from nft -a list
}

// snapshot is one table of one input. It is never modified once built, so a
// *Rule handed out stays valid after the table is replaced.
type snapshot struct {
	// rules holds every rule of the table, each chain's rules contiguous and
	// in chain order. Strings in it are substrings of the input.
	rules  []Rule
	chains []chainData
	byName map[string]int32   // chain name -> index in chains
	sets   map[string]*nftSet // nft set and map bodies by name (nft input only)
	bases  []int32            // chains with a hook (nft input only)

	revOnce sync.Once
	rev     map[string]string // endpoint chain -> a service chain jumping to it

	entryOnce sync.Once
	entries   [][]int32 // per chain: the base chains (indexes in chains) whose jumps and gotos reach it
}

type chainData struct {
	name    string
	policy  string // "ACCEPT" / "DROP" for base chains, "" otherwise
	hook    string // netfilter hook for base chains
	prio    int32  // base chain priority (nft listings; 0 when not listed)
	natType bool   // a base chain of type nat (nft listings)
	start   int32  // first rule in snapshot.rules
	n       int32  // number of rules
	// sorted reports that handles ascend with position, so a handle can be
	// found by binary search (always true for iptables-nft tables).
	sorted bool
}

// parsedTable is one table of an input before it is published in the Index.
type parsedTable struct {
	key  tableKey
	nft  bool
	snap *snapshot
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	ix := &Index{
		tables:  make(map[tableKey]*tableViews),
		learned: make(map[string]ChainInfo),
	}
	ix.facts = map[factKey]*chainFacts{}
	return ix
}

// errEmpty is returned for input holding no ruleset at all.
var errEmpty = errors.New("empty ruleset: pass the output of iptables-save, ip6tables-save or nft -a list ruleset")

// Add indexes data, detecting its format: iptables-save / ip6tables-save
// output (legacy or nft backend; the family comes from the "# Generated by"
// header, else from the addresses) or nft -a list ruleset / nft -a list table
// output. Add keeps references into a copy of data, never into data itself.
func (ix *Index) Add(data []byte) error {
	switch detectFormat(data) {
	case formatIptables:
		return ix.AddIptablesSave(data, 0)
	case formatNft:
		return ix.AddNftRuleset(data)
	case formatEmpty:
		return errEmpty
	}
	return fmt.Errorf("unrecognized ruleset format: want iptables-save or nft -a list ruleset output (first line %q)", firstLine(data))
}

type format int

const (
	formatUnknown format = iota
	formatEmpty
	formatIptables
	formatNft
)

// detectFormat looks at the first line that is neither blank nor a comment.
func detectFormat(data []byte) format {
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		s := strings.TrimSpace(string(line))
		switch {
		case s == "" || s[0] == '#':
			continue
		case s[0] == '*' || s[0] == ':' || strings.HasPrefix(s, "-A ") || strings.HasPrefix(s, "-N ") || strings.HasPrefix(s, "-P "):
			return formatIptables
		case strings.HasPrefix(s, "table "):
			return formatNft
		}
		return formatUnknown
	}
	return formatEmpty
}

func firstLine(data []byte) string {
	s := strings.TrimSpace(string(data))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return s
}

// commit publishes parsed tables, replacing earlier snapshots of the same kind.
func (ix *Index) commit(tables []parsedTable) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, t := range tables {
		tv := ix.tables[t.key]
		if tv == nil {
			tv = &tableViews{}
			ix.tables[t.key] = tv
		}
		old := &tv.ipt
		if t.nft {
			old = &tv.nft
		}
		if *old != nil {
			ix.nrules -= len((*old).rules)
		}
		*old = t.snap
		ix.nrules += len(t.snap.rules)
	}
	ix.resetFacts()
}

// Len returns the number of rules indexed, counting both views of a table
// that was added as iptables-save and as nft output.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.nrules
}

// views returns the table's views; an ip/ip6 lookup that misses falls back
// to the inet table of the same name (inet tables see both families).
func (ix *Index) views(family uint8, table string) *tableViews {
	if tv := ix.tables[tableKey{family, table}]; tv != nil {
		return tv
	}
	if family == FamilyIPv4 || family == FamilyIPv6 {
		return ix.tables[tableKey{FamilyInet, table}]
	}
	return nil
}

func (s *snapshot) chain(name string) *chainData {
	if s == nil {
		return nil
	}
	i, ok := s.byName[name]
	if !ok {
		return nil
	}
	return &s.chains[i]
}

// find returns the chain, preferring the iptables-save view (its text is what
// iptables -S prints and it carries the comments nft may not show).
func (tv *tableViews) find(chain string) (*snapshot, *chainData) {
	if tv == nil {
		return nil, nil
	}
	if cd := tv.ipt.chain(chain); cd != nil {
		return tv.ipt, cd
	}
	if cd := tv.nft.chain(chain); cd != nil {
		return tv.nft, cd
	}
	return nil, nil
}

// Rule returns rule pos (1-based, the nth -A line of iptables -S CHAIN, or
// the nth rule nft lists) of a chain.
func (ix *Index) Rule(family uint8, table, chain string, pos int) (*Rule, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	s, cd := ix.views(family, table).find(chain)
	if cd == nil || pos < 1 || pos > int(cd.n) {
		return nil, false
	}
	return &s.rules[int(cd.start)+pos-1], true
}

// RuleByHandle returns the rule with nft handle handle in a chain. When the
// table was also added as iptables-save output and the chain has as many
// rules in both views (an iptables-nft table: handle order is iptables -S
// order), the iptables-save rule at the same position is returned, as a copy
// with Handle set. Otherwise the nft rule is returned.
func (ix *Index) RuleByHandle(family uint8, table, chain string, handle uint64) (*Rule, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	tv := ix.views(family, table)
	if tv == nil || tv.nft == nil {
		return nil, false
	}
	cd := tv.nft.chain(chain)
	if cd == nil {
		return nil, false
	}
	i := cd.findHandle(tv.nft.rules, handle)
	if i < 0 {
		return nil, false
	}
	if icd := tv.ipt.chain(chain); icd != nil && icd.n == cd.n {
		r := tv.ipt.rules[int(icd.start)+i]
		r.Handle = handle
		return &r, true
	}
	return &tv.nft.rules[int(cd.start)+i], true
}

// findHandle returns the 0-based position of handle in the chain, or -1.
func (cd *chainData) findHandle(rules []Rule, handle uint64) int {
	rs := rules[cd.start : cd.start+cd.n]
	if cd.sorted {
		i := sort.Search(len(rs), func(i int) bool { return rs[i].Handle >= handle })
		if i < len(rs) && rs[i].Handle == handle {
			return i
		}
		return -1
	}
	for i := range rs {
		if rs[i].Handle == handle {
			return i
		}
	}
	return -1
}

// Policy returns a base chain's policy, "ACCEPT" or "DROP". ok is false for
// user (regular) chains and for chains the Index does not know.
func (ix *Index) Policy(family uint8, table, chain string) (policy string, ok bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	_, cd := ix.views(family, table).find(chain)
	if cd == nil || cd.policy == "" {
		return "", false
	}
	return cd.policy, true
}

// Chain says what a chain is: its kind from the name (see ClassifyName), its
// hook when it is a base chain, and for per-Service kube-proxy chains the
// Service port, protocol and endpoint, taken in this order from the names
// learned with LearnServices, the chain's own rules (comments, DNAT
// destination), its sibling chains (KUBE-SVC-X / KUBE-EXT-X / ... share X),
// the service chain that jumps to it, and finally the chain-name hash.
func (ix *Index) Chain(family uint8, table, chain string) ChainInfo {
	return ix.chainFacts(family, table, chain).info
}

// chainFacts returns the chain's facts, computing them on first use.
func (ix *Index) chainFacts(family uint8, table, chain string) *chainFacts {
	k := factKey{family, table, chain}
	ix.factsMu.RLock()
	f, ok := ix.facts[k]
	m := ix.facts
	ix.factsMu.RUnlock()
	if ok {
		return f
	}
	ix.mu.RLock()
	f = ix.computeFacts(family, table, chain)
	ix.mu.RUnlock()
	ix.factsMu.Lock()
	defer ix.factsMu.Unlock()
	if old, ok := m[k]; ok {
		return old
	}
	// Into the map the facts were computed against: if a commit replaced
	// it meanwhile, they are dropped with it.
	m[k] = f
	return f
}

// resetFacts drops every chain's facts; the caller holds ix.mu.
func (ix *Index) resetFacts() {
	ix.factsMu.Lock()
	ix.facts = map[factKey]*chainFacts{}
	ix.factsMu.Unlock()
}

// computeFacts works out a chain's facts; the caller holds ix.mu.
func (ix *Index) computeFacts(family uint8, table, chain string) *chainFacts {
	f := &chainFacts{info: ix.chainInfo(family, table, chain), policyChain: policyFact(PolicyChainFact(chain))}
	s, cd := ix.views(family, table).find(chain)
	if cd == nil {
		return f
	}
	f.policy = cd.policy
	f.rules = s.rules[cd.start : cd.start+cd.n]
	f.shares = endpointShares(f.rules)
	f.each = make([]ruleFacts, len(f.rules))
	for i := range f.rules {
		f.each[i] = readRuleFacts(chain, &f.rules[i])
	}
	return f
}

// Hop returns in one lookup what the Index knows about a hop: its chain,
// the chain's policy, and for pos > 0 or handle != 0 the rule (by handle
// when given, as RuleByHandle finds it, else by position, as Rule does),
// where it jumps and the endpoint share it gives. ok reports whether the
// rule (or, when none was asked for, the chain) is known.
func (ix *Index) Hop(family uint8, table, chain string, pos int, handle uint64) (Facts, bool) {
	f := ix.chainFacts(family, table, chain)
	out := Facts{Chain: f.info, Policy: f.policy, CNIChain: f.policyChain}
	var rf ruleFacts
	switch {
	case handle != 0:
		f.handleOnce.Do(func() { ix.indexHandles(family, table, chain, f) })
		h, ok := f.byHandle[handle]
		if !ok {
			return out, false
		}
		out.Rule, out.Share, rf = h.rule, h.share, h.ruleFacts
	case pos > 0:
		if pos > len(f.rules) {
			return out, false
		}
		out.Rule, rf = &f.rules[pos-1], f.each[pos-1]
		if f.shares != nil {
			out.Share = f.shares[pos-1]
		}
	default:
		return out, f.rules != nil || f.policy != ""
	}
	out.CNIRule, out.Vmap = rf.policy, rf.vmap
	if out.Rule.Jump != "" {
		out.Target = ix.chainFacts(family, table, out.Rule.Jump).info
	}
	return out, true
}

// HopByText is Hop for a rule the trace names by its text only:
// xtables-monitor prints each rule as iptables -S does, with an nft handle
// that iptables-save output does not carry. The first rule of the chain
// with exactly that text answers.
func (ix *Index) HopByText(family uint8, table, chain, text string) (Facts, bool) {
	f := ix.chainFacts(family, table, chain)
	f.textOnce.Do(func() {
		f.byText = make(map[string]int, len(f.rules))
		for i := len(f.rules) - 1; i >= 0; i-- {
			f.byText[f.rules[i].Text] = i + 1
		}
	})
	pos, ok := f.byText[text]
	if !ok {
		return Facts{Chain: f.info, Policy: f.policy, CNIChain: f.policyChain}, false
	}
	return ix.Hop(family, table, chain, pos, 0)
}

// indexHandles fills f.byHandle with what RuleByHandle answers for each
// handle of the chain's nft view.
func (ix *Index) indexHandles(family uint8, table, chain string, f *chainFacts) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	f.byHandle = map[uint64]handleFacts{}
	tv := ix.views(family, table)
	if tv == nil || tv.nft == nil {
		return
	}
	cd := tv.nft.chain(chain)
	if cd == nil {
		return
	}
	nrs := tv.nft.rules[cd.start : cd.start+cd.n]
	rs := nrs
	if icd := tv.ipt.chain(chain); icd != nil && icd.n == cd.n {
		// iptables-nft: the iptables-save text, with the nft handles.
		rs = make([]Rule, cd.n)
		copy(rs, tv.ipt.rules[icd.start:icd.start+icd.n])
		for i := range rs {
			rs[i].Handle = nrs[i].Handle
		}
	}
	shares := endpointShares(rs)
	if shares == nil {
		shares = make([]float64, len(rs))
	}
	for i := range rs {
		h := handleFacts{rule: &rs[i], share: shares[i], ruleFacts: readRuleFacts(chain, &rs[i])}
		if _, dup := f.byHandle[rs[i].Handle]; !dup {
			f.byHandle[rs[i].Handle] = h
		}
	}
}

// chainInfo is Chain without the cache; the caller holds ix.mu.
func (ix *Index) chainInfo(family uint8, table, chain string) ChainInfo {
	info := classifyIn(table, chain)
	tv := ix.views(family, table)
	if _, cd := tv.find(chain); cd != nil && cd.hook != "" {
		info.Hook = cd.hook
		if info.Kind == ChainUnknown {
			info.Kind = ChainBuiltin
		}
	}
	prefix := iptablesServicePrefix(chain)
	if prefix == "" || !perServiceKind(info.Kind) {
		// nftables-mode names carry everything; other chains belong to no
		// single Service.
		return info
	}
	if l, ok := ix.learned[chain]; ok {
		info.Service, info.Proto, info.Endpoint = l.Service, l.Proto, l.Endpoint
	}
	fromRules(tv, chain, &info)
	if info.Service == "" && info.Kind != ChainEndpoint {
		hash := chain[len(prefix):]
		for _, p := range servicePrefixes {
			if p != prefix && info.Service == "" {
				fromSibling(tv, p+hash, &info)
			}
		}
	}
	if info.Service == "" && info.Kind == ChainEndpoint {
		if svc := tv.serviceChainFor(chain); svc != "" {
			if l, ok := ix.learned[svc]; ok {
				info.Service, info.Proto = l.Service, l.Proto
			}
			fromSibling(tv, svc, &info)
		}
	}
	if info.Service != "" && info.Proto == "" {
		info.Proto = protoByHash(prefix, chain, info.Service, info.Endpoint)
	}
	if info.Service != "" && info.Proto == "" {
		info.Proto = protoFromRules(tv, chain)
	}
	return info
}

// RuleService returns the Service port a rule concerns: from its comment
// ("ns/name:port cluster IP", "... has no endpoints", ...) or, failing that,
// from the chain it jumps to. "" when neither says.
func (ix *Index) RuleService(family uint8, table string, r *Rule) string {
	if r == nil {
		return ""
	}
	if s := ServiceFromComment(r.Comment); s != "" {
		return s
	}
	if r.Jump != "" {
		return ix.Chain(family, table, r.Jump).Service
	}
	return ""
}

func perServiceKind(k ChainKind) bool {
	switch k {
	case ChainService, ChainServiceLocal, ChainExternal, ChainFirewall, ChainEndpoint:
		return true
	}
	return false
}

// fromRules fills Service and Endpoint from the chain's own rules.
func fromRules(tv *tableViews, chain string, info *ChainInfo) {
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		cd := s.chain(chain)
		if cd == nil {
			continue
		}
		for i := range s.rules[cd.start : cd.start+cd.n] {
			r := &s.rules[int(cd.start)+i]
			if info.Service == "" {
				info.Service = ServiceFromComment(r.Comment)
			}
			if info.Kind == ChainEndpoint && info.Endpoint == "" && isHostPort(r.ToDestination) {
				info.Endpoint = r.ToDestination
			}
		}
	}
}

// fromSibling takes the Service from another chain of the same Service port.
func fromSibling(tv *tableViews, chain string, info *ChainInfo) {
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		cd := s.chain(chain)
		if cd == nil {
			continue
		}
		for _, r := range s.rules[cd.start : cd.start+cd.n] {
			if svc := ServiceFromComment(r.Comment); svc != "" {
				info.Service = svc
				return
			}
		}
	}
}

func (tv *tableViews) iptOrNil() *snapshot {
	if tv == nil {
		return nil
	}
	return tv.ipt
}

func (tv *tableViews) nftOrNil() *snapshot {
	if tv == nil {
		return nil
	}
	return tv.nft
}

// serviceChainFor returns a KUBE-SVC-/KUBE-SVL- chain that jumps to the
// endpoint chain ep, for endpoint chains whose comments kube-proxy dropped
// (more than 1000 endpoints).
func (tv *tableViews) serviceChainFor(ep string) string {
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		if s == nil {
			continue
		}
		s.revOnce.Do(s.buildReverse)
		if svc, ok := s.rev[ep]; ok {
			return svc
		}
	}
	return ""
}

func (s *snapshot) buildReverse() {
	s.rev = make(map[string]string)
	for ci := range s.chains {
		cd := &s.chains[ci]
		if !strings.HasPrefix(cd.name, prefixSVC) && !strings.HasPrefix(cd.name, prefixSVL) {
			continue
		}
		for _, r := range s.rules[cd.start : cd.start+cd.n] {
			if strings.HasPrefix(r.Jump, prefixSEP) {
				if _, dup := s.rev[r.Jump]; !dup {
					s.rev[r.Jump] = cd.name
				}
			}
		}
	}
}

// protoByHash finds the protocol whose chain-name hash matches.
func protoByHash(prefix, chain, service, endpoint string) string {
	for _, p := range protos {
		var name string
		if prefix == prefixSEP {
			if endpoint == "" {
				return ""
			}
			name = EndpointChainName(service, p, endpoint)
		} else {
			name = ServiceChainName(prefix, service, p)
		}
		if name == chain {
			return p
		}
	}
	return ""
}

// protoFromRules reads "-p PROTO" (iptables) or "meta l4proto PROTO" (nft).
func protoFromRules(tv *tableViews, chain string) string {
	for _, s := range [2]*snapshot{tv.iptOrNil(), tv.nftOrNil()} {
		cd := s.chain(chain)
		if cd == nil {
			continue
		}
		for _, r := range s.rules[cd.start : cd.start+cd.n] {
			for _, key := range [...]string{" -p ", "meta l4proto "} {
				i := strings.Index(r.Text, key)
				if i < 0 {
					continue
				}
				rest := r.Text[i+len(key):]
				if j := strings.IndexByte(rest, ' '); j >= 0 {
					rest = rest[:j]
				}
				for _, p := range protos {
					if rest == p {
						return p
					}
				}
			}
		}
	}
	return ""
}

var protos = [...]string{"tcp", "udp", "sctp"}

// LearnServices records the cluster's Service ports so that KUBE-SVC-,
// KUBE-SVL-, KUBE-EXT-, KUBE-FW- and KUBE-SEP- chains map to them by hash,
// even where kube-proxy left no comments. Later calls add to (and for the
// same chain, override) earlier ones.
func (ix *Index) LearnServices(ports []ServicePort) {
	learned := make(map[string]ChainInfo, len(ports)*(len(servicePrefixes)+3))
	for _, sp := range ports {
		proto := strings.ToLower(sp.Proto)
		spn := ServicePortName(sp.Namespace, sp.Name, sp.Port)
		for _, p := range servicePrefixes {
			name := ServiceChainName(p, spn, proto)
			learned[name] = ChainInfo{Kind: ClassifyName(name).Kind, Service: spn, Proto: proto}
		}
		for _, ep := range sp.Endpoints {
			name := EndpointChainName(spn, proto, ep)
			learned[name] = ChainInfo{Kind: ChainEndpoint, Service: spn, Proto: proto, Endpoint: ep}
		}
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for k, v := range learned {
		ix.learned[k] = v
	}
	ix.resetFacts()
}
