//go:build linux

package agent

import (
	"context"
	"slices"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// Reading rules for a packet the index does not know. A snapshot goes
// stale faster than the watch re-reads it: kube-router syncs its
// NetworkPolicy chains on every pod event in the cluster (the agents' own
// pods included: eight syncs in a two-node session on the local cluster),
// each sync renaming them, and kube-proxy's resyncs give its nft rules new
// handles. Before writing a packet whose hops the index lacks, the writer
// waits for the chains its events asked for (iptables-nft, read while they
// still exist: chainfetch.go) and builds the index again with them; if
// hops are still unknown and the ruleset changed since the index was read,
// it re-reads the whole ruleset.

// rereadEvery bounds the writer's whole-ruleset re-reads, and how often a
// chain is asked for: under constant churn a packet waits for at most one
// read.
const rereadEvery = time.Second

// takeIndex reads backend b's ruleset into the session's index, with the
// ruleset fingerprint read before it (a change during the read shows as a
// changed fingerprint next time). It returns the hash of the kept text.
func (s *session) takeIndex(ctx context.Context, b ipBackend) (uint64, error) {
	gen, genErr := s.fingerprint(b)
	ix, sum, err := s.snap.take(ctx, b)
	if err != nil {
		return 0, err
	}
	s.index[b].Store(ix)
	if genErr == nil {
		s.indexGen[b].Store(gen)
	}
	return sum, nil
}

// indexFor returns the index to annotate p with: the current one, or one
// read again when the current one lacks a rule p went through.
func (s *session) indexFor(ctx context.Context, b ipBackend, p *trace.Packet) *rules.Index {
	ix := s.waitIndex(ctx, b)
	if ix == nil || ctx.Err() != nil {
		return ix
	}
	unknown := unknownChains(ix, p)
	if len(unknown) == 0 {
		return ix
	}
	if b == backendNft && s.fetcher != nil && s.fetcher.wait(ctx) {
		// The chains the packet's events asked for are read (chainfetch.go);
		// nothing new read, nothing to build.
		if fresh, err := s.snap.rebuild(); err == nil && fresh != nil {
			s.index[b].Store(fresh)
			ix = fresh
			if len(unknownChains(ix, p)) == 0 {
				return ix
			}
		}
	}
	if time.Since(s.refreshed[b]) < rereadEvery {
		return ix
	}
	if gen, err := s.fingerprint(b); err != nil || gen == s.indexGen[b].Load() {
		return ix // nothing newer to read: the rules are gone, or never were
	}
	s.refreshed[b] = time.Now()
	t0 := time.Now()
	if _, err := s.takeIndex(ctx, b); err != nil {
		s.log.Printf("re-reading the %s ruleset for a packet through rules it did not have: %v", b, err)
		return ix
	}
	s.log.Printf("re-read the %s ruleset in %s: a packet went through rules the snapshot did not have", b, time.Since(t0).Round(time.Millisecond))
	return s.index[b].Load()
}

// unknownChains lists the chains of p's rule hops that ix lacks the rule
// of (by handle, else by position), in order, each once.
func unknownChains(ix *rules.Index, p *trace.Packet) []tableChain {
	var out []tableChain
	for i := range p.Hops {
		h := &p.Hops[i]
		if h.Kind != trace.KindRule || (h.Handle == 0 && h.Rule == 0) {
			continue
		}
		if _, ok := ix.Hop(p.First.Family, h.Table, h.Chain, h.Rule, h.Handle); ok {
			continue
		}
		c := tableChain{h.Table, h.Chain}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}
