package trace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MaxLineLen is the longest input line ReadAll decodes; longer lines are
// skipped and counted as malformed. nft rule texts with large maps are the
// long ones.
const MaxLineLen = 1 << 20

// Stats is what ReadAll saw: the Decoder's and the Grouper's counts.
type Stats struct {
	DecodeStats
	GroupStats
}

// ReadAll reads trace output in format f from r line by line, decodes it,
// groups the records into packets and hands each to opts.Emit (see
// GroupOptions for the reuse rule), then flushes at EOF. It is what the
// analyze command and the agent's file and kmsg sources use.
//
// Malformed and over-long lines are skipped and counted. A read error ends
// the input (packets held so far are still emitted) and is returned.
func ReadAll(r io.Reader, f Format, opts GroupOptions) (Stats, error) {
	d := NewDecoder(f)
	g := NewGrouper(opts)
	err := feed(r, d, g)
	g.Flush()
	return Stats{DecodeStats: d.Stats(), GroupStats: g.Stats()}, err
}

// feed decodes every line of r into g.
func feed(r io.Reader, d *Decoder, g *Grouper) error {
	br := bufio.NewReaderSize(r, MaxLineLen)
	var ev Event
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			d.skipTooLong()
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read trace input: %w", err)
			}
			if err != nil {
				return nil
			}
			continue
		}
		if len(line) > 0 && d.Decode(line, &ev) == ResultEvent {
			g.Add(&ev)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read trace input: %w", err)
		}
	}
}
