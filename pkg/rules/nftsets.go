package rules

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// kube-proxy's nftables-mode sets and verdict maps (the same names from
// v1.29 to v1.36; see the kube-proxy table's own comments on each).
const (
	SetClusterIPs          = "cluster-ips"           // every cluster IP
	SetNodePortIPs         = "nodeport-ips"          // addresses that accept NodePorts
	SetHairpinConnections  = "hairpin-connections"   // endpoint . endpoint . proto . port (v1.36+)
	MapServiceIPs          = "service-ips"           // cluster/external/LB IP . proto . port : goto Service chain
	MapServiceNodePorts    = "service-nodeports"     // proto . nodePort : goto external chain
	MapNoEndpointServices  = "no-endpoint-services"  // IP . proto . port : goto reject-chain | drop
	MapNoEndpointNodePorts = "no-endpoint-nodeports" // proto . nodePort : goto reject-chain | drop
	MapFirewallIPs         = "firewall-ips"          // LB IP . proto . port : goto firewall chain
	// AffinitySetPrefix starts the per-endpoint sets of client addresses
	// that sessionAffinity: ClientIP keeps ("affinity-HASH-ns/name/...").
	AffinitySetPrefix = "affinity-"
)

// SetElement is one element of an nft set or map, as nft lists it.
type SetElement struct {
	// Key is the element's key with its parts joined by " . "
	// ("10.96.190.107 . tcp . 8080").
	Key string
	// Value is what a map maps the key to: a verdict map's verdict
	// ("goto reject-chain", "drop"), "" for a set.
	Value string
	// Comment is the element's comment (kube-proxy names the Service port
	// of its no-endpoint elements: "default/noep:web").
	Comment string
}

// Verdict splits a verdict map element's value into the verdict ("goto",
// "jump", "drop", "accept", ...) and the chain it names, if any.
func (e SetElement) Verdict() (verdict, chain string) {
	verdict, chain, _ = strings.Cut(e.Value, " ")
	return verdict, strings.Trim(strings.TrimSpace(chain), `"`)
}

// nftSet is one set or map body of an nft listing; its elements are parsed
// on first use (a kube-proxy node with 10,000 Services has maps of 10,000
// elements the traced packets never look up).
type nftSet struct {
	body string // the lines between "map NAME {" and its "}"

	once  sync.Once
	elems map[string]SetElement // by normalized key
	cidrs []cidrElement         // interval keys of one address part
}

type cidrElement struct {
	prefix netip.Prefix
	elem   SetElement
}

// SetElement looks up key in the nft set or map named set of a table (the
// kube-proxy table's maps are listed by nft -a list ruleset with their
// elements). key holds the parts of a concatenated key in order ("10.96.0.10",
// "udp", "53"); an address part also matches an interval element holding it.
// ok is false when the set, or the element, is not in the snapshot.
func (ix *Index) SetElement(family uint8, table, set string, key ...string) (SetElement, bool) {
	ix.mu.RLock()
	tv := ix.views(family, table)
	var s *nftSet
	if tv != nil && tv.nft != nil {
		s = tv.nft.sets[set]
	}
	ix.mu.RUnlock()
	if s == nil || len(key) == 0 {
		return SetElement{}, false
	}
	s.once.Do(s.parse)
	if e, ok := s.elems[strings.Join(key, " . ")]; ok {
		return e, true
	}
	if len(key) == 1 {
		if a, err := netip.ParseAddr(key[0]); err == nil {
			for _, c := range s.cidrs {
				if c.prefix.Contains(a) {
					return c.elem, true
				}
			}
		}
	}
	return SetElement{}, false
}

// HasSet reports whether the snapshot lists an nft set or map of that name.
func (ix *Index) HasSet(family uint8, table, set string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	tv := ix.views(family, table)
	return tv != nil && tv.nft != nil && tv.nft.sets[set] != nil
}

// parse reads the "elements = { ... }" of the body.
func (s *nftSet) parse() {
	s.elems = map[string]SetElement{}
	i := strings.Index(s.body, "elements = {")
	if i < 0 {
		return
	}
	rest := s.body[i+len("elements = {"):]
	start := 0
	inQuote := false
	for j := 0; j < len(rest); j++ {
		switch c := rest[j]; {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == ',' || c == '}':
			s.add(rest[start:j])
			start = j + 1
			if c == '}' {
				return
			}
		}
	}
}

// add parses one element: KEY [timeout T] [expires T] [counter ...]
// [comment "C"] [: VALUE].
func (s *nftSet) add(text string) {
	text = strings.TrimSpace(text)
	if text == "" {
		return
	}
	var e SetElement
	if k := indexOutsideQuotes(text, " : "); k >= 0 {
		e.Value = strings.TrimSpace(text[k+3:])
		text = text[:k]
	}
	if k := strings.Index(text, ` comment "`); k >= 0 {
		c := text[k+len(` comment "`):]
		if end := strings.IndexByte(c, '"'); end >= 0 {
			e.Comment = c[:end]
		}
		text = text[:k]
	}
	for _, kw := range [...]string{" timeout ", " expires ", " counter ", " limit ", " quota "} {
		if k := strings.Index(text, kw); k >= 0 {
			text = text[:k]
		}
	}
	parts := strings.Split(text, " . ")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	e.Key = strings.Join(parts, " . ")
	if len(parts) == 1 && strings.IndexByte(parts[0], '/') > 0 {
		if p, err := netip.ParsePrefix(parts[0]); err == nil {
			s.cidrs = append(s.cidrs, cidrElement{p, e})
			return
		}
	}
	s.elems[e.Key] = e
}

func indexOutsideQuotes(s, sub string) int {
	inQuote := false
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i] == '"' {
			inQuote = !inQuote
			continue
		}
		if !inQuote && strings.HasPrefix(s[i:], sub) {
			return i
		}
	}
	return -1
}

// NftLookup is what an nft rule looks up in a named set or verdict map:
// "ip daddr . meta l4proto . th dport vmap @service-ips".
type NftLookup struct {
	// Set is the set or map name (without '@').
	Set string
	// Key are the selectors whose values form the key, in order
	// ("ip daddr", "meta l4proto", "th dport").
	Key []string
	// Vmap reports a verdict map lookup (the map decides the verdict).
	Vmap bool
}

// singleWordSelectors are nft selectors printed without a prefix word.
var singleWordSelectors = map[string]bool{
	"iif": true, "oif": true, "iifname": true, "oifname": true, "mark": true,
}

// NftVmap returns the named verdict map an nft rule looks its verdict up in
// ("... vmap @NAME"), with the key's selectors. ok is false for rules
// without one (an anonymous "vmap { ... }" included).
func NftVmap(text string) (l NftLookup, ok bool) {
	toks := strings.Fields(text)
	for k, w := range toks {
		if w != "vmap" || k+1 >= len(toks) || !strings.HasPrefix(toks[k+1], "@") {
			continue
		}
		l = NftLookup{Set: strings.TrimPrefix(toks[k+1], "@"), Vmap: true}
		// The key: SELECTOR [. SELECTOR]... right before "vmap".
		j := k
		for {
			switch {
			case j >= 1 && singleWordSelectors[toks[j-1]]:
				l.Key = append(l.Key, toks[j-1])
				j--
			case j >= 2:
				l.Key = append(l.Key, toks[j-2]+" "+toks[j-1])
				j -= 2
			default:
				return NftLookup{}, false
			}
			if j >= 1 && toks[j-1] == "." {
				j--
				continue
			}
			break
		}
		for a, b := 0, len(l.Key)-1; a < b; a, b = a+1, b-1 {
			l.Key[a], l.Key[b] = l.Key[b], l.Key[a]
		}
		return l, true
	}
	return NftLookup{}, false
}

// NftSetMatches returns the named sets an nft rule matches against
// ("ip daddr @cluster-ips", "ip saddr @affinity-...", "... @hairpin-connections"),
// not counting a vmap's map.
func NftSetMatches(text string) []string {
	var out []string
	toks := strings.Fields(text)
	for k, w := range toks {
		if strings.HasPrefix(w, "@") && (k == 0 || toks[k-1] != "vmap") {
			out = append(out, strings.TrimRight(w[1:], ","))
		}
	}
	return out
}

// NftNumgenTargets returns the endpoints ("ip:port", "[ip6]:port") of
// kube-proxy's "dnat ... to numgen random mod N map { 0 : IP . PORT, ... }"
// (v1.36+), in element order; nil for other rules.
func NftNumgenTargets(text string) []string {
	i := strings.Index(text, "numgen random mod ")
	if i < 0 {
		return nil
	}
	rest := text[i:]
	j := strings.Index(rest, " map {")
	if j < 0 {
		return nil
	}
	rest = rest[j+len(" map {"):]
	if k := strings.IndexByte(rest, '}'); k >= 0 {
		rest = rest[:k]
	}
	var out []string
	for _, el := range strings.Split(rest, ",") {
		_, v, ok := strings.Cut(el, " : ")
		if !ok {
			return nil
		}
		ip, port, ok := strings.Cut(strings.TrimSpace(v), " . ")
		a, err := netip.ParseAddr(strings.TrimSpace(ip))
		p, perr := strconv.ParseUint(strings.TrimSpace(port), 10, 16)
		if !ok || err != nil || perr != nil {
			return nil
		}
		out = append(out, netip.AddrPortFrom(a, uint16(p)).String())
	}
	return out
}
