//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nxadm/tail"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// kernLogSource follows a syslog file holding kernel messages
// (/var/log/kern.log, /var/log/messages) for nodes where /dev/kmsg is not
// readable but a syslog daemon writes the kernel log. It follows rotation
// (the file renamed and created again). Syslog lines carry no sequence
// number: records the daemon dropped cannot be counted.
type kernLogSource struct {
	Path string

	t   *tail.Tail
	dec *trace.Decoder
}

// newKernLogSource returns a source following path.
func newKernLogSource(path string) *kernLogSource { return &kernLogSource{Path: path} }

// Name implements source.
func (s *kernLogSource) Name() string { return SourceKernLog }

// Open implements source: lines written after Open returns are read.
func (s *kernLogSource) Open() error {
	// The end offset is taken now, not when the tail goroutine gets to
	// its first seek, so lines written right after Open are not skipped.
	fi, err := os.Stat(s.Path)
	if err != nil {
		return fmt.Errorf("open %s (mount the node's /var/log into the agent pod, or use --source kmsg): %w", s.Path, err)
	}
	t, err := tail.TailFile(s.Path, tail.Config{
		Location:  &tail.SeekInfo{Offset: fi.Size(), Whence: io.SeekStart},
		ReOpen:    true,
		Follow:    true,
		MustExist: true,
		Logger:    tail.DiscardingLogger,
	})
	if err != nil {
		return fmt.Errorf("follow %s: %w", s.Path, err)
	}
	s.t = t
	s.dec = trace.NewDecoder(trace.FormatKernLog)
	return nil
}

// Run implements source.
func (s *kernLogSource) Run(ctx context.Context, emit func(*trace.Event), lost func(uint64)) error {
	if s.t == nil {
		return errors.New("kern.log source used before Open")
	}
	var ev trace.Event
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-s.t.Lines:
			if !ok {
				if err := s.t.Err(); err != nil && ctx.Err() == nil {
					return fmt.Errorf("follow %s: %w", s.Path, err)
				}
				return nil
			}
			if line.Err != nil {
				return fmt.Errorf("follow %s: %w", s.Path, line.Err)
			}
			if s.dec.Decode([]byte(line.Text), &ev) == trace.ResultEvent {
				emit(&ev)
			}
		}
	}
}

// Close implements source.
func (s *kernLogSource) Close() error {
	if s.t == nil {
		return nil
	}
	err := s.t.Stop()
	s.t.Cleanup()
	s.t = nil
	return err
}
