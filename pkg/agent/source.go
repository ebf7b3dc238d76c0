package agent

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// Source delivers a node's trace events.
type Source interface {
	// Name is "kmsg", "kern.log" or "nftrace" (record.Lost.Where).
	Name() string
	// Open starts listening: an event the kernel emits after Open returned
	// is delivered by Run. Sessions open their sources before inserting
	// TRACE rules so the first packets are not missed.
	Open() error
	// Run reads until ctx is done or the source fails. emit's Event is
	// reused once emit returns. lost(n) reports n records lost by the
	// kernel or the reader; lost(0) reports a loss of unknown size (netlink
	// receive buffer overflow).
	Run(ctx context.Context, emit func(*trace.Event), lost func(n uint64)) error
	// Close releases the source; it unblocks Run.
	Close() error
}

// monotonic returns CLOCK_MONOTONIC: the clock of kernel log timestamps,
// used to stamp nftables trace events (which carry no time) and to Tick the
// grouper on the same time line as the events.
func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
