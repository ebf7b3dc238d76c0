package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/render"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// ExitUnreadable is analyze's exit code when some input could not be read
// as trace records (the rest was still analyzed).
const ExitUnreadable = 3

var (
	analyzeLong = templates.LongDesc(`
		Analyze netfilter TRACE output captured earlier: group the records into
		packets and print each packet's path through the rules, annotated with
		what kube-proxy's chains mean, the NAT applied and the verdict.

		Inputs may be /dev/kmsg records, dmesg output, syslog kern.log lines,
		bare TRACE lines, "xtables-monitor --trace" or "nft monitor trace"
		output; the format is detected per file. Give the node's rules
		(iptables-save, ip6tables-save or "nft -a list ruleset" output) with
		--rules to see each rule's text and meaning.`)

	analyzeExample = templates.Examples(`
		# Analyze a kern.log excerpt with the node's rules
		%[1]s analyze --rules iptables-save.txt kern.log

		# Analyze xtables-monitor output from stdin, as NDJSON
		xtables-monitor --trace | %[1]s analyze -o json -

		# Force the input format
		%[1]s analyze --format kmsg records.txt`)
)

// AnalyzeOptions are the analyze command's flags and inputs.
type AnalyzeOptions struct {
	RulesFiles []string
	Format     string
	Output     string
	Summary    bool
	NoRuleText bool
	Files      []string

	format trace.Format
	genericiooptions.IOStreams
}

// NewCmdAnalyze returns the analyze command.
func NewCmdAnalyze(streams genericiooptions.IOStreams) *cobra.Command {
	o := &AnalyzeOptions{IOStreams: streams, Output: "text", Format: "auto"}
	cmd := &cobra.Command{
		Use:     "analyze [--rules FILE]... FILE...",
		Short:   "Annotate captured TRACE output (kernel log, xtables-monitor, nft monitor)",
		Long:    analyzeLong,
		Example: fmt.Sprintf(analyzeExample, "kubectl svctrace"),
		Args:    cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Files = args
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run()
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.RulesFiles, "rules", nil, "ruleset snapshot: iptables-save, ip6tables-save or nft -a list ruleset output (repeatable)")
	f.StringVar(&o.Format, "format", o.Format, "input format: auto, kmsg, dmesg, kern.log, bare, xtables-monitor, nft-monitor")
	f.StringVarP(&o.Output, "output", "o", o.Output, "output format: text, wide or json")
	f.BoolVar(&o.Summary, "summary", false, "print only the summary (with -o json: a summary record after the packets)")
	f.BoolVar(&o.NoRuleText, "no-rule-text", false, "text output: leave out the rule text under each hop")
	return cmd
}

// Validate checks the flags; it does no I/O.
func (o *AnalyzeOptions) Validate() error {
	var err error
	if o.format, err = trace.ParseFormat(o.Format); err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	switch o.Output {
	case "text", "wide", "json":
	default:
		return fmt.Errorf("--output %q: use text, wide or json", o.Output)
	}
	stdin := 0
	for _, f := range o.Files {
		if f == "-" {
			stdin++
		}
	}
	if stdin > 1 {
		return errors.New("stdin (-) can be given only once")
	}
	return nil
}

// renderer is what analyze needs from a render.Text or render.JSON.
type renderer interface {
	Packet(*record.Packet) error
	Lost(*record.Lost) error
	Summary(*record.Summary) error
}

// Run reads the rules and every input, and renders each packet.
func (o *AnalyzeOptions) Run() (err error) {
	ix := (*rules.Index)(nil)
	if len(o.RulesFiles) > 0 {
		ix = rules.NewIndex()
		for _, path := range o.RulesFiles {
			data, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("read --rules: %w", err)
			}
			if err := ix.Add(data); err != nil {
				return fmt.Errorf("--rules %s: %w", path, err)
			}
		}
	}
	w := bufio.NewWriterSize(o.Out, 1<<16)
	defer func() {
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
	}()
	var out renderer
	if o.Output == "json" {
		out = render.NewJSON(w)
	} else {
		out = render.NewText(w, render.TextOptions{
			Color:      render.IsTerminal(o.Out),
			Wide:       o.Output == "wide",
			NoRuleText: o.NoRuleText,
		})
	}
	sum := explain.NewSummarizer("")
	var records, malformed uint64
	for _, path := range o.Files {
		st, err := o.analyzeFile(path, ix, w, out, sum)
		if err != nil {
			return err
		}
		records += st.Records
		malformed += st.Malformed
	}
	if records > 0 && (o.Summary || o.Output != "json") {
		s := sum.Summary()
		if err := out.Summary(&s); err != nil {
			return err
		}
	}
	if records == 0 {
		return ExitError{Code: ExitUnreadable, Err: errors.New("no trace records found in the input: give kernel log TRACE lines, xtables-monitor --trace or nft monitor trace output (see --format)")}
	}
	if malformed > 0 {
		return ExitError{Code: ExitUnreadable, Err: fmt.Errorf("%d of %d trace lines could not be read and were skipped", malformed, malformed+records)}
	}
	return nil
}

func (o *AnalyzeOptions) analyzeFile(path string, ix *rules.Index, w *bufio.Writer, out renderer, sum *explain.Summarizer) (trace.Stats, error) {
	var r io.Reader = o.In
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return trace.Stats{}, err
		}
		defer f.Close()
		r = f
	}
	// Decoding and grouping run here while other cores annotate (and
	// encode) the packets; the records come back in order. From a file
	// the output is buffered; from stdin (maybe a live monitor) every
	// packet is annotated and written as soon as it is complete.
	size := explain.BatchSize
	if path == "-" {
		size = 1
	}
	var encode func([]byte, *record.Packet) []byte
	if o.Output == "json" && !o.Summary {
		encode = render.AppendPacket
	}
	par := explain.NewParallel(ix, size, encode, func(recs []record.Packet, encoded []byte) error {
		for i := range recs {
			sum.Add(&recs[i])
		}
		switch {
		case o.Summary:
			return nil
		case encode != nil:
			if _, err := w.Write(encoded); err != nil {
				return err
			}
		default:
			for i := range recs {
				if err := out.Packet(&recs[i]); err != nil {
					return err
				}
			}
		}
		if path == "-" {
			return w.Flush()
		}
		return nil
	})
	st, err := trace.ReadAll(r, o.format, trace.GroupOptions{
		Ordered:    true,
		Ending:     explain.Ending(ix),
		HookTables: explain.HookTables(ix),
		Emit:       par.Add,
	})
	if werr := par.Close(); werr != nil {
		return st, werr
	}
	if err != nil {
		return st, fmt.Errorf("read %s: %w", path, err)
	}
	if st.Lost > 0 {
		sum.AddLost(st.Lost)
		if err := out.Lost(&record.Lost{Type: record.TypeLost, Count: st.Lost, Where: path}); err != nil {
			return st, err
		}
	}
	return st, nil
}
