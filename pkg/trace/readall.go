package trace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// MaxLineLen is the longest input line ReadAll and Follow decode; longer
// lines are skipped and counted as malformed. nft rule texts with large maps
// are the long ones.
const MaxLineLen = 1 << 20

// Stats is what ReadAll or Follow saw: the Decoder's and the Grouper's
// counts.
type Stats struct {
	DecodeStats
	GroupStats
}

// ReadAll reads trace output in format f from r line by line, decodes it,
// groups the records into packets and hands each to opts.Emit (see
// GroupOptions for the reuse rule), then flushes at EOF. It suits finished
// input (files, the analyze command); live input wants Follow, which also
// emits packets that went quiet while the input pauses.
//
// Malformed and over-long lines are skipped and counted. An EPIPE from r
// (/dev/kmsg: the kernel overwrote records before they were read) is not
// fatal: reading goes on and the loss shows as a sequence gap. Any other
// read error ends the input (packets held so far are still emitted) and is
// returned.
func ReadAll(r io.Reader, f Format, opts GroupOptions) (Stats, error) {
	d := NewDecoder(f)
	g := NewGrouper(opts)
	var ev Event
	err := scanLines(r, func(line []byte) {
		if d.Decode(line, &ev) == ResultEvent {
			g.Add(&ev)
		}
	}, d.skipTooLong)
	g.Flush()
	return Stats{DecodeStats: d.Stats(), GroupStats: g.Stats()}, err
}

// scanLines calls fn for every line of r (without copying: the slice is
// valid until fn returns) and tooLong for every line over MaxLineLen.
func scanLines(r io.Reader, fn func(line []byte), tooLong func()) error {
	br := bufio.NewReaderSize(r, MaxLineLen)
	epipes := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			tooLong()
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			line = nil
		}
		if len(line) > 0 {
			epipes = 0
			fn(line)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, syscall.EPIPE) && epipes < maxEPIPE:
			// kmsg overrun: the next read returns the oldest record left.
			epipes++
		default:
			return fmt.Errorf("read trace input: %w", err)
		}
	}
}

// maxEPIPE bounds consecutive EPIPEs without a line in between, for readers
// that fail that way for good.
const maxEPIPE = 64

// Follow is ReadAll for live input (/dev/kmsg, a followed kern.log, the
// output of xtables-monitor --trace or nft monitor trace). A goroutine reads
// and decodes r; Follow groups the records and also ticks the Grouper every
// Quiet/2 on the monotonic clock, so a packet that got no record for the
// quiet window is emitted (at most Quiet/2 later) even when the input
// pauses. opts.Emit is called on Follow's own goroutine.
//
// Follow returns at the end of r (nil, or the read error as ReadAll would)
// or when ctx is done (ctx.Err()), after emitting every held packet. It does
// not wait for a Read that blocks: close r to release the reading goroutine.
func Follow(ctx context.Context, r io.Reader, f Format, opts GroupOptions) (Stats, error) {
	g := NewGrouper(opts)
	d := NewDecoder(f)
	var mu sync.Mutex // guards d: its counters are read when ctx ends first

	events := make(chan Event, 256)
	quit := make(chan struct{})
	defer close(quit)
	readErr := make(chan error, 1)
	go func() {
		defer close(events)
		var ev Event
		readErr <- scanLines(r, func(line []byte) {
			mu.Lock()
			res := d.Decode(line, &ev)
			mu.Unlock()
			if res == ResultEvent {
				select {
				case events <- ev:
				case <-quit:
				}
			}
		}, func() {
			mu.Lock()
			d.skipTooLong()
			mu.Unlock()
		})
	}()

	start := time.Now()
	ticker := time.NewTicker(max(g.quiet/2, time.Millisecond))
	defer ticker.Stop()
	g.Tick(0)
	stats := func() Stats {
		mu.Lock()
		defer mu.Unlock()
		return Stats{DecodeStats: d.Stats(), GroupStats: g.Stats()}
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				g.Flush()
				return stats(), <-readErr
			}
			g.Add(&ev)
		case <-ticker.C:
			g.Tick(time.Since(start))
		case <-ctx.Done():
			g.Flush()
			return stats(), ctx.Err()
		}
	}
}
