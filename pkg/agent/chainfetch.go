//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// Reading the iptables-nft chains trace events name that the index lacks,
// as the events arrive: a CNI chain kube-router renamed at a sync is gone
// at its next one, often before the packet is complete, and always before
// a whole-ruleset re-read would finish. A table other than nat is read
// whole (two commands, the chains and their handles as of that moment);
// nat, where kube-proxy's iptables mode keeps a chain per Service and
// endpoint, chain by chain. What is read goes to the chain store
// (chainstore.go); the writer waits for the reads a packet asked for, then
// builds the index again (refresh.go).

// chainFetchWait bounds how long the writer waits for the chain reads a
// packet's events asked for.
const chainFetchWait = 500 * time.Millisecond

type chainFetcher struct {
	s   *session
	req chan chainRequest

	mu    sync.Mutex
	asked map[storeKey]map[string]time.Time // when each chain was last asked for
	read  map[storeKey]time.Time            // when each table was last read whole

	requested, done atomic.Int64
	wg              sync.WaitGroup // table reads under way
}

type chainRequest struct {
	fam   uint8
	table string
	chain string
	at    time.Time
}

func newChainFetcher(s *session) *chainFetcher {
	return &chainFetcher{s: s, req: make(chan chainRequest, 256), asked: map[storeKey]map[string]time.Time{}, read: map[storeKey]time.Time{}}
}

// note is called for every nft trace event (the source's goroutine): a
// rule hop in a chain the index does not have the rule of asks for the
// chain, at most once per rereadEvery.
//
// Before the first snapshot (ix nil) only tables other than nat are asked
// for: they are read whole, in one go.
func (f *chainFetcher) note(ix *rules.Index, ev *trace.Event) {
	fam := ev.Header.Family
	if ev.Kind != trace.KindRule || ev.Handle == 0 || (fam != 4 && fam != 6) || !slices.Contains(iptablesTables, ev.Table) {
		return
	}
	if ix == nil && ev.Table == "nat" {
		return
	}
	if ix != nil {
		if _, ok := ix.Hop(fam, ev.Table, ev.Chain, 0, ev.Handle); ok {
			return
		}
	}
	now := time.Now()
	k := storeKey{fam, ev.Table}
	f.mu.Lock()
	m := f.asked[k]
	if m == nil {
		m = map[string]time.Time{}
		f.asked[k] = m
	}
	if now.Sub(m[ev.Chain]) < rereadEvery {
		f.mu.Unlock()
		return
	}
	m[ev.Chain] = now
	f.mu.Unlock()
	select {
	case f.req <- chainRequest{fam: fam, table: ev.Table, chain: strings.Clone(ev.Chain), at: now}:
		f.requested.Add(1)
	default: // the fetcher is behind: the writer's re-read is the fallback
	}
}

// run reads what was asked for until ctx is done.
func (f *chainFetcher) run(ctx context.Context) {
	defer f.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-f.req:
			if r.table == "nat" {
				f.fetch(ctx, r)
				f.done.Add(1)
				continue
			}
			// Whole tables at once: the filter table, where CNIs keep
			// their chains, is not held up by the raw table's read.
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.fetch(ctx, r)
				f.done.Add(1)
			}()
		}
	}
}

func (f *chainFetcher) fetch(ctx context.Context, r chainRequest) {
	snap := f.s.snap
	k := storeKey{r.fam, r.table}
	if r.table == "nat" {
		if _, err := snap.fetchChains(ctx, r.fam, []tableChain{{r.table, r.chain}}); err != nil && ctx.Err() == nil {
			f.s.log.Printf("reading chain %s %s a packet went through: %v", r.table, r.chain, err)
		}
		return
	}
	f.mu.Lock()
	fresh := f.read[k].After(r.at)
	f.mu.Unlock()
	if fresh {
		return // read whole since the event
	}
	t0 := time.Now()
	n, err := snap.fetchTable(ctx, r.fam, r.table)
	if err != nil {
		if ctx.Err() == nil {
			f.s.log.Printf("reading table %s for a chain a packet went through (%s): %v", r.table, r.chain, err)
		}
		return
	}
	f.mu.Lock()
	f.read[k] = t0
	f.mu.Unlock()
	f.s.log.Printf("read table %s (%d chains) in %s: a packet went through chain %s, which the snapshot did not have", r.table, n, time.Since(t0).Round(time.Millisecond), r.chain)
}

// wait waits until the reads asked for so far are done (at most
// chainFetchWait); false if they are not.
func (f *chainFetcher) wait(ctx context.Context) bool {
	want := f.requested.Load()
	deadline := time.Now().Add(chainFetchWait)
	for f.done.Load() < want {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// fetchTable reads one iptables-nft table whole into the chain store and
// returns how many chains it kept.
func (s *snapshotter) fetchTable(ctx context.Context, fam uint8, table string) (int, error) {
	chains, err := s.readTable(ctx, fam, table)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range chains {
		s.chains.keep(fam, table, c)
	}
	return len(chains), nil
}

// readTable reads one iptables-nft table whole: the chains as iptables -S
// prints them, their handles from one `nft -a list table`. A chain in only
// one of the two (a rewrite between them) is left out.
func (s *snapshotter) readTable(ctx context.Context, fam uint8, table string) ([]*chainText, error) {
	out, err := s.h.run(ctx, backendNft.Binary(fam), "-w", "-t", table, "-S")
	if err != nil {
		return nil, fmt.Errorf("snapshot table %s: %w", table, err)
	}
	chains := map[string]*chainText{}
	var order []string
	chainOf := func(name string) *chainText {
		c := chains[name]
		if c == nil {
			c = &chainText{name: name, policy: "-"}
			chains[name] = c
			order = append(order, name)
		}
		return c
	}
	forEachLine(out, func(line string) {
		switch {
		case strings.HasPrefix(line, "-P "):
			f := strings.Fields(line)
			if len(f) == 3 {
				chainOf(f[1]).policy = f[2]
			}
		case strings.HasPrefix(line, "-N "):
			chainOf(strings.TrimSpace(line[3:]))
		case strings.HasPrefix(line, "-A "):
			c := chainOf(firstField(line[3:]))
			c.lines = append(c.lines, line)
		}
	})
	nft, err := s.h.run(ctx, "nft", "-a", "list", "table", nftFamily(fam), table)
	if err != nil {
		return nil, fmt.Errorf("snapshot handles of table %s: %w", table, err)
	}
	blocks := splitChainBlocks(nft)
	kept := make([]*chainText, 0, len(order))
	for _, name := range order {
		if b, ok := blocks[name]; ok {
			c := chains[name]
			c.block = b
			kept = append(kept, c)
		}
	}
	return kept, nil
}

// splitChainBlocks cuts `nft -a list table` output into its chain blocks.
func splitChainBlocks(out []byte) map[string][]byte {
	blocks := map[string][]byte{}
	var cur string
	var buf bytes.Buffer
	forEachLine(out, func(line string) {
		if name, ok := nftChainStart(strings.TrimSpace(line)); ok {
			cur = name
			buf.Reset()
		}
		if cur == "" {
			return
		}
		buf.WriteString(line)
		buf.WriteByte('\n')
		if line == "\t}" {
			blocks[cur] = bytes.Clone(buf.Bytes())
			cur = ""
		}
	})
	return blocks
}
