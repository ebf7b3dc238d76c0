package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// AddNftRuleset indexes nft -a list ruleset output (or nft -a list table /
// list chain output, which has the same shape). Tables of family ip and ip6
// are indexed under 4 and 6, the others under FamilyInet, FamilyARP,
// FamilyBridge and FamilyNetdev. Set and map bodies are kept for
// SetElement (parsed on first use); flowtable and other object bodies are
// skipped. Rules are kept in listing order with their "# handle N";
// listings without -a index rules by position only (Handle 0).
//
// Malformed input is an error naming the line: text outside a table,
// unbalanced braces, a truncated listing, an unknown family. Statements the
// parser does not know are not errors. Nothing is indexed from input that
// has an error.
func (ix *Index) AddNftRuleset(data []byte) error {
	if detectFormat(data) == formatEmpty {
		return errEmpty
	}
	// One copy of the input; every string in the index is a substring of it.
	tables, err := parseNft(string(data))
	if err != nil {
		return err
	}
	ix.commit(tables)
	return nil
}

type nftParser struct {
	src  string
	line int
	off  int // where the next line starts

	rules  []Rule
	chains []chainData
	tables []parsedTable

	depth  int
	skipTo int // while skipping an object body: the depth it ends at; -1 otherwise

	// the set or map whose body is being skipped ("" for other objects)
	setName  string
	setStart int
	sets     map[string]*nftSet
	bases    []int32 // chains of the current table with a hook

	// current table
	key        tableKey
	byName     map[string]int32
	ruleStart  int
	chainStart int
	seen       map[tableKey]bool

	// current chain
	ci         int // index in p.chains
	lastHandle uint64

	// a rule whose braces span lines
	pending   bool
	pendStart int

	toks []span
}

func parseNft(src string) ([]parsedTable, error) {
	n := strings.Count(src, "# handle ") + 1
	p := &nftParser{
		src:    src,
		rules:  make([]Rule, 0, n),
		skipTo: -1,
		ci:     -1,
		seen:   make(map[tableKey]bool),
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.tables, nil
}

func (p *nftParser) errorf(format string, args ...any) error {
	return fmt.Errorf("nft ruleset input line %d: %s", p.line, fmt.Sprintf(format, args...))
}

func (p *nftParser) parse() error {
	src := p.src
	for off := 0; off < len(src); {
		lineStart := off
		end := strings.IndexByte(src[off:], '\n')
		if end < 0 {
			off = len(src)
		} else {
			off += end + 1
			end += lineStart
		}
		if end < 0 {
			end = len(src)
		}
		p.line++
		p.off = off
		raw := src[lineStart:end]
		content := strings.TrimLeft(raw, " \t")
		contentOff := lineStart + len(raw) - len(content)
		opens, closes, hashAt, err := scanNftLine(content)
		if err != nil {
			return p.errorf("%v", err)
		}
		code, comment := content, ""
		if hashAt >= 0 {
			code, comment = content[:hashAt], content[hashAt+1:]
		}
		code = strings.TrimRight(code, " \t\r")
		if err := p.handle(code, contentOff, comment, opens, closes); err != nil {
			return err
		}
	}
	switch {
	case p.pending:
		return p.errorf("rule starting at offset %d never closes its braces (truncated listing?)", p.pendStart)
	case p.depth > 0:
		return p.errorf("input ends inside table %q (truncated listing?)", p.key.name)
	}
	return nil
}

// handle processes one line: code without its "# ..." comment, where code
// starts in the input, the comment, and the braces the code opens and closes.
func (p *nftParser) handle(code string, codeOff int, comment string, opens, closes int) error {
	if p.pending {
		p.depth += opens - closes
		if p.depth < 2 {
			return p.errorf("unbalanced '}' in a rule")
		}
		if p.depth == 2 {
			p.pending = false
			p.addRule(p.src[p.pendStart:codeOff+len(code)], comment)
		}
		return nil
	}
	if p.skipTo >= 0 {
		p.depth += opens - closes
		if p.depth < p.skipTo {
			return p.errorf("unbalanced '}'")
		}
		if p.depth == p.skipTo {
			p.skipTo = -1
			if p.setName != "" {
				p.sets[p.setName] = &nftSet{body: p.src[p.setStart:codeOff]}
				p.setName = ""
			}
		}
		return nil
	}
	if code == "" {
		return nil
	}
	switch p.depth {
	case 0:
		if !strings.HasPrefix(code, "table ") || opens != 1 || closes > 1 {
			return p.errorf("expected \"table FAMILY NAME {\", got %q (is this nft list ruleset output?)", clip(code))
		}
		if err := p.openTable(code); err != nil {
			return err
		}
		p.depth = 1
		if closes == 1 {
			p.closeTable()
		}
	case 1:
		switch {
		case code == "}":
			p.closeTable()
		case strings.HasPrefix(code, "chain "):
			if opens != 1 || closes > 1 {
				return p.errorf("bad chain line %q: want \"chain NAME {\"", clip(code))
			}
			if err := p.openChain(code); err != nil {
				return err
			}
			p.depth = 2
			if closes == 1 {
				p.closeChain()
			}
		case opens > closes:
			// set, map, flowtable, counter, quota, ct helper ...: skip the
			// body, keeping a set's or map's for SetElement.
			p.skipTo = 1
			p.depth += opens - closes
			for _, kw := range [...]string{"set ", "map "} {
				if strings.HasPrefix(code, kw) {
					p.setName, p.setStart = unquoteNft(headerArgs(code, kw)), p.off
				}
			}
		case closes > opens:
			return p.errorf("unbalanced '}' in %q", clip(code))
		}
		// Anything else is a table property (comment, flags): nothing to index.
	case 2:
		switch {
		case code == "}":
			p.closeChain()
		case closes > opens:
			return p.errorf("unbalanced '}' in %q", clip(code))
		case comment == "" && p.chainProperty(code):
		case opens > closes:
			p.pending, p.pendStart = true, codeOff
			p.depth += opens - closes
		default:
			p.addRule(code, comment)
		}
	}
	return nil
}

// scanNftLine counts the braces outside quoted strings and finds the first
// '#' outside them (where nft's "# handle N" comment starts).
func scanNftLine(s string) (opens, closes, hashAt int, err error) {
	hashAt = -1
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			inQuote = !inQuote
		case inQuote:
		case c == '{':
			opens++
		case c == '}':
			closes++
		case c == '#':
			return opens, closes, i, nil
		}
	}
	if inQuote {
		return 0, 0, -1, fmt.Errorf("unterminated quoted string in %q", clip(s))
	}
	return opens, closes, -1, nil
}

var nftFamilies = map[string]uint8{
	"ip":     FamilyIPv4,
	"ip6":    FamilyIPv6,
	"inet":   FamilyInet,
	"arp":    FamilyARP,
	"bridge": FamilyBridge,
	"netdev": FamilyNetdev,
}

// openTable parses "table FAMILY NAME {".
func (p *nftParser) openTable(code string) error {
	fields := strings.SplitN(headerArgs(code, "table "), " ", 2)
	if len(fields) != 2 {
		return p.errorf("bad table line %q: want \"table FAMILY NAME {\"", clip(code))
	}
	fam, ok := nftFamilies[fields[0]]
	if !ok {
		return p.errorf("unknown table family %q: want ip, ip6, inet, arp, bridge or netdev", fields[0])
	}
	name := unquoteNft(strings.TrimSpace(fields[1]))
	if name == "" {
		return p.errorf("table without a name")
	}
	p.key = tableKey{fam, name}
	if p.seen[p.key] {
		return p.errorf("table %s %s listed twice", fields[0], name)
	}
	p.seen[p.key] = true
	p.ruleStart, p.chainStart = len(p.rules), len(p.chains)
	section := p.src[p.off:]
	if i := strings.Index(section, "\ntable "); i >= 0 {
		section = section[:i]
	}
	p.byName = make(map[string]int32, strings.Count(section, "\tchain ")+1)
	p.sets = make(map[string]*nftSet)
	return nil
}

func (p *nftParser) closeTable() {
	p.depth = 0
	rules := p.rules[p.ruleStart:len(p.rules):len(p.rules)]
	chains := p.chains[p.chainStart:len(p.chains):len(p.chains)]
	p.tables = append(p.tables, parsedTable{
		key:  p.key,
		nft:  true,
		snap: &snapshot{rules: rules, chains: chains, byName: p.byName, sets: p.sets, bases: p.bases},
	})
	p.byName, p.sets, p.bases = nil, nil, nil
}

// headerArgs returns what a "KEYWORD ARGS {" line (possibly "KEYWORD ARGS
// { }") says between the keyword and the brace.
func headerArgs(code, keyword string) string {
	s := strings.TrimPrefix(code, keyword)
	s = strings.TrimSpace(strings.TrimSuffix(s, "}"))
	return strings.TrimSpace(strings.TrimSuffix(s, "{"))
}

// openChain parses "chain NAME {".
func (p *nftParser) openChain(code string) error {
	name := unquoteNft(headerArgs(code, "chain "))
	if name == "" {
		return p.errorf("chain without a name")
	}
	if _, dup := p.byName[name]; dup {
		return p.errorf("chain %q listed twice in table %q", name, p.key.name)
	}
	p.byName[name] = int32(len(p.chains) - p.chainStart)
	p.chains = append(p.chains, chainData{
		name:   name,
		start:  int32(len(p.rules) - p.ruleStart),
		sorted: true,
	})
	p.ci = len(p.chains) - 1
	p.lastHandle = 0
	return nil
}

func (p *nftParser) closeChain() {
	p.depth = 1
	p.ci = -1
}

// chainProperty handles a chain's own lines ("type filter hook output
// priority raw; policy accept;", "comment ...", "devices = ...") and reports
// whether code was one.
func (p *nftParser) chainProperty(code string) bool {
	word, _, _ := strings.Cut(code, " ")
	switch word {
	case "type", "policy":
	case "comment", "devices", "flags":
		return true
	default:
		return false
	}
	cd := &p.chains[p.ci]
	for _, stmt := range strings.Split(code, ";") {
		f := strings.Fields(stmt)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "type":
			if len(f) > 1 {
				cd.natType = f[1] == "nat"
			}
			for i := 1; i+1 < len(f); i++ {
				switch f[i] {
				case "hook":
					if cd.hook == "" {
						p.bases = append(p.bases, int32(p.ci-p.chainStart))
					}
					cd.hook = f[i+1]
				case "priority":
					cd.prio = nftPriority(f[i+1:])
				}
			}
			if cd.policy == "" {
				cd.policy = "ACCEPT" // nft's default policy
			}
		case "policy":
			if len(f) > 1 {
				switch f[1] {
				case "accept":
					cd.policy = "ACCEPT"
				case "drop":
					cd.policy = "DROP"
				default:
					cd.policy = strings.ToUpper(f[1])
				}
			}
		}
	}
	return true
}

// nftPriorities are the named base chain priorities of the ip, ip6 and inet
// families, as nft lists them ("priority dstnat - 10").
var nftPriorities = map[string]int32{
	"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100,
}

// nftPriority parses "NAME|NUMBER [+|- NUMBER]".
func nftPriority(f []string) int32 {
	if len(f) == 0 {
		return 0
	}
	p, ok := nftPriorities[f[0]]
	if !ok {
		n, _ := strconv.ParseInt(f[0], 10, 32)
		p = int32(n)
	}
	if len(f) >= 3 && (f[1] == "+" || f[1] == "-") {
		n, _ := strconv.ParseInt(f[2], 10, 32)
		if f[1] == "-" {
			n = -n
		}
		p += int32(n)
	}
	return p
}

// addRule adds a rule of the current chain; comment is the text after '#'.
func (p *nftParser) addRule(text, comment string) {
	cd := &p.chains[p.ci]
	var handle uint64
	if c := strings.TrimSpace(comment); strings.HasPrefix(c, "handle ") {
		f := strings.Fields(c[len("handle "):])
		if len(f) > 0 {
			handle, _ = strconv.ParseUint(f[0], 10, 64)
		}
	}
	if cd.n > 0 && handle <= p.lastHandle {
		cd.sorted = false
	}
	p.lastHandle = handle
	cd.n++
	p.rules = append(p.rules, Rule{Text: text, Handle: handle, Pos: int(cd.n)})
	p.toks = parseNftRule(&p.rules[len(p.rules)-1], p.toks)
}

type span struct {
	start, end int32
	depth      int32
}

// nftTokens splits a rule into words, quoted strings and braces, recording
// how deep inside { } each sits.
func nftTokens(s string, dst []span) []span {
	dst = dst[:0]
	depth := int32(0)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '{':
			dst = append(dst, span{int32(i), int32(i + 1), depth})
			depth++
			i++
		case c == '}':
			depth--
			dst = append(dst, span{int32(i), int32(i + 1), depth})
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				j++
			}
			if j < len(s) {
				j++
			}
			dst = append(dst, span{int32(i), int32(j), depth})
			i = j
		default:
			j := i
			for j < len(s) && !isNftDelim(s[j]) {
				j++
			}
			dst = append(dst, span{int32(i), int32(j), depth})
			i = j
		}
	}
	return dst
}

func isNftDelim(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '{', '}', '"':
		return true
	}
	return false
}

// parseNftRule fills Target, Jump, Goto, Comment, ToDestination, ToSource
// and Probability from r.Text; toks is scratch space, returned for reuse.
func parseNftRule(r *Rule, toks []span) []span {
	s := r.Text
	toks = nftTokens(s, toks)
	r.Target = "continue"
	word := func(k int) string {
		if k < 0 || k >= len(toks) || toks[k].depth != 0 {
			return ""
		}
		return s[toks[k].start:toks[k].end]
	}
	commentAt := len(s)
	for k := 0; k < len(toks); k++ {
		if toks[k].depth != 0 {
			continue
		}
		switch w := word(k); w {
		case "accept", "drop", "return", "continue", "queue", "reject", "masquerade", "redirect", "tproxy":
			r.Target = w
			r.Jump, r.Goto = "", false
		case "vmap":
			r.Target = w
			r.Jump, r.Goto = "", false
		case "jump", "goto":
			if next := word(k + 1); next != "" {
				r.Target = w
				r.Jump = unquoteNft(next)
				r.Goto = w == "goto"
				k++
			}
		case "dnat", "snat":
			// A NAT statement is "dnat [ip|ip6] [addr . port] to X"; "ct
			// status dnat" is a match.
			j := k + 1
			for {
				n := word(j)
				if n == "ip" || n == "ip6" || n == "addr" || n == "." || n == "port" || n == "prefix" {
					j++
					continue
				}
				break
			}
			if word(j) != "to" || j+1 >= len(toks) {
				continue
			}
			r.Target = w
			r.Jump, r.Goto = "", false
			to := s[toks[j+1].start:]
			if w == "dnat" {
				r.ToDestination = to
			} else {
				r.ToSource = to
			}
			k = j
		case "comment":
			if next := word(k + 1); next != "" && r.Comment == "" {
				r.Comment = unquoteNft(next)
				commentAt = int(toks[k].start)
				k++
			}
		case "random":
			// iptables-nft's statistic match: meta random & 2147483647 < N
			if word(k-1) == "meta" && word(k+1) == "&" && word(k+3) == "<" {
				mask, err1 := strconv.ParseUint(word(k+2), 0, 32)
				n, err2 := strconv.ParseUint(word(k+4), 0, 32)
				if err1 == nil && err2 == nil && mask > 0 {
					// Rounded as iptables-save prints it (%.11f), so both
					// views of an iptables-nft rule agree.
					r.Probability = math.Round(float64(n)/float64(mask+1)*1e11) / 1e11
				}
			}
		case "numgen":
			// kube-proxy nftables mode picks an endpoint uniformly:
			// numgen random mod N (vmap | map) { 0 : ..., N-1 : ... }
			if word(k+1) == "random" && word(k+2) == "mod" {
				if n, err := strconv.ParseUint(word(k+3), 10, 32); err == nil && n > 0 {
					r.Probability = math.Round(1/float64(n)*1e11) / 1e11
				}
			}
		case "xt":
			// iptables-nft targets nft cannot express: xt target NAME
			if word(k+1) == "target" && word(k+2) != "" {
				r.Target = unquoteNft(word(k + 2))
				k += 2
			}
		}
	}
	// The NAT argument runs to the comment (nft lists comments last).
	trim := func(v string) string {
		if d := len(s) - len(v); commentAt > d {
			v = v[:commentAt-d]
		}
		return strings.TrimSpace(v)
	}
	if r.ToDestination != "" {
		r.ToDestination = trim(r.ToDestination)
	}
	if r.ToSource != "" {
		r.ToSource = trim(r.ToSource)
	}
	return toks
}

func unquoteNft(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}
