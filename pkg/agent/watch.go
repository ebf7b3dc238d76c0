//go:build linux

package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// Snapshots and the watch: the first ruleset snapshot (taken after ready),
// letting the ruleset settle after it where a NetworkPolicy plugin
// rewrites its chains, noticing TRACE rules removed by someone else and
// kube-proxy rewriting the ruleset, and re-reading it then.

// waitIndex returns the backend's ruleset index, waiting for the first
// snapshot (taken after ready so it does not delay tracing) unless the
// session is ending.
func (s *session) waitIndex(ctx context.Context, b ipBackend) *rules.Index {
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
	defer close(s.settled)
	if !s.cfg.RulesSnapshot {
		close(s.snapReady)
		return
	}
	changes := s.watchChanges(ctx)
	defer changes.stop()
	defer s.settle(ctx, changes)
	defer close(s.snapReady)
	for b := range s.index {
		t0 := time.Now()
		_, err := s.takeIndex(ctx, b)
		if err != nil {
			if ctx.Err() == nil {
				s.warn(fmt.Sprintf("no rule text for %s hops: %v", b, err))
			}
			continue
		}
		s.log.Printf("indexed %d %s rules in %s", s.index[b].Load().Len(), b, time.Since(t0).Round(time.Millisecond))
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
	last := map[ipBackend]uint64{}
	for b := range s.index {
		if fp, err := s.fingerprint(b); err == nil {
			last[b] = fp
		}
	}
	lastSnap := map[ipBackend]time.Time{}
	hashes := map[ipBackend]uint64{}
	dirty := map[ipBackend]bool{}
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
			if b == backendLegacy && ticks%fullCheckEvery == 0 {
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
			sum, err := s.takeIndex(ctx, b)
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
				if b == backendLegacy {
					// Positions, not handles, name legacy rules: one
					// traced before the rewrite may have been renumbered.
					s.warn(fmt.Sprintf("the %s ruleset changed (kube-proxy or CNI resync): re-read it; rule numbers and text of packets traced before may differ from the rules now", b))
				} else {
					// nft handles are never reused: a packet naming one
					// the index lacks makes the writer re-read (refresh.go).
					s.log.Printf("the %s ruleset changed (kube-proxy or CNI resync): re-read it", b)
				}
			}
			hashes[b] = sum
			debug.FreeOSMemory()
		}
	}
}

func (s *session) fingerprint(b ipBackend) (uint64, error) {
	if b == backendNft {
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

// Settling: the agent pods' own start makes NetworkPolicy plugins resync
// (kube-router rewrites and renames its chains on every pod phase change in
// the cluster, on every node), right when the probe would go. Where such a
// plugin's chains are in the ruleset, an agent waits, once its first
// snapshot is taken, until the ruleset has been unchanged for rulesQuietFor
// (at most rulesSettleMax), and reads it again if it changed since the
// snapshot. The quiet time counts from the plugin's word to probe, which
// comes once every agent pod was seen running, the last event the plugins
// react to (measured on the local cluster: kube-router's rewrite lands
// 15-50 ms after it); agents not waiting for the word count from their
// start. The changes are watched from the start, while the snapshot is
// taken. The probe goes after that, so its packet crosses rules the agents
// have read; a rewrite later still is read when a packet names a chain the
// index lacks (chainfetch.go). Elsewhere the probe waits only for the first
// snapshot, which the answer needs anyway.
const (
	rulesQuietFor  = 200 * time.Millisecond
	rulesSettleMax = 3 * time.Second
	rulesPoll      = 25 * time.Millisecond
)

// changeWatch polls the ruleset fingerprints from the session's first
// snapshot until it settled, and keeps when it last saw one change.
type changeWatch struct {
	start time.Time
	last  atomic.Int64 // unix nanoseconds of the last change seen, 0: none
	stop  func()
}

func (s *session) watchChanges(ctx context.Context) *changeWatch {
	w := &changeWatch{start: time.Now()}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.stop = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		prev := map[ipBackend]uint64{}
		for b := range s.index {
			if fp, err := s.fingerprint(b); err == nil {
				prev[b] = fp
			}
		}
		t := time.NewTicker(rulesPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for b := range s.index {
				if fp, err := s.fingerprint(b); err == nil && fp != prev[b] {
					prev[b] = fp
					w.last.Store(time.Now().UnixNano())
				}
			}
		}
	}()
	return w
}

// lastChange is when the ruleset last changed, or from if later.
func (w *changeWatch) lastChange(from time.Time) time.Time {
	if n := w.last.Load(); n != 0 {
		if t := time.Unix(0, n); t.After(from) {
			return t
		}
	}
	return from
}

// settle runs after the first snapshot (initialSnapshot).
func (s *session) settle(ctx context.Context, w *changeWatch) {
	if !s.policyPlugin() {
		return
	}
	from, since := w.start, "its start"
	if s.cfg.ProbeWhenTold {
		since = "the word to probe"
		select {
		case <-s.probeTold:
			from = time.Unix(0, s.toldAt.Load())
		case <-time.After(probeWordWait):
			from = time.Now() // the probe goes without the word
		case <-ctx.Done():
			return
		}
	}
	deadline := from.Add(rulesSettleMax)
	quiet := false
	for ctx.Err() == nil {
		left := rulesQuietFor - time.Since(w.lastChange(from))
		if left <= 0 {
			quiet = true
			break
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(min(left, rulesPoll)):
		case <-ctx.Done():
		}
	}
	reread := false
	for b := range s.index {
		if gen, err := s.fingerprint(b); err == nil && gen != s.indexGen[b].Load() {
			reread = true
			if _, err := s.takeIndex(ctx, b); err != nil && ctx.Err() == nil {
				s.log.Printf("re-reading the %s ruleset once it settled: %v", b, err)
			}
		}
	}
	switch {
	case ctx.Err() != nil:
	case !quiet:
		s.log.Printf("the ruleset still changes after %s (a NetworkPolicy plugin's chains are in it)", rulesSettleMax)
	default:
		s.log.Printf("the ruleset settled %s after %s (a NetworkPolicy plugin's chains are in it; re-read: %v)", time.Since(from).Round(time.Millisecond), since, reread)
	}
}

// policyPlugin reports whether a NetworkPolicy plugin's entry chain is in
// a traced backend's filter table.
func (s *session) policyPlugin() bool {
	for _, p := range s.index {
		ix := p.Load()
		if ix == nil {
			continue
		}
		for _, f := range s.det.Families {
			for _, e := range rules.FirewallEntryChains {
				if _, ok := ix.Rule(f.Family, "filter", e.Chain, 1); ok {
					return true
				}
			}
		}
	}
	return false
}
