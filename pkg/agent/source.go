//go:build linux

package agent

import (
	"context"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// source delivers a node's trace events.
type source interface {
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

// drainer is a source that tells whether it has read, and handed to emit,
// every record queued (kernel.ReadGate): a packet is left to its quiet
// window only then, so a reader starved of CPU does not cut one in two.
// The kern.log source cannot tell.
type drainer interface{ Drained() bool }

// nftraceSource is the nftables trace socket (package kernel) as a source.
type nftraceSource struct{ kernel.TraceSocket }

// Name implements source.
func (*nftraceSource) Name() string { return SourceNftrace }
