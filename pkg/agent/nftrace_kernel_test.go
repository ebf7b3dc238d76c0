//go:build linux

package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// collectNftrace opens an nftrace source inside ns and collects its events
// until stop is called.
func collectNftrace(t *testing.T, ns *netns) (events func() []trace.Event, stop func()) {
	t.Helper()
	src := &nftraceSource{}
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

// TestNftraceSource reads the real kernel's trace events for one SYN
// through kube-proxy-shaped iptables-nft rules and checks the decoded
// events: order, kinds, verdicts, handles, and the packet before and after
// DNAT.
func TestNftraceSource(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, backendNft)
	events, stop := collectNftrace(t, tp.node)
	tp.node.mustRun(t, "iptables-nft", "-w", "-t", "raw", "-I", "OUTPUT", "1", "-d", tp.svc4().Addr().String(), "-p", "tcp", "--dport", "80", "--tcp-flags", "FIN,SYN,RST,ACK", "SYN", "-m", "comment", "--comment", "svctrace-test", "-j", "TRACE")
	if err := tp.dial(t, "tcp", tp.svc4()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	evs := events()
	if len(evs) == 0 {
		t.Fatal("no trace events")
	}
	type ev struct {
		Table, Chain, Kind, Verdict, Target string
		HasHandle                           bool
		Dst                                 string
	}
	ep := netip.AddrPortFrom(tp.epIP4(), 8080)
	svc := tp.svc4().String()
	want := []ev{
		{"raw", "OUTPUT", "rule", "CONTINUE", "", true, svc},
		{"raw", "OUTPUT", "policy", "ACCEPT", "", false, svc},
		{"nat", "OUTPUT", "rule", "JUMP", "KUBE-SERVICES", true, svc},
		{"nat", "KUBE-SERVICES", "rule", "JUMP", tp.svcChain(), true, svc},
		{"nat", tp.svcChain(), "rule", "JUMP", "KUBE-MARK-MASQ", true, svc},
		{"nat", "KUBE-MARK-MASQ", "rule", "CONTINUE", "", true, svc},
		{"nat", "KUBE-MARK-MASQ", "return", "RETURN", "", false, svc},
		{"nat", tp.svcChain(), "rule", "JUMP", tp.sepChain(ep), true, svc},
		{"nat", tp.sepChain(ep), "rule", "ACCEPT", "", true, svc},
		{"filter", "OUTPUT", "rule", "JUMP", "KUBE-SERVICES", true, ep.String()},
		{"filter", "KUBE-SERVICES", "return", "RETURN", "", false, ep.String()},
		{"filter", "OUTPUT", "policy", "ACCEPT", "", false, ep.String()},
		{"nat", "POSTROUTING", "rule", "JUMP", "KUBE-POSTROUTING", true, ep.String()},
		{"nat", "KUBE-POSTROUTING", "rule", "CONTINUE", "", true, ep.String()},
		{"nat", "KUBE-POSTROUTING", "rule", "ACCEPT", "", true, ep.String()},
	}
	id := evs[0].TraceID
	var got []ev
	for _, e := range evs {
		if e.TraceID != id {
			continue
		}
		got = append(got, ev{e.Table, e.Chain, e.Kind.String(), e.Verdict, e.Target, e.Handle != 0, netip.AddrPortFrom(e.Header.Dst, e.Header.DPort).String()})
		if e.Header.Out != fmt.Sprintf("svn%d", tp.x) || e.Header.Proto != trace.ProtoTCP || e.Header.TCPFlags != trace.TCPSyn || e.Header.Src != tp.nodeIP4() {
			t.Errorf("%s %s: header %+v, want a SYN from %s out of svn%d", e.Table, e.Chain, e.Header, tp.nodeIP4(), tp.x)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events of trace %08x (-want +got):\n%s", id, diff)
	}
}
