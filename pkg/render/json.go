package render

import (
	"encoding/json"
	"io"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// JSON writes every record as one JSON object per line (NDJSON).
type JSON struct {
	w   io.Writer
	enc *json.Encoder
	buf []byte
}

// NewJSON returns a renderer writing NDJSON to w.
func NewJSON(w io.Writer) *JSON {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &JSON{w: w, enc: enc}
}

// Packet writes a packet record (see AppendPacket).
func (j *JSON) Packet(p *record.Packet) error {
	j.buf = AppendPacket(j.buf[:0], p)
	_, err := j.w.Write(j.buf)
	return err
}

// Lost writes a lost record.
func (j *JSON) Lost(l *record.Lost) error { return j.enc.Encode(l) }

// Warning writes a warning record.
func (j *JSON) Warning(w *record.Warning) error { return j.enc.Encode(w) }

// Summary writes a session summary record.
func (j *JSON) Summary(s *record.Summary) error { return j.enc.Encode(s) }
