// Command regexp-reader is the yardstick for `kubectl svctrace analyze`: the
// plain way to read legacy TRACE lines (kernel log, dmesg, kern.log) that a
// log tailer takes. It matches each line with one regexp, groups the
// records by packet (addresses, ports, protocol and IP ID, following NAT),
// writes a packet out as one JSON object with its hops once it has had no
// record for a while, and knows nothing about rules: it only parses and
// groups.
//
//	go run ./hack/regexp-reader FILE... > packets.ndjson
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
)

// One expression per record, as a log tailer's pattern: the rule position,
// the interfaces, the addresses, the IP ID, the protocol and ports.
var reTrace = regexp.MustCompile(`TRACE: ([^:\s]+):(\S+):(rule|return|policy):(\d+) IN=(\S*) OUT=(\S*) .*?SRC=(\S+) DST=(\S+) .*? ID=(\d+) .*?PROTO=(\S+)(?: SPT=(\d+) DPT=(\d+))?`)

// quiet is how many lines a packet may go without a record before it is
// written out (the tailer's idle flush), which bounds memory.
const quiet = 512

// Hop is one TRACE record of a packet.
type Hop struct {
	Table string `json:"table"`
	Chain string `json:"chain"`
	Kind  string `json:"kind"`
	Rule  int    `json:"rule"`
	In    string `json:"in,omitempty"`
	Out   string `json:"out,omitempty"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
}

// Packet is the records of one packet, in order.
type Packet struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	SPort int    `json:"sport,omitempty"`
	DPort int    `json:"dport,omitempty"`
	ID    int    `json:"id"`
	Hops  []Hop  `json:"hops"`
}

type key struct {
	src, dst, proto string
	sport, dport    int
	id              int
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "regexp-reader:", err)
		os.Exit(1)
	}
}

// run reads every file (- is stdin) and writes the packets to w.
func run(files []string, w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	var order []*group // packets in flight, oldest first
	groups := map[key]*group{}
	line := 0
	flush := func(all bool) error {
		n := 0
		for ; n < len(order) && (all || order[n].last < line-quiet); n++ {
			g := order[n]
			for _, k := range g.keys {
				delete(groups, k)
			}
			if err := enc.Encode(&g.p); err != nil {
				return err
			}
		}
		order = order[n:]
		return nil
	}
	for _, name := range files {
		var r io.Reader = os.Stdin
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line++
			m := reTrace.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			rule, _ := strconv.Atoi(m[4])
			h := Hop{Table: m[1], Chain: m[2], Kind: m[3], Rule: rule, In: m[5], Out: m[6], Src: m[7], Dst: m[8]}
			k := key{src: m[7], dst: m[8], proto: m[10]}
			k.id, _ = strconv.Atoi(m[9])
			k.sport, _ = strconv.Atoi(m[11])
			k.dport, _ = strconv.Atoi(m[12])
			g := groups[k]
			if g == nil {
				// NAT rewrites the addresses mid-path: a record whose
				// other side and IP ID match continues that packet.
				if g = findRewritten(order, k); g == nil {
					g = &group{p: Packet{Proto: k.proto, Src: k.src, Dst: k.dst, SPort: k.sport, DPort: k.dport, ID: k.id}}
					order = append(order, g)
				}
				g.keys = append(g.keys, k)
				groups[k] = g
			}
			g.p.Hops = append(g.p.Hops, h)
			g.last = line
			if err := flush(false); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return err
		}
	}
	if err := flush(true); err != nil {
		return err
	}
	return bw.Flush()
}

// group is a packet in flight and the keys its records came under.
type group struct {
	p    Packet
	keys []key
	last int // line of its last record
}

// findRewritten finds, among the last packets, the one this record continues
// after DNAT or SNAT changed an address: same protocol, IP ID and one side.
func findRewritten(order []*group, k key) *group {
	for i := len(order) - 1; i >= 0 && i >= len(order)-8; i-- {
		p := &order[i].p
		if p.Proto == k.proto && p.ID == k.id && (p.Src == k.src && p.SPort == k.sport || p.Dst == k.dst && p.DPort == k.dport) {
			return order[i]
		}
	}
	return nil
}
