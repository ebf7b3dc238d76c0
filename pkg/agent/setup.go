//go:build linux

package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

// Session setup: what the session finds out before it changes anything on
// the node (prepare), then the changes and the ready record (begin).

// prepare makes the session id, finds the --probe-from-ip namespace,
// detects the backends and mode, picks the sources and sweeps the rules of
// dead sessions. Nothing of this session is on the node yet.
func (s *session) prepare(ctx context.Context) (sources []source, err error) {
	var deadline time.Time
	if s.cfg.Duration > 0 {
		deadline = s.start.Add(s.cfg.Duration)
	}
	if s.sid, err = newSessionID(s.h.proc(), deadline); err != nil {
		return nil, err
	}
	if s.cfg.ProbeFrom.IsValid() {
		// Found before any rule is added: a pod that is not on this
		// node fails the session while it has changed nothing.
		if s.fromNS, err = kernel.FindNetnsByAddr(s.h.ProcRoot, s.cfg.ProbeFrom); err != nil {
			return nil, fmt.Errorf("--probe-from-ip: %w", err)
		}
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
	s.det, err = detect(ctx, s.h, want, optional)
	if err != nil {
		return nil, err
	}
	for _, w := range s.det.Warnings {
		s.warn(w)
	}
	sources, err = s.chooseSources()
	if err != nil {
		return nil, err
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

	return sources, nil
}

// begin binds the kernel loggers legacy TRACE needs, opens the sources
// (before the rules: the first packets are not missed), inserts the TRACE
// rules and writes the ready record. Whatever it did is undone by
// teardown.
func (s *session) begin(ctx context.Context, sources []source) error {
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
				return err
			}
			if set {
				s.loggerSet[f.Family] = true
				s.log.Printf("bound %s (net.netfilter.nf_log.%s read NONE); restored at exit", nfLogger(f.Family), map[uint8]string{4: "2", 6: "10"}[f.Family])
			}
		}
	}

	if sharedKernelLog(s.h.ProcRoot) {
		s.own = newOwnership("/sys")
		s.log.Printf("this network namespace is not the machine's first: the kernel log may carry other nodes' records, keeping only this node's (its bridge ports, MACs and addresses)")
	}
	s.packets = make(chan pktItem, packetQueueDepth)
	s.index = map[ipBackend]*atomic.Pointer[rules.Index]{}
	s.indexGen = map[ipBackend]*atomic.Uint64{}
	s.refreshed = map[ipBackend]time.Time{}
	for _, src := range sources {
		p := &pipeline{s: s, src: src, backend: backendLegacy, own: s.own}
		if src.Name() == SourceNftrace {
			// Trace events reach only their own namespace's listeners.
			p.backend, p.own = backendNft, nil
		}
		if s.index[p.backend] == nil {
			s.index[p.backend] = &atomic.Pointer[rules.Index]{}
			s.indexGen[p.backend] = &atomic.Uint64{}
		}
		p.ending = &snapshotEnding{ix: s.index[p.backend], foreign: &s.nftForeign, pending: explain.PendingEnding(s.det.ModeName() == modeNftables)}
		p.g = trace.NewGrouper(trace.GroupOptions{Quiet: s.cfg.Quiet, StallQuiet: stallQuiet, Clock: kernel.Monotonic, ReadTimes: src.Name() == SourceNftrace, Emit: p.emitPacket, Ending: p.ending.ending, HookTables: p.ending.hookTables})
		if err := src.Open(); err != nil {
			return err
		}
		s.pipes = append(s.pipes, p)
	}

	s.tr = &tracer{h: s.h, sid: s.sid, cfg: &s.cfg, det: s.det, loggerSet: s.loggerSet}
	if err := s.tr.install(ctx); err != nil {
		return err
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
		return err
	}
	s.log.Printf("ready in %s: session %s, backend %s, kube-proxy mode %s, source %s, %d TRACE rule(s)",
		time.Since(s.start).Round(time.Millisecond), s.sid, s.det.BackendName(), s.det.ModeName(), strings.Join(srcNames, ","), len(s.tr.rules))
	for _, r := range s.tr.rules {
		s.log.Printf("  %s -t raw %s", r.Backend.Binary(r.Family), r)
	}

	return nil
}

// chooseSources picks the trace sources for the backends in use.
func (s *session) chooseSources() ([]source, error) {
	bs := s.det.Backends()
	legacy, nft := false, false
	for _, b := range bs {
		legacy = legacy || b == backendLegacy
		nft = nft || b == backendNft
	}
	kmsg := func() source {
		k := newKmsgSource()
		if s.opts.KmsgPath != "" {
			k.Path = s.opts.KmsgPath
		}
		return k
	}
	nftrace := func() source {
		n := &nftraceSource{}
		n.BaseChain = func(family uint8, table, chain string) (bool, bool) {
			if family == 0 {
				// An event without the packet's header: kube-proxy's
				// and iptables' ip and ip6 tables have the same chains.
				family = rules.FamilyIPv4
			}
			var ix *rules.Index
			if p := s.index[backendNft]; p != nil {
				ix = p.Load()
			}
			return ix.BaseChain(family, table, chain)
		}
		n.RcvBuf = s.cfg.NetlinkRcvBuf
		if s.opts.NftRcvBuf != 0 {
			n.RcvBuf = s.opts.NftRcvBuf
		}
		return n
	}
	switch s.cfg.Source {
	case SourceAuto:
		var out []source
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
			return []source{newKernLogSource(s.cfg.KernLogPath)}, nil
		}
		return []source{kmsg()}, nil
	case SourceNftrace:
		if !nft {
			return nil, errors.New("kube-proxy's rules are in iptables-legacy, whose TRACE output goes to the kernel log: use --source kmsg, kern.log or auto, not nftrace")
		}
		if legacy {
			s.warn("kube-proxy rules are in both backends; --source nftrace shows only the nftables tables (use --source auto for both)")
		}
		return []source{nftrace()}, nil
	}
	return nil, fmt.Errorf("unknown source %q", s.cfg.Source)
}
