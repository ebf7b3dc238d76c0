package render

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// JSON writes every record as one JSON object per line (NDJSON).
type JSON struct {
	enc *json.Encoder
}

// NewJSON returns a renderer writing NDJSON to w.
func NewJSON(w io.Writer) *JSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSON{enc: enc}
}

// Packet writes a packet record.
func (j *JSON) Packet(p *record.Packet) error { return j.enc.Encode(p) }

// AppendPacket appends p's NDJSON line, as Packet writes it, to dst. It is
// safe for concurrent use.
func AppendPacket(dst []byte, p *record.Packet) []byte {
	b := bytes.NewBuffer(dst)
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		// A record is strings and numbers: it always encodes.
		panic("render: encode a packet record: " + err.Error())
	}
	return b.Bytes()
}

// Lost writes a lost record.
func (j *JSON) Lost(l *record.Lost) error { return j.enc.Encode(l) }

// Warning writes a warning record.
func (j *JSON) Warning(w *record.Warning) error { return j.enc.Encode(w) }

// Summary writes a session summary record.
func (j *JSON) Summary(s *record.Summary) error { return j.enc.Encode(s) }
