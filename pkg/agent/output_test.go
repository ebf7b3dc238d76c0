//go:build linux

package agent

import (
	"bytes"
	"encoding/json"
	"log"
	"strings"
	"sync"
	"testing"
)

// With --log-stdout, log lines written while long records are written go
// out between records, never inside one: every line on the stream is a
// whole record or a whole log line.
func TestOutputLogLinesBetweenRecords(t *testing.T) {
	var buf bytes.Buffer
	out := newOutput(&buf)
	lg := log.New(out.lines(), "svctrace agent: ", 0)
	long := strings.Repeat("x", 40<<10) // beyond containerd's 16 KiB line limit
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			if err := out.write(map[string]any{"type": "packet", "n": i, "pad": long}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			lg.Printf("log line %d", i)
		}
	}()
	wg.Wait()
	records, logs := 0, 0
	for _, line := range strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "{"):
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("garbled record (%d bytes): %v", len(line), err)
			}
			records++
		case strings.HasPrefix(line, "svctrace agent: log line "):
			logs++
		default:
			t.Fatalf("line is neither a record nor a log line: %.80q", line)
		}
	}
	if records != 200 || logs != 200 {
		t.Errorf("%d records and %d log lines, want 200 each", records, logs)
	}
}
