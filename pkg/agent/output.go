//go:build linux

package agent

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// output writes NDJSON records: one JSON object per line, each in a single
// Write so a reader (the plugin, over the pod's attached stdout) gets every
// record as soon as it is produced.
type output struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	err error
}

func newOutput(w io.Writer) *output { return &output{w: w} }

// write encodes v as one line. After a write error it keeps failing: the
// reader is gone, and the session notices through the returned error.
func (o *output) write(v any) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return o.err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T record: %w", v, err)
	}
	o.buf = append(append(o.buf[:0], b...), '\n')
	if _, err := o.w.Write(o.buf); err != nil {
		o.err = fmt.Errorf("write record to stdout: %w", err)
		return o.err
	}
	return nil
}

// lines is a writer of whole log lines into the record stream: each Write
// (log.Logger makes one per line) goes out between two records, never
// inside one.
func (o *output) lines() io.Writer { return lineWriter{o} }

type lineWriter struct{ o *output }

func (l lineWriter) Write(p []byte) (int, error) {
	l.o.mu.Lock()
	defer l.o.mu.Unlock()
	if l.o.err != nil {
		return 0, l.o.err
	}
	if _, err := l.o.w.Write(p); err != nil {
		l.o.err = fmt.Errorf("write log line to stdout: %w", err)
		return 0, l.o.err
	}
	return len(p), nil
}
