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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
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

// options are seams for tests; the zero options is the real node.
type options struct {
	Host      *host  // nil: newHost()
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
	drainQuiet       = 30 * time.Millisecond
	defaultWatch     = 3 * time.Second
	resnapshotEvery  = 3  // at most one re-read per backend per N watch intervals
	fullCheckEvery   = 10 // legacy: full re-read every N watch intervals
	snapshotWaitMax  = 60 * time.Second
	probeTimeout     = 2 * time.Second
	cleanupTimeout   = 30 * time.Second
	packetQueueDepth = 4096
	// behindMax bounds how long Ticks wait for a reader that is behind
	// (drainer): past it the quiet window runs anyway, so a record the
	// kernel never completes (a lost policy event) holds nothing for good.
	behindMax = time.Second
	// stallQuiet is the quiet window of a packet whose last record leaves
	// it inside a chain (trace.GroupOptions.StallQuiet): only a stalled
	// CPU holds it there, and on a loaded node (a vCPU descheduled by its
	// host) that outlasts the 100 ms window.
	stallQuiet = time.Second
)

// Run traces until cfg.Duration, cfg.MaxPackets, SIGINT/SIGTERM, stdin EOF
// (cfg.StdinWatch) or an error, then removes its rules and writes a bye
// record. It returns nil on every normal end.
func Run(ctx context.Context, cfg Config, streams IO) error {
	return runWith(ctx, cfg, streams, options{})
}

// runWith is Run with test seams.
func runWith(ctx context.Context, cfg Config, streams IO, opts options) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	h := opts.Host
	if h == nil {
		h = newHost()
		defer h.Close()
	}
	if streams.Err == nil {
		streams.Err = io.Discard
	}
	out := newOutput(streams.Out)
	logTo := streams.Err
	if cfg.LogStdout {
		logTo = out.lines()
	}
	s := &session{
		cfg:   cfg,
		io:    streams,
		h:     h,
		opts:  opts,
		out:   out,
		log:   log.New(logTo, "svctrace agent: ", 0),
		start: time.Now(),
		live:  newLiveExplainer(h.ProcRoot),

		probeTold: make(chan struct{}),
	}
	s.egress = &egress{now: time.Now, lookup: func(q kernel.RouteQuery) (kernel.Route, error) {
		r, err := s.live.conn()
		if err != nil {
			return kernel.Route{}, err
		}
		return r.Route(q)
	}}
	if s.cfg.WatchInterval <= 0 {
		s.cfg.WatchInterval = defaultWatch
	}
	return s.run(ctx)
}

type session struct {
	cfg  Config
	io   IO
	h    *host
	opts options
	out  *output
	log  *log.Logger

	start    time.Time
	bootWall time.Time // wall time of monotonic zero
	sid      sessionID
	det      detection
	tr       *tracer
	pipes    []*pipeline
	snap     *snapshotter

	loggerSet map[uint8]bool
	index     map[ipBackend]*atomic.Pointer[rules.Index]
	// indexGen is each index's ruleset fingerprint, read before the
	// ruleset was (refresh.go).
	indexGen map[ipBackend]*atomic.Uint64
	// refreshed is when the packet writer last re-read a ruleset for a
	// packet the index did not know (its goroutine only).
	refreshed map[ipBackend]time.Time
	// nftForeign: the node has nft tables the snapshots do not read
	// (snapshotter.foreign).
	nftForeign atomic.Bool
	// fetcher reads the iptables-nft chains trace events name that the
	// index lacks (nil without an nft source or snapshots).
	fetcher *chainFetcher
	live    *liveExplainer
	// own keeps only this node's kernel log records where the log is
	// shared with other nodes' network namespaces (nil: keep all).
	own *ownership
	// egress says where packets left the node.
	egress *egress
	// fromNS is the network namespace --probe-from-ip connects from.
	fromNS    *kernel.Netns
	snapReady chan struct{}
	// settled is closed once the ruleset settled after the first
	// snapshot (watch.go: settle), or at once without a NetworkPolicy plugin.
	settled chan struct{}
	// probeTold is closed when the plugin says to probe (ProbeWhenTold),
	// at toldAt (unix nanoseconds).
	probeTold chan struct{}
	toldAt    atomic.Int64
	packets   chan pktItem
	emitted   atomic.Int64
	cancel    context.CancelCauseFunc

	// Written by writePackets only; read after it ended.
	ignoredPkts, ignoredHops int
	// What teardown already did.
	rulesRemoved, finished bool
}

type pktItem struct {
	p       *trace.Packet
	backend ipBackend
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
			s.readStdin(s.io.In)
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
	if s.own != nil {
		bye.ForeignRecords = s.own.foreign.Load()
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
	sources, err := s.prepare(ctx)
	defer s.fromNS.Close()
	if err != nil {
		return 0, err
	}
	// Cleanup runs on every way out from here on (teardown.go).
	defer func() {
		n, cerr := s.teardown()
		removed += n
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("clean up (run `kubectl svctrace cleanup` to finish): %w", cerr))
		}
	}()
	if err := s.begin(ctx, sources); err != nil {
		return 0, err
	}
	return s.traceLive(ctx)
}

func (s *session) warn(msg string) {
	s.log.Printf("warning: %s", msg)
	_ = s.out.write(&record.Warning{Type: record.TypeWarning, Node: s.cfg.Node, Message: msg})
}

// probeAddrs returns where --probe connects: the --probe-to addresses, else
// each --dst and each NodePort on the node's own address.
func (s *session) probeAddrs() []netip.AddrPort {
	if len(s.cfg.ProbeTo) > 0 {
		return s.cfg.ProbeTo
	}
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
