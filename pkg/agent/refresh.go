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
// reads the chains it names (iptables-nft: while they still exist; the
// chain store keeps them after), then, if the ruleset changed since the
// index was read, the whole ruleset.

// rereadEvery bounds the writer's whole-ruleset re-reads, and how often it
// tries to read one chain: under constant churn a packet waits for at most
// one read.
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
	if b == backendNft {
		if fresh := s.readChains(ctx, p.First.Family, unknown); fresh != nil {
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

// readChains reads the iptables-nft chains a packet named that the index
// lacks (each at most once per rereadEvery) and returns the index built
// again with them, or nil when none was read.
func (s *session) readChains(ctx context.Context, fam uint8, unknown []tableChain) *rules.Index {
	now := time.Now()
	var want []tableChain
	for _, c := range unknown {
		if !slices.Contains(iptablesTables, c.table) || now.Sub(s.chainTried[c]) < rereadEvery {
			continue
		}
		s.chainTried[c] = now
		want = append(want, c)
	}
	if len(want) == 0 {
		return nil
	}
	read, err := s.snap.fetchChains(ctx, fam, want)
	if err != nil {
		s.log.Printf("reading chains a packet went through: %v", err)
	}
	if !read {
		return nil
	}
	ix, err := s.snap.rebuild()
	if err != nil {
		s.log.Printf("indexing chains a packet went through: %v", err)
		return nil
	}
	s.log.Printf("read %d chain(s) a packet went through that the snapshot did not have, in %s", len(want), time.Since(now).Round(time.Millisecond))
	return ix
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
