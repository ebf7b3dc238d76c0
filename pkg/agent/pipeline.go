//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// The live pipeline: sources feed groupers, packets are annotated and
// written, the ruleset is watched; then it stops in order.

// traceLive runs the live pipeline until ctx is done, then stops it: the
// nft rules' counters are read, the TRACE rules removed (no new traces),
// what the kernel had queued is read, and the losses are counted. It
// returns the rules removed.
func (s *session) traceLive(ctx context.Context) (removed int, err error) {
	// The live pipeline.
	s.snap = &snapshotter{h: s.h, cfg: &s.cfg, det: s.det, log: s.log, foreign: &s.nftForeign}
	s.snapReady = make(chan struct{})
	s.settled = make(chan struct{})
	var srcWG, bgWG, writerWG sync.WaitGroup
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources()
	if s.cfg.RulesSnapshot && s.index[backendNft] != nil {
		// Before the sources: they hand it the events.
		s.fetcher = newChainFetcher(s)
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			s.fetcher.run(ctx)
		}()
	}
	for _, p := range s.pipes {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			if err := p.src.Run(srcCtx, p.addEvent, p.addLost); err != nil {
				s.cancel(fmt.Errorf("read trace source %s: %w", p.src.Name(), err))
			}
		}()
	}
	writerWG.Add(1)
	go func() {
		defer writerWG.Done()
		s.writePackets(ctx)
	}()
	bgWG.Add(2)
	go func() {
		defer bgWG.Done()
		s.initialSnapshot(ctx)
	}()
	go func() {
		defer bgWG.Done()
		s.tickLoop(ctx)
	}()
	if s.cfg.Probe {
		// Waited for with the others: it may be inside the pod's
		// namespace, whose handle is closed on the way out.
		bgWG.Add(1)
		go func() {
			defer bgWG.Done()
			s.probe(ctx)
		}()
	}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watchLoop(ctx)
	}()

	<-ctx.Done()
	<-watchDone
	s.log.Printf("stopping: %v", context.Cause(ctx))

	// Read the nft rules' counters, then remove the rules at once (no new
	// traces), then read what the kernel had already queued.
	matched := s.matchedPackets()
	n, rerr := s.removeRules()
	removed += n
	s.drain()
	stopSources()
	srcWG.Wait()
	bgWG.Wait()
	cerr := errors.Join(rerr, s.finish())
	for _, p := range s.pipes {
		p.mu.Lock()
		p.g.Flush()
		st := p.g.Stats()
		p.mu.Unlock()
		s.log.Printf("%s: %d packet(s) grouped: %d complete, %d after the quiet window, %d split, %d evicted, %d truncated, %d at the end",
			p.src.Name(), st.Packets, st.Complete, st.Quiet, st.Split, st.Evicted, st.Truncated, st.Flushed)
	}
	close(s.packets)
	writerWG.Wait()
	if err := s.live.Close(); err != nil {
		s.log.Printf("close the route netlink socket: %v", err)
	}
	if s.ignoredPkts > 0 {
		s.log.Printf("ignored %d packet(s) (%d records) not to the traced destinations: other tracers on the node, or packets whose first records were lost", s.ignoredPkts, s.ignoredHops)
	}
	s.reportLost(matched)
	if cerr != nil {
		return removed, fmt.Errorf("clean up (run `kubectl svctrace cleanup` to finish): %w", cerr)
	}
	return removed, nil
}

// drain waits, once the TRACE rules are gone, for the records the kernel
// had queued and those of packets still on their way through the hooks:
// until no record came for drainQuiet, at most drainTime; a syslog file,
// which its daemon writes when it gets to it, for drainTime.
func (s *session) drain() {
	for _, p := range s.pipes {
		if p.src.Name() == SourceKernLog {
			time.Sleep(drainTime)
			return
		}
	}
	count := func() (n uint64) {
		for _, p := range s.pipes {
			n += p.events.Load()
		}
		return n
	}
	deadline := time.Now().Add(drainTime)
	last, quietSince := count(), time.Now()
	for time.Now().Before(deadline) && time.Since(quietSince) < drainQuiet {
		time.Sleep(drainQuiet / 4)
		if n := count(); n != last {
			last, quietSince = n, time.Now()
		}
	}
}

// matchedPackets reads how many packets the nft TRACE rules matched: every
// one started a trace (nil without an nft source).
func (s *session) matchedPackets() map[ipBackend]uint64 {
	for _, p := range s.pipes {
		if p.backend != backendNft {
			continue
		}
		n, err := s.tr.matchedPackets(backendNft)
		if err != nil {
			s.warn(fmt.Sprintf("reading TRACE rule counters: %v", err))
			return nil
		}
		return map[ipBackend]uint64{backendNft: n}
	}
	return nil
}

// reportLost writes the losses not reported yet, and counts the traced
// packets whose trace never arrived (netlink says only that it overflowed)
// from the rules' counters.
func (s *session) reportLost(matched map[ipBackend]uint64) {
	for _, p := range s.pipes {
		p.flushLost()
		if m, ok := matched[p.backend]; ok {
			if starts := p.starts.Load(); m > starts {
				p.totalLost.Add(m - starts)
				_ = s.out.write(&record.Lost{Type: record.TypeLost, Node: s.cfg.Node, Count: m - starts, Where: "netlink"})
				s.warn(fmt.Sprintf("%d traced packet(s) never reached the agent (netlink receive buffer overflowed %d time(s)); counted from the TRACE rules' packet counters", m-starts, p.overflows.Load()))
			}
		}
	}
}

// pipeline is one source feeding one grouper.
type pipeline struct {
	s       *session
	src     source
	backend ipBackend
	handles atomic.Pointer[map[handleKey]bool]

	mu     sync.Mutex
	g      *trace.Grouper
	ending *snapshotEnding

	own         *ownership    // nil: every record is this node's
	events      atomic.Uint64 // records read
	pendingLost atomic.Uint64
	totalLost   atomic.Uint64
	overflows   atomic.Uint64
	warnedOver  uint64
	starts      atomic.Uint64
}

type handleKey struct {
	fam    uint8
	handle uint64
}

func (p *pipeline) setHandles(h map[handleKey]bool) { p.handles.Store(&h) }

// snapshotEnding is the Grouper's Ending and HookTables backed by the
// backend's latest ruleset snapshot, so packets complete at their real end
// (a DROP policy, a MASQUERADE ending the nat table, the last base chain of
// POSTROUTING) instead of after the quiet window. The Grouper calls it with
// the pipeline's lock held: no lock of its own.
type snapshotEnding struct {
	ix     *atomic.Pointer[rules.Index]
	last   *rules.Index
	fn     func(*trace.Event) trace.Ending
	tables func(family uint8, hook string) []trace.HookChain
	// foreign says the snapshot lacks some of the node's nft tables
	// (snapshotter.foreign): then no hook's tables are known.
	foreign *atomic.Bool
	// pending, when set, decides until the first snapshot is read.
	pending func(*trace.Event) trace.Ending
}

// current makes fn and tables those of the latest snapshot (false: none yet).
func (e *snapshotEnding) current() bool {
	ix := e.ix.Load()
	if ix == nil {
		return false
	}
	if ix != e.last {
		e.last, e.fn, e.tables = ix, explain.Ending(ix), explain.HookTables(ix)
	}
	return true
}

func (e *snapshotEnding) ending(ev *trace.Event) trace.Ending {
	if !e.current() {
		// No snapshot yet (or --rules-snapshot=false): the Grouper's own
		// inference, or what the kube-proxy mode tells.
		if e.pending != nil {
			return e.pending(ev)
		}
		return trace.EndUnknown
	}
	return e.fn(ev)
}

func (e *snapshotEnding) hookTables(family uint8, hook string) []trace.HookChain {
	if !e.current() || e.foreign != nil && e.foreign.Load() {
		return nil
	}
	return e.tables(family, hook)
}

func (p *pipeline) addEvent(ev *trace.Event) {
	p.events.Add(1)
	if p.own != nil && !p.own.keep(ev) {
		return
	}
	if p.backend == backendNft && ev.Table == "raw" && ev.Kind == trace.KindRule && p.isOwnRule(ev) {
		// The session's own TRACE rule: every traced packet starts here.
		p.starts.Add(1)
	}
	if f := p.s.fetcher; f != nil && p.backend == backendNft {
		f.note(p.s.index[backendNft].Load(), ev)
	}
	p.mu.Lock()
	p.g.Add(ev)
	p.mu.Unlock()
}

func (p *pipeline) isOwnRule(ev *trace.Event) bool {
	h := p.handles.Load()
	return h != nil && (*h)[handleKey{ev.Header.Family, ev.Handle}]
}

func (p *pipeline) addLost(n uint64) {
	if n == 0 {
		p.overflows.Add(1)
		return
	}
	p.pendingLost.Add(n)
	p.totalLost.Add(n)
}

// flushLost writes a lost record for the losses not reported yet.
func (p *pipeline) flushLost() {
	if n := p.pendingLost.Swap(0); n > 0 {
		where := p.src.Name()
		if where == SourceNftrace {
			where = "netlink"
		}
		_ = p.s.out.write(&record.Lost{Type: record.TypeLost, Node: p.s.cfg.Node, Count: n, Where: where})
	}
	if o := p.overflows.Load(); o > p.warnedOver {
		p.warnedOver = o
		p.s.warn(fmt.Sprintf("the netlink receive buffer overflowed (%d time(s) so far): trace events were lost; how many traced packets went missing is counted from the TRACE rules' counters at the end", o))
	}
}

// emitPacket is the grouper's Emit (called with p.mu held).
func (p *pipeline) emitPacket(pkt *trace.Packet) {
	p.s.packets <- pktItem{p: pkt.Clone(), backend: p.backend}
}

func (s *session) tickLoop(ctx context.Context) {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	lastLost := time.Time{}
	behind := make([]time.Time, len(s.pipes)) // since when each reader is behind
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for i, p := range s.pipes {
				// Read before asking: a record queued after Drained
				// answered came after this time.
				mono := kernel.Monotonic()
				if d, ok := p.src.(drainer); ok && !d.Drained() {
					if behind[i].IsZero() {
						behind[i] = now
					}
					if now.Sub(behind[i]) < behindMax {
						continue // the reader is behind: the pause is not the kernel's
					}
				} else {
					behind[i] = time.Time{}
				}
				p.mu.Lock()
				p.g.Tick(mono)
				p.mu.Unlock()
			}
			// Lost records at most once a second: a flood must not
			// turn into a flood of lost records.
			if now.Sub(lastLost) >= time.Second {
				lastLost = now
				for _, p := range s.pipes {
					p.flushLost()
				}
			}
		}
	}
}

// writePackets annotates and writes packets until the queue is closed.
func (s *session) writePackets(ctx context.Context) {
	for it := range s.packets {
		if !s.cfg.matches(&it.p.First) {
			// Another tracer's packet (the kernel log is shared by the
			// node), or the tail of one whose first records were lost
			// (already counted as lost).
			s.ignoredPkts++
			s.ignoredHops += len(it.p.Hops)
			continue
		}
		if s.cfg.MaxPackets > 0 && s.emitted.Load() >= int64(s.cfg.MaxPackets) {
			continue
		}
		ix := s.indexFor(ctx, it.backend, it.p)
		rec := explain.AnnotateLive(it.p, ix, func(r *record.Packet) *record.Live { return s.live.facts(r, it.p) })
		rec.TracedBy = s.cfg.tracedBy(&it.p.First)
		s.egress.add(&rec, it.p)
		rec.Node = s.cfg.Node
		if it.p.Start > 0 {
			rec.Time = s.bootWall.Add(it.p.Start).UTC().Format(time.RFC3339Nano)
		}
		if err := s.out.write(&rec); err != nil {
			s.cancel(err)
			continue
		}
		if n := s.emitted.Add(1); s.cfg.MaxPackets > 0 && n >= int64(s.cfg.MaxPackets) {
			s.cancel(errStopCount)
		}
	}
}

// matches reports whether a packet (as first seen) is one the session
// traces: /dev/kmsg is shared by every network namespace and tracer on the
// node.
func (c *Config) matches(h *trace.Header) bool {
	if h.Family == 0 {
		return true // no header to judge by
	}
	if h.Proto != protoNumber(c.Proto) {
		return false
	}
	if c.Src.IsValid() && c.Src.Addr().Is4() == (h.Family == 4) && !c.Src.Contains(h.Src) {
		return false
	}
	return c.tracedBy(h) != ""
}

func protoNumber(p string) uint8 {
	switch p {
	case "udp":
		return trace.ProtoUDP
	case "sctp":
		return trace.ProtoSCTP
	}
	return trace.ProtoTCP
}
