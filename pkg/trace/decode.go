package trace

import (
	"bytes"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/intern"
)

// Result says what Decode made of a line.
type Result int

const (
	// ResultEvent: the line was a trace record; ev holds it.
	ResultEvent Result = iota
	// ResultHeader: the line was a packet header (xtables-monitor "PACKET:",
	// nft "packet:") that the decoder keeps for the trace id's next records;
	// ev is untouched.
	ResultHeader
	// ResultSkip: the line is not a trace record (other kernel messages,
	// prose, continuation lines, conntrack lines).
	ResultSkip
	// ResultMalformed: the line looked like a trace record but did not parse
	// (truncated, corrupt, unknown layout).
	ResultMalformed
)

var resultNames = [...]string{"event", "header", "skip", "malformed"}

// String returns "event", "header", "skip" or "malformed".
func (r Result) String() string {
	if r >= 0 && int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "unknown"
}

// DecodeStats counts what a Decoder saw.
type DecodeStats struct {
	Lines     uint64 // lines given to Decode (and over-long lines ReadAll skipped)
	Records   uint64 // ResultEvent
	Headers   uint64 // ResultHeader
	Skipped   uint64 // ResultSkip
	Malformed uint64 // ResultMalformed, and over-long lines
	// Lost is the number of kernel log records missing from the input,
	// counted from gaps in kmsg sequence numbers.
	Lost uint64
}

// Interning bounds: distinct table/chain/interface names, and distinct rule
// texts (nft traces carry the rule text on every record).
const (
	maxNames = 1 << 14
	maxTexts = 1 << 14
)

// hdrCacheSize is how many trace ids' last packet header a Decoder keeps
// (xtables-monitor and nft monitor print the header once per base chain).
const hdrCacheSize = 256

type hdrEntry struct {
	id    uint32
	used  bool
	fresh bool // no record took it yet: the next one "carries" it
	hdr   Header
}

// Decoder turns trace output lines into Events. A Decoder keeps state across
// lines (detected format, kmsg sequence, nft packet headers, interned
// strings), so use one Decoder per input. It is not safe for concurrent use.
//
// Strings in the Events it fills are interned: steady-state decoding of a
// legacy record allocates nothing, and the strings stay valid forever.
type Decoder struct {
	format Format // as configured
	active Format // as detected (== format unless FormatAuto)

	names intern.Table
	texts intern.Table

	haveSeq bool
	lastSeq uint64
	gap     uint64

	stats DecodeStats

	hdrs    [hdrCacheSize]hdrEntry
	scratch []byte
}

// NewDecoder returns a Decoder for inputs in format f. With FormatAuto the
// format is detected from the first recognisable line and then kept; lines
// before it are skipped.
func NewDecoder(f Format) *Decoder {
	if f < FormatAuto || f > FormatNftMonitor {
		f = FormatAuto
	}
	return &Decoder{
		format: f,
		active: f,
		names:  intern.New(maxNames),
		texts:  intern.New(maxTexts),
	}
}

// Format returns the format in use: the configured one, the detected one
// under FormatAuto, or FormatAuto while nothing was recognised yet.
func (d *Decoder) Format() Format { return d.active }

// Stats returns the counts so far.
func (d *Decoder) Stats() DecodeStats { return d.stats }

// Lost returns how many kernel log records went missing so far (kmsg
// sequence gaps, counted over every record, TRACE or not).
func (d *Decoder) Lost() uint64 { return d.stats.Lost }

// Gap returns how many kernel log records were lost just before the line
// last given to Decode (0 when none or when the format has no sequence).
func (d *Decoder) Gap() uint64 { return d.gap }

// Decode decodes one line (with or without its trailing newline) into ev.
// ev is fully overwritten on ResultEvent and must not be read otherwise.
// Decode never keeps a reference to line.
func (d *Decoder) Decode(line []byte, ev *Event) Result {
	d.stats.Lines++
	d.gap = 0
	line = trimEOL(line)
	f := d.active
	if f == FormatAuto {
		f = DetectFormat(line)
		if f == FormatAuto {
			d.stats.Skipped++
			return ResultSkip
		}
		d.active = f
	}
	var r Result
	switch f {
	case FormatXtablesMonitor:
		r = d.decodeXtmon(line, ev)
	case FormatNftMonitor:
		r = d.decodeNftmon(line, ev)
	default:
		r = d.decodeLegacy(f, line, ev)
	}
	switch r {
	case ResultEvent:
		d.stats.Records++
	case ResultHeader:
		d.stats.Headers++
	case ResultSkip:
		d.stats.Skipped++
	default:
		d.stats.Malformed++
	}
	return r
}

// skipTooLong counts a line too long to be read as malformed.
func (d *Decoder) skipTooLong() {
	d.stats.Lines++
	d.stats.Malformed++
}

// decodeLegacy strips the kernel log container, then parses the TRACE
// record. A line that does not fit the container is searched for a TRACE
// record anyway (syslog daemons and dmesg flavours vary); it then has no
// time or sequence.
func (d *Decoder) decodeLegacy(f Format, line []byte, ev *Event) Result {
	var (
		text []byte
		t    time.Duration
		seq  uint64
		ok   bool
	)
	switch f {
	case FormatKmsg:
		if len(line) > 0 && line[0] == ' ' {
			// A dictionary line (" SUBSYSTEM=..."): part of the record
			// before it, without a sequence number of its own.
			return ResultSkip
		}
		var usec uint64
		seq, usec, text, ok = splitKmsg(line)
		if ok {
			d.noteSeq(seq)
			t = time.Duration(usec) * time.Microsecond
		}
	case FormatDmesg:
		t, text, ok = splitDmesg(line)
	case FormatKernLog:
		t, text, ok = splitKernLog(line)
	}
	if ok {
		if !hasPrefix(text, "TRACE: ") {
			return ResultSkip
		}
		text = text[len("TRACE: "):]
	} else {
		k := bytes.Index(line, []byte("TRACE: "))
		if k < 0 {
			return ResultSkip
		}
		text = line[k+len("TRACE: "):]
		t, seq = 0, 0
	}
	if !d.parseLegacy(text, ev) {
		return ResultMalformed
	}
	ev.Seq = seq
	ev.Time = t
	return ResultEvent
}

// Baseline notes a kmsg record read only to learn where the kernel log
// stands, not to be decoded: a reader that starts at the log's end reads the
// records already there first. The last one's sequence number is where gap
// counting starts, so records lost before the first decoded one are counted
// too. Nothing else is counted. It reports whether line was a kmsg record.
func (d *Decoder) Baseline(line []byte) bool {
	seq, _, _, ok := splitKmsg(trimEOL(line))
	if ok {
		d.haveSeq, d.lastSeq = true, seq
	}
	return ok
}

// noteSeq records a kmsg sequence number and counts the gap before it. A
// sequence going backwards (the reader reopened /dev/kmsg, inputs were
// concatenated) restarts the count rather than reporting a loss.
func (d *Decoder) noteSeq(seq uint64) {
	if d.haveSeq && seq > d.lastSeq+1 {
		d.gap = seq - d.lastSeq - 1
		d.stats.Lost += d.gap
	}
	d.haveSeq = true
	d.lastSeq = seq
}

// splitKmsg splits a /dev/kmsg record "PRI,SEQ,USEC,FLAGS[,...];TEXT".
func splitKmsg(line []byte) (seq, usec uint64, text []byte, ok bool) {
	i := 0
	var nums [3]uint64
	for k := 0; k < 3; k++ {
		start := i
		for i < len(line) && line[i] >= '0' && line[i] <= '9' {
			i++
		}
		if i == start || i >= len(line) || line[i] != ',' {
			return 0, 0, nil, false
		}
		n, good := parseUint(line[start:i])
		if !good {
			return 0, 0, nil, false
		}
		nums[k] = n
		i++
	}
	semi := bytes.IndexByte(line[i:], ';')
	if semi < 0 {
		return 0, 0, nil, false
	}
	return nums[1], nums[2], line[i+semi+1:], true
}

// splitDmesg splits "[  12.345678] TEXT", optionally behind a "<N>" level
// prefix (dmesg -r).
func splitDmesg(line []byte) (t time.Duration, text []byte, ok bool) {
	b := line
	if len(b) > 2 && b[0] == '<' {
		k := bytes.IndexByte(b, '>')
		if k < 0 || k > 4 {
			return 0, nil, false
		}
		b = b[k+1:]
	}
	if len(b) < 3 || b[0] != '[' {
		return 0, nil, false
	}
	end := bytes.IndexByte(b, ']')
	if end < 0 {
		return 0, nil, false
	}
	t, ok = parseSeconds(trimSpace(b[1:end]))
	if !ok {
		return 0, nil, false
	}
	b = b[end+1:]
	if len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	return t, b, true
}

// splitKernLog splits a syslog line "... host kernel: [ts] TEXT" (the
// kernel timestamp is optional: journald-forwarded lines lack it).
func splitKernLog(line []byte) (t time.Duration, text []byte, ok bool) {
	k := bytes.Index(line, []byte(" kernel: "))
	if k <= 0 {
		return 0, nil, false
	}
	b := line[k+len(" kernel: "):]
	if len(b) > 0 && b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end > 0 {
			if ts, good := parseSeconds(trimSpace(b[1:end])); good {
				t = ts
				b = b[end+1:]
				if len(b) > 0 && b[0] == ' ' {
					b = b[1:]
				}
			}
		}
	}
	return t, b, true
}

func hdrSlot(id uint32) int {
	return int((id * 2654435761) >> 24 % hdrCacheSize)
}

// setHeader remembers the packet header last printed for trace id.
func (d *Decoder) setHeader(id uint32, h *Header) {
	e := &d.hdrs[hdrSlot(id)]
	e.id, e.used, e.fresh, e.hdr = id, true, true, *h
}

// fillHeader copies trace id's packet header into ev. Only the first
// record after the header line carries it (HasHeader), as the kernel sends
// the headers on the first event of each base chain traversal; the others
// inherit it.
func (d *Decoder) fillHeader(id uint32, ev *Event) {
	e := &d.hdrs[hdrSlot(id)]
	if e.used && e.id == id {
		ev.Header, ev.HasHeader = e.hdr, e.fresh
		e.fresh = false
	}
}

// header returns the packet header last printed for trace id, or nil.
func (d *Decoder) header(id uint32) *Header {
	e := &d.hdrs[hdrSlot(id)]
	if e.used && e.id == id {
		return &e.hdr
	}
	return nil
}
