package render

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// TextOptions shape the human-readable output.
type TextOptions struct {
	// Color adds ANSI colours (only for a terminal).
	Color bool
	// Wide adds interfaces, marks and per-hop addresses.
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

// Packet writes one packet: a header line, one line per hop (and its rule
// text), then the explanation.
func (t *Text) Packet(p *record.Packet) error {
	t.n++
	var b strings.Builder
	if t.n > 1 {
		b.WriteByte('\n')
	}
	t.header(&b, p)
	t.hops(&b, p)
	t.explain(&b, p)
	_, err := io.WriteString(t.w, b.String())
	return err
}

func (t *Text) header(b *strings.Builder, p *record.Packet) {
	head := fmt.Sprintf("%s %s -> %s", p.Proto, p.Src, p.Dst)
	if p.Flags != "" {
		head += " [" + p.Flags + "]"
	}
	b.WriteString(t.style(head, bold))
	if p.Service != "" {
		b.WriteString("  service " + t.style(p.Service, bold))
	}
	if p.Endpoint != "" {
		b.WriteString("  endpoint " + p.Endpoint)
		if p.EndpointPod != "" {
			b.WriteString(" (" + p.EndpointPod + ")")
		}
	}
	if p.Node != "" {
		b.WriteString("  node " + p.Node)
	}
	b.WriteString("  " + t.style(p.Verdict, verdictStyle(p.Verdict)+bold))
	b.WriteByte('\n')
}

// hopCells are the plain (uncoloured) cells of one hop line.
type hopCells struct {
	where, rule, verdict, extra, meaning string
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

func (t *Text) hops(b *strings.Builder, p *record.Packet) {
	cells := make([]hopCells, len(p.Hops))
	var ww, rw, vw int
	for i := range p.Hops {
		c := t.cells(&p.Hops[i])
		cells[i] = c
		ww, rw, vw = max(ww, len(c.where)), max(rw, len(c.rule)), max(vw, len(c.verdict))
	}
	nw := len(strconv.Itoa(len(p.Hops)))
	for i, c := range cells {
		h := &p.Hops[i]
		mark := " "
		if i == p.VerdictHop {
			mark = t.style(">", verdictStyle(p.Verdict))
		}
		fmt.Fprintf(b, " %s%*d  %s  %s  %s", mark, nw, i+1, pad(c.where, ww), pad(c.rule, rw),
			t.style(pad(c.verdict, vw), verdictStyle(h.Verdict)))
		tail := c.meaning
		if c.extra != "" {
			tail = strings.TrimSpace(tail + "  [" + c.extra + "]")
		}
		if tail != "" {
			b.WriteString("  " + tail)
		}
		b.WriteString("\n")
		if h.Text != "" && h.Kind == "rule" && !t.o.NoRuleText {
			indent := strings.Repeat(" ", 2+nw+2)
			b.WriteString(indent + t.style(h.Text, dim) + "\n")
		}
	}
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
	_, err := fmt.Fprintf(t.w, "%s %d trace records lost%s: some paths may be incomplete\n", t.style("!", yellow+bold), l.Count, where)
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
	fmt.Fprintf(&b, ": %d packets", s.Packets)
	verdicts := make([]string, 0, len(s.Verdicts))
	for v := range s.Verdicts {
		verdicts = append(verdicts, v)
	}
	sort.Strings(verdicts)
	for _, v := range verdicts {
		fmt.Fprintf(&b, ", %d %s", s.Verdicts[v], t.style(v, verdictStyle(v)))
	}
	fmt.Fprintf(&b, "; %d source-NATed; %d records lost\n", s.SNAT, s.Lost)
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
	for _, d := range s.Drops {
		fmt.Fprintf(&b, "  %d dropped/rejected: %s\n", d.Count, d.Reason)
	}
	_, err := io.WriteString(t.w, b.String())
	return err
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
