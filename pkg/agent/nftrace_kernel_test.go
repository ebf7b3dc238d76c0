package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// collectNftrace opens an nftrace source inside ns and collects its events
// until stop is called.
func collectNftrace(t *testing.T, ns *netns) (events func() []trace.Event, stop func()) {
	t.Helper()
	src := NewNftraceSource()
	var openErr error
	ns.do(t, func() { openErr = src.Open() })
	if openErr != nil {
		t.Fatal(openErr)
	}
	var mu sync.Mutex
	var evs []trace.Event
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(ev *trace.Event) {
			mu.Lock()
			evs = append(evs, *ev)
			mu.Unlock()
		}, func(uint64) {})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("nftrace source: %v", err)
		}
		src.Close()
	}
	t.Cleanup(stop)
	return func() []trace.Event {
		mu.Lock()
		defer mu.Unlock()
		return append([]trace.Event(nil), evs...)
	}, stop
}

func TestNftraceSourceDebug(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, BackendNft)
	events, stop := collectNftrace(t, tp.node)
	tp.node.mustRun(t, "iptables-nft", "-w", "-t", "raw", "-I", "OUTPUT", "1", "-d", tp.svc4().Addr().String(), "-p", "tcp", "--dport", "80", "-m", "comment", "--comment", "svctrace-test", "-j", "TRACE")
	if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	for _, ev := range events() {
		t.Logf("%08x %s %s %s handle=%d verdict=%s target=%s hdr=%v src=%s dst=%s:%d", ev.TraceID, ev.Table, ev.Chain, ev.Kind, ev.Handle, ev.Verdict, ev.Target, ev.HasHeader, ev.Header.Src, ev.Header.Dst, ev.Header.DPort)
	}
}
