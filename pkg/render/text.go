package render

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// TextOptions shape the human-readable output.
type TextOptions struct {
	// Color adds ANSI colours (only for a terminal).
	Color bool
	// Wide shows every hop, unfolded, with its interfaces and mark.
	Wide bool
	// NoRuleText leaves out the rule text under each rule hop.
	NoRuleText bool
}

// Text writes each packet as an aligned, annotated path.
type Text struct {
	w io.Writer
	o TextOptions
	n int // packets written
}

// NewText returns a renderer writing readable text to w.
func NewText(w io.Writer, o TextOptions) *Text { return &Text{w: w, o: o} }

// ANSI styles.
const (
	reset   = "\x1b[0m"
	bold    = "\x1b[1m"
	dim     = "\x1b[2m"
	red     = "\x1b[31m"
	green   = "\x1b[32m"
	yellow  = "\x1b[33m"
	magenta = "\x1b[35m"
	cyan    = "\x1b[36m"
)

func (t *Text) style(s, code string) string {
	if !t.o.Color || s == "" {
		return s
	}
	return code + s + reset
}

// pad right-pads s to width w, counting visible characters only.
func pad(s string, w int) string {
	if n := len(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return s
}

func verdictStyle(v string) string {
	switch v {
	case record.VerdictAccept:
		return green
	case record.VerdictDrop, record.VerdictReject:
		return red
	case "DNAT", "SNAT", "MASQUERADE":
		return magenta
	case "JUMP", "GOTO":
		return cyan
	case record.VerdictUnknown:
		return yellow
	}
	return ""
}

// Packet writes one packet: a header line with the story (Service,
// endpoint, pod, node, verdict) and the packet, then its hops, then the
// explanation. By default only the hops that decided something (Hop.Role,
// the verdict hop) are shown with their rule text, and each traversal of a
// table in which nothing was decided is folded into one line; Wide shows
// every hop with its interfaces and mark.
func (t *Text) Packet(p *record.Packet) error {
	t.n++
	var b strings.Builder
	if t.n > 1 {
		b.WriteByte('\n')
	}
	t.header(&b, p)
	if t.o.Wide {
		t.lines(&b, p, allHops(p))
	} else {
		ls := folded(p)
		t.lines(&b, p, ls)
		if hidden := len(p.Hops) - countHops(ls); hidden > 0 {
			fmt.Fprintf(&b, "  (%s not shown: -o wide shows every hop)\n", plural(hidden, "hop"))
		}
	}
	t.explain(&b, p)
	_, err := io.WriteString(t.w, b.String())
	return err
}

func (t *Text) header(b *strings.Builder, p *record.Packet) {
	what := p.Dst
	if p.Service != "" {
		what = "Service " + p.Service
	}
	b.WriteString(t.style(what, bold))
	if p.Endpoint != "" {
		b.WriteString(" -> endpoint " + t.style(p.Endpoint, bold))
	}
	// The endpoint's pod and its node, then the nodes the packet was
	// traced on, when they say more.
	var where []string
	switch {
	case p.EndpointPod != "" && p.EndpointNode != "":
		where = append(where, "pod "+p.EndpointPod+" on "+p.EndpointNode)
	case p.EndpointPod != "":
		where = append(where, "pod "+p.EndpointPod)
	}
	switch {
	case len(p.Nodes) > 1:
		where = append(where, "nodes "+strings.Join(p.Nodes, " -> "))
	case p.Node != "" && p.Node != p.EndpointNode:
		where = append(where, "traced on "+p.Node)
	}
	if len(where) > 0 {
		b.WriteString(" (" + strings.Join(where, ", ") + ")")
	}
	b.WriteString(": " + t.style(p.Verdict, verdictStyle(p.Verdict)+bold))
	if p.Explain != nil && p.Explain.Retransmit {
		b.WriteString(" (SYN retransmission)")
	}
	b.WriteString("\n")
	pkt := fmt.Sprintf("  %s %s -> %s", p.Proto, p.Src, p.Dst)
	if p.Flags != "" {
		pkt += " [" + p.Flags + "]"
	}
	b.WriteString(pkt + "\n")
}

// line is one line of a packet's path: a hop, or a fold of the hops
// first..last (inclusive) in which nothing was decided.
type line struct {
	first, last int
	fold        bool
}

func allHops(p *record.Packet) []line {
	ls := make([]line, len(p.Hops))
	for i := range p.Hops {
		ls[i] = line{first: i, last: i}
	}
	return ls
}

func countHops(ls []line) int {
	n := 0
	for _, l := range ls {
		n += l.last - l.first + 1
	}
	return n
}

// decides reports whether hop i is shown on its own in the folded view.
func decides(p *record.Packet, i int) bool {
	h := &p.Hops[i]
	return h.Role != "" || i == p.VerdictHop && h.Kind == "rule"
}

// folded picks the lines of the folded view. A traversal is the run of
// hops of one table in one hook (a policy ends it): one where some hop
// decided something shows those hops only; any other becomes one line, and
// consecutive traversals that only hit their chain's policy share a line.
func folded(p *record.Packet) []line {
	var ls []line
	for start := 0; start < len(p.Hops); {
		end := start
		for end+1 < len(p.Hops) && sameTraversal(&p.Hops[end], &p.Hops[end+1]) {
			end++
		}
		any := false
		for i := start; i <= end; i++ {
			if decides(p, i) {
				ls = append(ls, line{first: i, last: i})
				any = true
			}
		}
		if !any {
			if n := len(ls); n > 0 && ls[n-1].fold && policyOnly(p, ls[n-1]) && policyOnly(p, line{first: start, last: end}) &&
				p.Hops[ls[n-1].last].Verdict == p.Hops[end].Verdict && ls[n-1].last != p.VerdictHop {
				ls[n-1].last = end
			} else {
				ls = append(ls, line{first: start, last: end, fold: true})
			}
		}
		start = end + 1
	}
	return ls
}

func sameTraversal(prev, next *record.Hop) bool {
	return prev.Kind != "policy" && prev.Table == next.Table && prev.Hook == next.Hook && prev.Node == next.Node
}

// crossingText shows where a packet left one node and arrived at the next
// (or did not): the interface, next hop and route it left by.
func crossingText(x record.Crossing) string {
	s := "-- " + x.From + " -> " + x.To + ":"
	if x.Out != "" {
		s += " out " + x.Out
	}
	if x.Via != "" {
		s += " via " + x.Via
	}
	s += " to " + x.Dst
	if x.Route != "" {
		s += " (route " + x.Route + ")"
	}
	switch {
	case x.Arrived:
		s += "; in " + orDash(x.In)
	case x.Traced:
		s += "; NOT SEEN on " + x.To
	default:
		s += "; " + x.To + " not traced"
	}
	return s + " --"
}

// policyOnly reports whether each traversal folded in l only hit its base
// chain's policy (a rule that changed nothing, like svctrace's TRACE rule,
// aside).
func policyOnly(p *record.Packet, l line) bool {
	for i := l.first; i <= l.last; i++ {
		if h := &p.Hops[i]; h.Kind != "policy" && h.Verdict != "CONTINUE" {
			return false
		}
	}
	return true
}

// foldText describes folded hops: the base chains, the user chains they
// passed through, and how each traversal ended.
func foldText(p *record.Packet, l line) string {
	var parts []string
	for start := l.first; start <= l.last; {
		end := start
		for end < l.last && sameTraversal(&p.Hops[end], &p.Hops[end+1]) {
			end++
		}
		base := &p.Hops[start]
		var chains []string
		add := func(c string) {
			if c != "" && c != base.Chain && !slices.Contains(chains, c) {
				chains = append(chains, c)
			}
		}
		for i := start; i <= end; i++ {
			h := &p.Hops[i]
			add(h.Chain)
			if h.Verdict == "JUMP" || h.Verdict == "GOTO" {
				// xtables-monitor shows no return from a chain where
				// nothing matched: the jump says the packet went there.
				add(h.Target)
			}
		}
		s := base.Table + ":" + base.Chain
		if len(chains) > 0 {
			s += ": " + strings.Join(chains, ", ") + ": nothing matched"
		}
		if last := &p.Hops[end]; last.Kind == "policy" && last.Verdict != "" {
			if len(chains) > 0 {
				s += ";"
			} else {
				s += ":"
			}
			s += " policy " + last.Verdict
		}
		parts = append(parts, s)
		start = end + 1
	}
	if n := len(parts); n > 1 {
		// Policy-only traversals: "raw:OUTPUT, mangle:OUTPUT: policy ACCEPT".
		policy := parts[n-1][strings.LastIndex(parts[n-1], ": ")+2:]
		for i := range parts {
			parts[i] = strings.TrimSuffix(parts[i], ": "+policy)
		}
		return strings.Join(parts, ", ") + ": " + policy
	}
	return parts[0]
}

// hopCells are the plain (uncoloured) cells of one hop line.
type hopCells struct {
	num, where, rule, verdict, extra, meaning string
}

func (t *Text) cells(h *record.Hop) hopCells {
	c := hopCells{where: h.Table + ":" + h.Chain, meaning: h.Meaning}
	switch h.Kind {
	case "rule":
		if h.Rule > 0 {
			c.rule = "#" + strconv.Itoa(h.Rule)
		} else if h.Handle > 0 {
			c.rule = "h" + strconv.FormatUint(h.Handle, 10)
		}
	default:
		c.rule = h.Kind
	}
	c.verdict = h.Verdict
	if h.Target != "" {
		c.verdict += " " + h.Target
	}
	var extra []string
	if h.Src != "" {
		extra = append(extra, "src="+h.Src)
	}
	if h.Dst != "" {
		extra = append(extra, "dst="+h.Dst)
	}
	if t.o.Wide {
		if h.In != "" {
			extra = append(extra, "in="+h.In)
		}
		if h.Out != "" {
			extra = append(extra, "out="+h.Out)
		}
		if h.Mark != "" {
			extra = append(extra, "mark="+h.Mark)
		}
	}
	c.extra = strings.Join(extra, " ")
	return c
}

func (t *Text) lines(b *strings.Builder, p *record.Packet, ls []line) {
	cells := make([]hopCells, len(ls))
	var nw, ww, rw, vw int
	for k, l := range ls {
		c := hopCells{num: strconv.Itoa(l.first + 1)}
		if !l.fold {
			c = t.cells(&p.Hops[l.first])
			c.num = strconv.Itoa(l.first + 1)
			ww, rw, vw = max(ww, len(c.where)), max(rw, len(c.rule)), max(vw, len(c.verdict))
		} else if l.last > l.first {
			c.num += "-" + strconv.Itoa(l.last+1)
		}
		cells[k] = c
		nw = max(nw, len(c.num))
	}
	indent := strings.Repeat(" ", 2+nw+2)
	crossed := 0
	cross := func(before int) {
		for ; crossed < len(p.Crossings) && (p.Crossings[crossed].Hop >= 0 && p.Crossings[crossed].Hop <= before || before == len(p.Hops)); crossed++ {
			b.WriteString(indent + t.style(crossingText(p.Crossings[crossed]), cyan) + "\n")
		}
	}
	for k, l := range ls {
		cross(l.first)
		c := cells[k]
		mark := " "
		if p.VerdictHop >= l.first && p.VerdictHop <= l.last {
			mark = t.style(">", verdictStyle(p.Verdict))
		}
		fmt.Fprintf(b, " %s%s  ", mark, pad(c.num, nw))
		if l.fold {
			b.WriteString(t.style(foldText(p, l), dim) + "\n")
			continue
		}
		h := &p.Hops[l.first]
		fmt.Fprintf(b, "%s  %s  %s", pad(c.where, ww), pad(c.rule, rw), t.style(pad(c.verdict, vw), verdictStyle(h.Verdict)))
		tail := c.meaning
		if c.extra != "" {
			tail = strings.TrimSpace(tail + "  [" + c.extra + "]")
		}
		if tail != "" {
			b.WriteString("  " + tail)
		}
		b.WriteString("\n")
		if h.Text != "" && h.Kind == "rule" && !t.o.NoRuleText {
			b.WriteString(indent + t.style(h.Text, dim) + "\n")
		}
	}
	cross(len(p.Hops))
}

func (t *Text) explain(b *strings.Builder, p *record.Packet) {
	ex := p.Explain
	if ex == nil {
		return
	}
	b.WriteString("  = " + ex.Summary + "\n")
	if ex.Reason != "" {
		b.WriteString("  " + t.style("why:", bold) + " " + ex.Reason + "\n")
	}
	if seen := ex.SourceSeenByEndpoint; seen != "" {
		b.WriteString("  the endpoint sees source " + seen)
		if record.Host(p.Src) != seen {
			b.WriteString(", not the client " + p.Src)
		}
		b.WriteString("\n")
	}
	for _, n := range ex.Notes {
		b.WriteString("  note: " + n + "\n")
	}
}

// Lost writes a line saying records were lost.
func (t *Text) Lost(l *record.Lost) error {
	where := ""
	if l.Where != "" {
		where = " (" + l.Where + ")"
	}
	_, err := fmt.Fprintf(t.w, "%s %s lost%s: some paths may be incomplete\n", t.style("!", yellow+bold), plural64(l.Count, "trace record"), where)
	return err
}

// Warning writes a warning line.
func (t *Text) Warning(w *record.Warning) error {
	node := ""
	if w.Node != "" {
		node = " [" + w.Node + "]"
	}
	_, err := fmt.Fprintf(t.w, "%s%s %s\n", t.style("warning:", yellow+bold), node, w.Message)
	return err
}

// Summary writes the session summary.
func (t *Text) Summary(s *record.Summary) error {
	var b strings.Builder
	b.WriteString("\n" + t.style("Summary", bold))
	if s.Node != "" {
		b.WriteString(" (node " + s.Node + ")")
	}
	b.WriteString(": " + plural(s.Packets, "packet"))
	verdicts := make([]string, 0, len(s.Verdicts))
	for v := range s.Verdicts {
		verdicts = append(verdicts, v)
	}
	sort.Strings(verdicts)
	for _, v := range verdicts {
		fmt.Fprintf(&b, ", %d %s", s.Verdicts[v], t.style(v, verdictStyle(v)))
	}
	fmt.Fprintf(&b, "; %d source-NATed", s.SNAT)
	if s.Retransmits > 0 {
		fmt.Fprintf(&b, "; %s", plural(s.Retransmits, "SYN retransmission"))
	}
	fmt.Fprintf(&b, "; %s lost\n", plural64(s.Lost, "record"))
	if len(s.Endpoints) > 0 {
		rows := [][]string{{"SERVICE", "ENDPOINT", "POD", "PACKETS", "SHARE", "EXPECTED"}}
		for _, e := range s.Endpoints {
			exp := "-"
			if e.Expected > 0 {
				exp = pct(e.Expected)
			}
			rows = append(rows, []string{orDash(e.Service), e.Endpoint, orDash(e.Pod), strconv.Itoa(e.Count), pct(e.Share), exp})
		}
		table(&b, rows)
	}
	if len(s.Nodes) > 0 {
		rows := [][]string{{"SERVICE", "NODE", "ENDPOINTS", "PACKETS", "SHARE", "EXPECTED"}}
		for _, n := range s.Nodes {
			rows = append(rows, []string{orDash(n.Service), n.Node, strconv.Itoa(n.Endpoints), strconv.Itoa(n.Count), pct(n.Share), pct(n.Expected)})
		}
		table(&b, rows)
	}
	for _, d := range s.Drops {
		fmt.Fprintf(&b, "  %d dropped/rejected: %s\n", d.Count, d.Reason)
	}
	_, err := io.WriteString(t.w, b.String())
	return err
}

// plural writes a count and a noun that takes an "s" for any count but 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func plural64(n uint64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatUint(n, 10) + " " + noun + "s"
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// table writes rows with aligned columns, indented by two spaces.
func table(b *strings.Builder, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range rows {
		b.WriteString(" ")
		for i, c := range r {
			b.WriteString(" ")
			if i == len(r)-1 {
				b.WriteString(c)
			} else {
				b.WriteString(pad(c, widths[i]))
			}
		}
		b.WriteString("\n")
	}
}
