//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

// IO is where a session reads and writes.
type IO struct {
	// In is watched for EOF when Config.StdinWatch is set.
	In io.Reader
	// Out receives the NDJSON records.
	Out io.Writer
	// Err receives human-readable progress and warnings.
	Err io.Writer
}

// Options are seams for tests; the zero Options is the real node.
type Options struct {
	Host      *Host  // nil: NewHost()
	KmsgPath  string // "": /dev/kmsg
	NftRcvBuf int    // 0: 32 MiB
}

// Why a session stopped (record.Bye.Reason).
var (
	errStopDuration = errors.New("duration reached")
	errStopCount    = errors.New("packet count reached")
	errStopStdin    = errors.New("stdin closed: the plugin is gone")
)

type signalStop struct{ sig os.Signal }

func (s signalStop) Error() string { return "stopped by " + s.sig.String() }

// Timing of the live pipeline.
const (
	tickEvery        = 50 * time.Millisecond // grouper Tick, lost records
	drainTime        = 150 * time.Millisecond
	defaultWatch     = 3 * time.Second
	resnapshotEvery  = 3  // at most one re-read per backend per N watch intervals
	fullCheckEvery   = 10 // legacy: full re-read every N watch intervals
	snapshotWaitMax  = 60 * time.Second
	probeTimeout     = 2 * time.Second
	cleanupTimeout   = 30 * time.Second
	packetQueueDepth = 4096
)

// Run traces until cfg.Duration, cfg.MaxPackets, SIGINT/SIGTERM, stdin EOF
// (cfg.StdinWatch) or an error, then removes its rules and writes a bye
// record. It returns nil on every normal end.
func Run(ctx context.Context, cfg Config, streams IO) error {
	return RunWith(ctx, cfg, streams, Options{})
}

// RunWith is Run with test seams.
func RunWith(ctx context.Context, cfg Config, streams IO, opts Options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	h := opts.Host
	if h == nil {
		h = NewHost()
		defer h.Close()
	}
	if streams.Err == nil {
		streams.Err = io.Discard
	}
	s := &session{
		cfg:   cfg,
		io:    streams,
		h:     h,
		opts:  opts,
		out:   newOutput(streams.Out),
		log:   log.New(streams.Err, "svctrace agent: ", 0),
		start: time.Now(),
		live:  newLiveExplainer(h.ProcRoot),
	}
	if s.cfg.WatchInterval <= 0 {
		s.cfg.WatchInterval = defaultWatch
	}
	return s.run(ctx)
}

type session struct {
	cfg  Config
	io   IO
	h    *Host
	opts Options
	out  *output
	log  *log.Logger

	start    time.Time
	bootWall time.Time // wall time of monotonic zero
	sid      SessionID
	det      Detection
	tr       *tracer
	pipes    []*pipeline
	snap     *snapshotter

	loggerSet map[uint8]bool
	index     map[Backend]*atomic.Pointer[rules.Index]
	live      *liveExplainer
	// fromNS is the network namespace --probe-from-ip connects from.
	fromNS    *kernel.Netns
	snapReady chan struct{}
	packets   chan pktItem
	emitted   atomic.Int64
	cancel    context.CancelCauseFunc

	// Written by writePackets only; read after it ended.
	ignoredPkts, ignoredHops int
}

type pktItem struct {
	p       *trace.Packet
	backend Backend
}

func (s *session) run(parent context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	s.cancel = cancel
	s.bootWall = time.Now().Add(-kernel.Monotonic())

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case sig := <-sigs:
			cancel(signalStop{sig})
		case <-ctx.Done():
		}
	}()
	if s.cfg.StdinWatch && s.io.In != nil {
		go func() {
			_, _ = io.Copy(io.Discard, s.io.In)
			cancel(errStopStdin)
		}()
	}
	if s.cfg.Duration > 0 {
		t := time.AfterFunc(s.cfg.Duration, func() { cancel(errStopDuration) })
		defer t.Stop()
	}

	bye := record.Bye{Type: record.TypeBye, Node: s.cfg.Node}
	defer func() {
		if err != nil {
			bye.Reason = "error"
			bye.Error = err.Error()
		}
		if werr := s.out.write(&bye); werr != nil && err == nil {
			err = werr
		}
	}()

	removed, err := s.traceSession(ctx)
	bye.Session = s.sid.String()
	bye.Packets = int(s.emitted.Load())
	bye.RulesRemoved = removed
	for _, p := range s.pipes {
		bye.Lost += p.totalLost.Load()
	}
	if err != nil {
		return err
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errStopDuration):
		bye.Reason = "duration"
	case errors.Is(cause, errStopCount):
		bye.Reason = "count"
	case errors.Is(cause, errStopStdin):
		bye.Reason = "stdin"
	case errors.As(cause, new(signalStop)), errors.Is(cause, context.Canceled):
		bye.Reason = "signal"
	case cause != nil:
		return cause
	}
	return nil
}

// traceSession sets up, traces until ctx is done, and cleans up. It returns
// the number of TRACE rules removed.
func (s *session) traceSession(ctx context.Context) (removed int, err error) {
	var deadline time.Time
	if s.cfg.Duration > 0 {
		deadline = s.start.Add(s.cfg.Duration)
	}
	if s.sid, err = newSessionID(s.h.proc(), deadline); err != nil {
		return 0, err
	}
	if s.cfg.ProbeFrom.IsValid() {
		// Found before any rule is added: a pod that is not on this
		// node fails the session while it has changed nothing.
		if s.fromNS, err = kernel.FindNetnsByAddr(s.h.ProcRoot, s.cfg.ProbeFrom); err != nil {
			return 0, fmt.Errorf("--probe-from-ip: %w", err)
		}
		defer s.fromNS.Close()
		s.log.Printf("probing from %s: the network namespace of pid %d", s.cfg.ProbeFrom, s.fromNS.PID)
	}
	v4, v6 := s.cfg.families()
	var want, optional []uint8
	if v4 {
		want = append(want, 4)
	}
	if v6 {
		want = append(want, 6)
	} else if len(s.cfg.NodePorts) > 0 {
		optional = append(optional, 6)
	}
	s.det, err = Detect(ctx, s.h, want, optional)
	if err != nil {
		return 0, err
	}
	for _, w := range s.det.Warnings {
		s.warn(w)
	}
	sources, err := s.chooseSources()
	if err != nil {
		return 0, err
	}

	// Rules of sessions that died without cleaning up (SIGKILL, OOM, node
	// drain) would trace forever: remove them first.
	if n, warns, err := sweep(ctx, s.h, false, time.Now()); err != nil {
		s.warn(fmt.Sprintf("sweeping rules of dead sessions: %v", err))
	} else {
		for _, w := range warns {
			s.warn(w)
		}
		if n > 0 {
			s.log.Printf("removed %d TRACE rule(s) left by dead svctrace sessions", n)
		}
	}

	// Cleanup runs on every way out from here on, with a context of its
	// own: the session's is already cancelled when it runs. Rules go
	// first (no new traces), sources last (what the kernel queued before
	// is still read).
	rulesDone, restDone := false, false
	removeRules := func() (int, error) {
		if rulesDone || s.tr == nil {
			return 0, nil
		}
		rulesDone = true
		// The cleanup's time starts now, not with the session.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer ccancel()
		return s.tr.remove(cctx)
	}
	finish := func() error {
		if restDone {
			return nil
		}
		restDone = true
		var errs []error
		for fam := range s.loggerSet {
			errs = append(errs, restoreLogger(s.h.ProcRoot, fam))
		}
		for _, p := range s.pipes {
			errs = append(errs, p.src.Close())
		}
		return errors.Join(errs...)
	}
	defer func() {
		n, rerr := removeRules()
		removed += n
		if cerr := errors.Join(rerr, finish()); cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up (run `kubectl svctrace cleanup` to finish): %w", cerr))
		}
	}()

	s.loggerSet = map[uint8]bool{}
	for _, src := range sources {
		if src.Name() == SourceNftrace {
			continue
		}
		for _, f := range s.det.Families {
			if !f.Legacy {
				continue
			}
			set, err := ensureLogger(s.h.ProcRoot, f.Family)
			if err != nil {
				return 0, err
			}
			if set {
				s.loggerSet[f.Family] = true
				s.log.Printf("bound %s (net.netfilter.nf_log.%s read NONE); restored at exit", nfLogger(f.Family), map[uint8]string{4: "2", 6: "10"}[f.Family])
			}
		}
	}

	s.packets = make(chan pktItem, packetQueueDepth)
	s.index = map[Backend]*atomic.Pointer[rules.Index]{}
	for _, src := range sources {
		p := &pipeline{s: s, src: src, backend: BackendLegacy}
		if src.Name() == SourceNftrace {
			p.backend = BackendNft
		}
		if s.index[p.backend] == nil {
			s.index[p.backend] = &atomic.Pointer[rules.Index]{}
		}
		p.ending = &snapshotEnding{ix: s.index[p.backend]}
		p.g = trace.NewGrouper(trace.GroupOptions{Quiet: s.cfg.Quiet, Emit: p.emitPacket, Ending: p.ending.ending})
		if err := src.Open(); err != nil {
			return 0, err
		}
		s.pipes = append(s.pipes, p)
	}

	s.tr = &tracer{h: s.h, sid: s.sid, cfg: &s.cfg, det: s.det, loggerSet: s.loggerSet}
	if err := s.tr.install(ctx); err != nil {
		return 0, err
	}
	for _, p := range s.pipes {
		p.setHandles(s.tr.nftHandles())
	}
	srcNames := make([]string, 0, len(s.pipes))
	for _, p := range s.pipes {
		srcNames = append(srcNames, p.src.Name())
	}
	if err := s.out.write(&record.Ready{
		Type:    record.TypeReady,
		Node:    s.cfg.Node,
		Session: s.sid.String(),
		Version: version.Version,
		Backend: s.det.BackendName(),
		Mode:    string(s.det.ModeName()),
		Source:  strings.Join(srcNames, ","),
		Rules:   s.tr.texts(),
	}); err != nil {
		return 0, err
	}
	s.log.Printf("ready in %s: session %s, backend %s, kube-proxy mode %s, source %s, %d TRACE rule(s)",
		time.Since(s.start).Round(time.Millisecond), s.sid, s.det.BackendName(), s.det.ModeName(), strings.Join(srcNames, ","), len(s.tr.rules))
	for _, r := range s.tr.rules {
		s.log.Printf("  %s -t raw %s", r.Backend.Binary(r.Family), r)
	}

	// The live pipeline.
	s.snap = &snapshotter{h: s.h, cfg: &s.cfg, det: s.det}
	s.snapReady = make(chan struct{})
	var srcWG, bgWG, writerWG sync.WaitGroup
	srcCtx, stopSources := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSources()
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
	var matched map[Backend]uint64
	for _, p := range s.pipes {
		if p.backend == BackendNft {
			if n, err := s.tr.matchedPackets(BackendNft); err == nil {
				matched = map[Backend]uint64{BackendNft: n}
			} else {
				s.warn(fmt.Sprintf("reading TRACE rule counters: %v", err))
			}
		}
	}
	n, rerr := removeRules()
	removed += n
	time.Sleep(drainTime)
	stopSources()
	srcWG.Wait()
	bgWG.Wait()
	cerr := errors.Join(rerr, finish())
	for _, p := range s.pipes {
		p.mu.Lock()
		p.g.Flush()
		p.mu.Unlock()
	}
	close(s.packets)
	writerWG.Wait()
	if err := s.live.Close(); err != nil {
		s.log.Printf("close the route netlink socket: %v", err)
	}
	if s.ignoredPkts > 0 {
		s.log.Printf("ignored %d packet(s) (%d records) not to the traced destinations: other tracers on the node, or packets whose first records were lost", s.ignoredPkts, s.ignoredHops)
	}
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
	if cerr != nil {
		return removed, fmt.Errorf("clean up (run `kubectl svctrace cleanup` to finish): %w", cerr)
	}
	return removed, nil
}

// chooseSources picks the trace sources for the backends in use.
func (s *session) chooseSources() ([]Source, error) {
	bs := s.det.Backends()
	legacy, nft := false, false
	for _, b := range bs {
		legacy = legacy || b == BackendLegacy
		nft = nft || b == BackendNft
	}
	kmsg := func() Source {
		k := NewKmsgSource()
		if s.opts.KmsgPath != "" {
			k.Path = s.opts.KmsgPath
		}
		return k
	}
	nftrace := func() Source {
		n := &nftraceSource{}
		n.RcvBuf = s.cfg.NetlinkRcvBuf
		if s.opts.NftRcvBuf != 0 {
			n.RcvBuf = s.opts.NftRcvBuf
		}
		return n
	}
	switch s.cfg.Source {
	case SourceAuto:
		var out []Source
		if legacy {
			out = append(out, kmsg())
		}
		if nft {
			out = append(out, nftrace())
		}
		return out, nil
	case SourceKmsg, SourceKernLog:
		if !legacy {
			return nil, fmt.Errorf("kube-proxy's rules are in iptables-nft, whose TRACE output never reaches the kernel log: use --source nftrace (or auto), not %s", s.cfg.Source)
		}
		if nft {
			s.warn("kube-proxy rules are in both backends; --source " + s.cfg.Source + " shows only the legacy tables (use --source auto for both)")
		}
		if s.cfg.Source == SourceKernLog {
			return []Source{NewKernLogSource(s.cfg.KernLogPath)}, nil
		}
		return []Source{kmsg()}, nil
	case SourceNftrace:
		if !nft {
			return nil, errors.New("kube-proxy's rules are in iptables-legacy, whose TRACE output goes to the kernel log: use --source kmsg, kern.log or auto, not nftrace")
		}
		if legacy {
			s.warn("kube-proxy rules are in both backends; --source nftrace shows only the nftables tables (use --source auto for both)")
		}
		return []Source{nftrace()}, nil
	}
	return nil, fmt.Errorf("unknown source %q", s.cfg.Source)
}

func (s *session) warn(msg string) {
	s.log.Printf("warning: %s", msg)
	_ = s.out.write(&record.Warning{Type: record.TypeWarning, Node: s.cfg.Node, Message: msg})
}

// pipeline is one source feeding one grouper.
type pipeline struct {
	s       *session
	src     Source
	backend Backend
	handles atomic.Pointer[map[handleKey]bool]

	mu     sync.Mutex
	g      *trace.Grouper
	ending *snapshotEnding

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

// snapshotEnding is the Grouper's Ending backed by the backend's latest
// ruleset snapshot, so packets complete at their real end (a DROP policy, a
// MASQUERADE ending the nat table) instead of after the quiet window. The
// Grouper calls it with the pipeline's lock held: no lock of its own.
type snapshotEnding struct {
	ix   *atomic.Pointer[rules.Index]
	last *rules.Index
	fn   func(*trace.Event) trace.Ending
}

func (e *snapshotEnding) ending(ev *trace.Event) trace.Ending {
	ix := e.ix.Load()
	if ix == nil {
		// No snapshot yet (or --rules-snapshot=false): the Grouper's own
		// inference.
		return trace.EndUnknown
	}
	if ix != e.last {
		e.last, e.fn = ix, explain.Ending(ix)
	}
	return e.fn(ev)
}

func (p *pipeline) addEvent(ev *trace.Event) {
	if p.backend == BackendNft && ev.Table == "raw" && ev.Kind == trace.KindRule && p.isOwnRule(ev) {
		// The session's own TRACE rule: every traced packet starts here.
		p.starts.Add(1)
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
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, p := range s.pipes {
				p.mu.Lock()
				p.g.Tick(kernel.Monotonic())
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
		ix := s.waitIndex(ctx, it.backend)
		rec := explain.AnnotateLive(it.p, ix, func(r *record.Packet) *record.Live { return s.live.facts(r, it.p) })
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

// waitIndex returns the backend's ruleset index, waiting for the first
// snapshot (taken after ready so it does not delay tracing) unless the
// session is ending.
func (s *session) waitIndex(ctx context.Context, b Backend) *rules.Index {
	if !s.cfg.RulesSnapshot {
		return nil
	}
	select {
	case <-s.snapReady:
	case <-ctx.Done():
	case <-time.After(snapshotWaitMax):
	}
	if p := s.index[b]; p != nil {
		return p.Load()
	}
	return nil
}

func (s *session) initialSnapshot(ctx context.Context) {
	defer close(s.snapReady)
	if !s.cfg.RulesSnapshot {
		return
	}
	for b := range s.index {
		t0 := time.Now()
		ix, _, err := s.snap.take(ctx, b)
		if err != nil {
			if ctx.Err() == nil {
				s.warn(fmt.Sprintf("no rule text for %s hops: %v", b, err))
			}
			continue
		}
		s.index[b].Store(ix)
		s.log.Printf("indexed %d %s rules in %s", ix.Len(), b, time.Since(t0).Round(time.Millisecond))
	}
	// Reading a big ruleset leaves garbage behind: give it back now
	// rather than hold it for the whole session.
	debug.FreeOSMemory()
}

// watchLoop notices the TRACE rules disappearing (a full restore of the raw
// table) and kube-proxy rewriting the ruleset.
func (s *session) watchLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.WatchInterval)
	defer t.Stop()
	last := map[Backend]uint64{}
	for b := range s.index {
		if fp, err := s.fingerprint(b); err == nil {
			last[b] = fp
		}
	}
	lastSnap := map[Backend]time.Time{}
	hashes := map[Backend]uint64{}
	dirty := map[Backend]bool{}
	ticks := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ticks++
		changed := false
		for b := range s.index {
			fp, err := s.fingerprint(b)
			if err != nil {
				continue
			}
			if fp != last[b] {
				last[b] = fp
				changed = true
				dirty[b] = true
			}
			if b == BackendLegacy && ticks%fullCheckEvery == 0 {
				dirty[b] = true // same-size rewrites escape the fingerprint
			}
		}
		if changed {
			// A restore can land between the listings of two chains:
			// check again after inserting, until nothing is missing.
			reinserted := 0
			for range 3 {
				missing, err := s.tr.missing(ctx)
				if err != nil && ctx.Err() == nil {
					s.warn(fmt.Sprintf("checking the TRACE rules: %v", err))
				}
				if len(missing) == 0 || ctx.Err() != nil {
					break
				}
				if err := s.tr.reinstall(ctx, missing); err != nil {
					s.cancel(fmt.Errorf("%d TRACE rule(s) were removed by someone else and could not be inserted again: %w", len(missing), err))
					return
				}
				reinserted += len(missing)
			}
			if reinserted > 0 {
				s.warn(fmt.Sprintf("%d TRACE rule(s) were removed (a restore of the raw table?); inserted them again: packets in between were not traced", reinserted))
				for _, p := range s.pipes {
					p.setHandles(s.tr.nftHandles())
				}
			}
		}
		if !s.cfg.RulesSnapshot {
			continue
		}
		select {
		case <-s.snapReady:
		default:
			continue // the first snapshot is still being taken
		}
		for b := range s.index {
			if !dirty[b] || time.Since(lastSnap[b]) < resnapshotEvery*s.cfg.WatchInterval {
				continue
			}
			dirty[b] = false
			lastSnap[b] = time.Now()
			ix, sum, err := s.snap.take(ctx, b)
			if err != nil {
				if ctx.Err() == nil {
					s.warn(fmt.Sprintf("re-reading the %s ruleset: %v", b, err))
				}
				continue
			}
			if old, ok := hashes[b]; ok && old == sum {
				continue
			}
			if _, ok := hashes[b]; ok || changed {
				s.warn(fmt.Sprintf("the %s ruleset changed (kube-proxy resync?): re-read it; rule numbers and text of packets traced before may differ from the rules now", b))
			}
			hashes[b] = sum
			s.index[b].Store(ix)
			debug.FreeOSMemory()
		}
	}
}

func (s *session) fingerprint(b Backend) (uint64, error) {
	if b == BackendNft {
		n, err := s.h.nftables()
		if err != nil {
			return 0, err
		}
		g, err := n.GenID()
		return uint64(g), err
	}
	var sum uint64
	for _, f := range s.det.Families {
		fp, err := kernel.LegacyFingerprint(s.h.ProcRoot, f.Family)
		if err != nil {
			return 0, err
		}
		sum = sum*31 + fp
	}
	return sum, nil
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
	for _, d := range c.Dsts {
		if d.Addr() == h.Dst && d.Port() == h.DPort {
			return true
		}
	}
	for _, p := range c.NodePorts {
		if p == h.DPort {
			return true
		}
	}
	return false
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

// nftHandles returns the handles of the session's iptables-nft rules.
func (t *tracer) nftHandles() map[handleKey]bool {
	out := map[handleKey]bool{}
	for _, r := range t.rules {
		if r.Backend == BackendNft && r.Handle != 0 {
			out[handleKey{r.Family, r.Handle}] = true
		}
	}
	return out
}

// probeAddrs returns where --probe connects: each --dst, and each NodePort on
// the node's own address.
func (s *session) probeAddrs() []netip.AddrPort {
	out := append([]netip.AddrPort(nil), s.cfg.Dsts...)
	if len(s.cfg.NodePorts) > 0 {
		if ip, err := nodeAddress(); err == nil {
			for _, p := range s.cfg.NodePorts {
				out = append(out, netip.AddrPortFrom(ip, p))
			}
		} else {
			s.warn(fmt.Sprintf("cannot probe NodePorts: %v", err))
		}
	}
	return out
}
