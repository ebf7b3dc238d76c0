// Package tracetest is what the trace and explain tests and benchmarks
// share: input made from real captures (many distinct packets out of one
// capture) and the per-thread CPU time their measures report.
package tracetest

import (
	"strconv"
	"strings"
)

// KmsgCopy returns legacy kmsg TRACE record rec ("PRI,SEQ,USEC,FLAGS;TRACE:
// ...") as copy c of its capture, with kmsg sequence number seq: its
// timestamp 200 ms later per copy (held packets go quiet between copies),
// its IPv4 ID and TCP sequence number shifted, so every copy forms new
// packets. A record without ';' is returned as it is.
func KmsgCopy(rec string, c int, seq uint64) string {
	semi := strings.IndexByte(rec, ';')
	if semi < 0 {
		return rec
	}
	pre := strings.Split(rec[:semi], ",")
	if len(pre) < 3 {
		return rec
	}
	usec, _ := strconv.ParseUint(pre[2], 10, 64)
	body := bump(rec[semi+1:], " ID=", uint64(c)*7, 65536)
	body = bump(body, " SEQ=", uint64(c)*100003, 1<<32)
	return pre[0] + "," + strconv.FormatUint(seq, 10) + "," + strconv.FormatUint(usec+uint64(c)*200000, 10) + ",-;" + body
}

// bump adds delta (mod m) to the decimal value after key.
func bump(s, key string, delta, m uint64) string {
	k := strings.Index(s, key)
	if k < 0 {
		return s
	}
	v := k + len(key)
	e := v
	for e < len(s) && s[e] >= '0' && s[e] <= '9' {
		e++
	}
	n, _ := strconv.ParseUint(s[v:e], 10, 64)
	return s[:v] + strconv.FormatUint((n+delta)%m, 10) + s[e:]
}
