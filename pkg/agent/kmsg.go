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

// Open implements source: it opens the device and reads the records already
// logged, so only records written from now on are decoded. The last one's
// sequence number is where counting gaps starts: records the ring buffer
// overwrites before Run's first read are counted as lost, which a seek to
// the end (no number to count from) would leave silent.
func (s *kmsgSource) Open() error {
	// O_NONBLOCK makes the file pollable: Close and read deadlines then
	// unblock a pending Read.
	f, err := os.OpenFile(s.Path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s (the agent pod must mount it and run privileged): %w", s.Path, err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("read %s: %w", s.Path, err)
	}
	s.f, s.raw = f, raw
	s.dec = trace.NewDecoder(trace.FormatKmsg)
	if err := s.readToEnd(); err != nil {
		f.Close()
		s.f, s.raw = nil, nil
		return fmt.Errorf("read %s to its end: %w", s.Path, err)
	}
	return nil
}

// kmsgBacklogMax bounds the records readToEnd reads: far more than any
// ring buffer holds, so only a log written faster than it is read reaches
// it.
const kmsgBacklogMax = 1 << 20

// readToEnd reads the records already logged, each a Baseline for the
// decoder. A log that does not run dry within kmsgBacklogMax records is
// sought to its end instead, and its gaps are counted from the first record
// Run reads.
func (s *kmsgSource) readToEnd() error {
	buf := make([]byte, kmsgRecordMax)
	var rerr error
	dry := false
	err := s.raw.Control(func(fd uintptr) {
		for range kmsgBacklogMax {
			n, err := syscall.Read(int(fd), buf)
			switch {
			case err == nil:
				s.dec.Baseline(buf[:n])
			case errors.Is(err, syscall.EAGAIN):
				dry = true
				return
			case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.EINTR):
				// Overwritten while read, or interrupted: read on.
			default:
				rerr = err
				return
			}
		}
	})
	if err := errors.Join(err, rerr); err != nil || dry {
		return err
	}
	if _, err := s.f.Seek(0, io.SeekEnd); err != nil {
		return err
	}
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
