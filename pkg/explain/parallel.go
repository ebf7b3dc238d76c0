package explain

import (
	"runtime"
	"slices"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// BatchSize is how many packets travel together between the goroutines
// of a Parallel reading a file: enough to make the hand-over cheap, few
// enough to keep memory small. A live input wants 1: no packet waits for
// others to fill its batch.
const BatchSize = 128

// Parallel annotates packets on every core while the caller goes on
// decoding and grouping, and hands the records back in the order the
// packets came. Memory stays bounded: a few batches are in flight at most,
// and Add waits when they all are.
//
// Add and Close are for one goroutine (a Grouper's Emit); Encode runs on
// the workers; Deliver runs on a goroutine of its own, one batch at a time.
type Parallel struct {
	ix *rules.Index
	// encode, when set, appends a record's output (say, its NDJSON line)
	// to dst, on a worker.
	encode func(dst []byte, rec *record.Packet) []byte
	// deliver receives the records of a batch in order, and what encode
	// wrote for them. Neither may be kept after it returns (their memory
	// goes to later batches). Its first error stops the deliveries and is
	// returned by Close.
	deliver func(recs []record.Packet, encoded []byte) error

	size  int
	cur   *batch
	free  chan *batch
	work  chan *batch
	queue chan *batch
	done  chan error
}

// batch is packets copied out of the Grouper (their hops in one arena),
// then their records (their memory in mem).
type batch struct {
	pkts  []trace.Packet
	spans [][2]int // each packet's hops in arena
	arena []trace.Hop
	recs  []record.Packet
	mem   *recordMem
	out   []byte
	ready chan struct{}
}

// NewParallel starts the workers, for batches of size packets. encode may
// be nil.
func NewParallel(ix *rules.Index, size int, encode func(dst []byte, rec *record.Packet) []byte, deliver func(recs []record.Packet, encoded []byte) error) *Parallel {
	workers := runtime.GOMAXPROCS(0)
	n := 2*workers + 2 // batches: each worker's, the one filling, the one delivered, spare
	p := &Parallel{
		ix: ix, encode: encode, deliver: deliver, size: max(1, size),
		free:  make(chan *batch, n),
		work:  make(chan *batch, n),
		queue: make(chan *batch, n),
		done:  make(chan error, 1),
	}
	for range n {
		p.free <- &batch{mem: newRecordMem(), ready: make(chan struct{}, 1)}
	}
	for range workers {
		go p.worker()
	}
	go p.deliverLoop()
	p.cur = <-p.free
	return p
}

// Add copies p (the Grouper reuses it) for annotation.
func (p *Parallel) Add(pk *trace.Packet) {
	b := p.cur
	start := len(b.arena)
	b.arena = append(b.arena, pk.Hops...)
	b.pkts = append(b.pkts, *pk)
	b.spans = append(b.spans, [2]int{start, len(b.arena)})
	if len(b.pkts) == p.size {
		p.submit()
		p.cur = <-p.free
	}
}

func (p *Parallel) submit() {
	b := p.cur
	for i := range b.pkts {
		s := b.spans[i]
		b.pkts[i].Hops = b.arena[s[0]:s[1]:s[1]]
	}
	p.queue <- b
	p.work <- b
}

// Close annotates and delivers what is left, stops the goroutines and
// returns deliver's first error.
func (p *Parallel) Close() error {
	if len(p.cur.pkts) > 0 {
		p.submit()
	}
	close(p.work)
	close(p.queue)
	return <-p.done
}

func (p *Parallel) worker() {
	for b := range p.work {
		b.out = b.out[:0]
		b.recs = slices.Grow(b.recs, len(b.pkts))[:len(b.pkts)]
		for i := range b.pkts {
			annotate(&b.recs[i], &b.pkts[i], p.ix, nil, b.mem)
			if p.encode != nil {
				b.out = p.encode(b.out, &b.recs[i])
			}
		}
		b.ready <- struct{}{}
	}
}

func (p *Parallel) deliverLoop() {
	var err error
	for b := range p.queue {
		<-b.ready
		if err == nil {
			err = p.deliver(b.recs, b.out)
		}
		clear(b.recs) // let the records go
		b.mem.reset()
		b.pkts, b.spans, b.arena, b.recs = b.pkts[:0], b.spans[:0], b.arena[:0], b.recs[:0]
		p.free <- b
	}
	p.done <- err
}
