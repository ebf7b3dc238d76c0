//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// kmsgSource reads legacy TRACE records from /dev/kmsg. Each read returns one
// record; records are numbered, so records the ring buffer overwrote before
// the reader got to them show as a sequence gap and are counted exactly.
type kmsgSource struct {
	// Path is "/dev/kmsg" (a seam for tests).
	Path string

	f      *os.File
	raw    syscall.RawConn // f's, set by Open (Drained)
	gate   kernel.ReadGate
	dec    *trace.Decoder
	epipes uint64
}

// newKmsgSource returns a source reading /dev/kmsg.
func newKmsgSource() *kmsgSource { return &kmsgSource{Path: "/dev/kmsg"} }

// Name implements source.
func (s *kmsgSource) Name() string { return SourceKmsg }

// Open implements source: it opens the device and seeks to its end, so only
// records written from now on are read.
func (s *kmsgSource) Open() error {
	// O_NONBLOCK makes the file pollable: Close and read deadlines then
	// unblock a pending Read.
	f, err := os.OpenFile(s.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s (the agent pod must mount it and run privileged): %w", s.Path, err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return fmt.Errorf("seek to the end of %s: %w", s.Path, err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", s.Path, err)
	}
	s.f, s.raw = f, raw
	s.dec = trace.NewDecoder(trace.FormatKmsg)
	return nil
}

// kmsgRecordMax is larger than any kernel log record (the kernel's limit
// for one /dev/kmsg record is 8 KiB including its dictionary).
const kmsgRecordMax = 16 << 10

// Run implements source.
func (s *kmsgSource) Run(ctx context.Context, emit func(*trace.Event), lost func(uint64)) error {
	if s.f == nil {
		return errors.New("kmsg source used before Open")
	}
	stop := context.AfterFunc(ctx, func() { _ = s.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, kmsgRecordMax)
	var ev trace.Event
	for {
		n, err := s.gate.ReadFrom(s.raw, func(fd int) (int, error) { return syscall.Read(fd, buf) }, nil)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EPIPE):
				// The ring buffer overwrote records we had not read;
				// the next read returns the oldest one left, and the
				// sequence gap tells how many went.
				s.epipes++
				continue
			case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, os.ErrClosed):
				return nil
			}
			return fmt.Errorf("read %s: %w", s.Path, err)
		}
		r := s.dec.Decode(buf[:n], &ev)
		if g := s.dec.Gap(); g > 0 {
			lost(g)
		}
		if r == trace.ResultEvent {
			emit(&ev)
		}
	}
}

// Drained reports whether Run waits with no record queued and none read
// but not handed to emit (kernel.ReadGate).
func (s *kmsgSource) Drained() bool { return s.raw == nil || s.gate.Drained(s.raw) }

// Close implements source.
func (s *kmsgSource) Close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
