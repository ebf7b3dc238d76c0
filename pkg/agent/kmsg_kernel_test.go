//go:build linux

package agent

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// syslogActionSizeBuffer is SYSLOG_ACTION_SIZE_BUFFER (syslog(2)): the size
// of the kernel log ring buffer.
const syslogActionSizeBuffer = 10

// TestKmsgLostBeforeFirstRead overflows the kernel log ring after the
// source opened /dev/kmsg and before it read a single record, as a flood
// does to an agent starved of CPU at its start: the records the ring
// overwrote must be counted as lost, not left out silently.
func TestKmsgLostBeforeFirstRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root to read and write /dev/kmsg; run `sudo go test ./pkg/agent/`")
	}
	size, err := unix.Klogctl(syslogActionSizeBuffer, nil)
	if err != nil {
		t.Fatalf("size of the kernel log buffer: %v", err)
	}
	if size > 8<<20 {
		t.Skipf("kernel log ring of %d bytes: overflowing it takes too long for a unit test", size)
	}
	src := newKmsgSource()
	if err := src.Open(); err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	// Each record costs its text and more in the ring: twice the ring's
	// size in text overwrites what the source has not read.
	line := "svctrace test: TestKmsgLostBeforeFirstRead fills the kernel log ring buffer " + strings.Repeat(".", 23) + "\n"
	n := 2 * size / len(line)
	for written := 0; written < n; {
		// The kernel rate-limits writes per open file (a burst of 10
		// per 5 s): a fresh file for every 5.
		w, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
		if err != nil {
			t.Skipf("write to /dev/kmsg (kernel.printk_devkmsg=off?): %v", err)
		}
		for k := 0; k < 5 && written < n; k++ {
			if _, err := w.WriteString(line); err != nil {
				w.Close()
				t.Fatalf("write to /dev/kmsg: %v", err)
			}
			written++
		}
		w.Close()
	}

	ctx, cancel := context.WithCancel(context.Background())
	var lost uint64
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(*trace.Event) {}, func(k uint64) { lost += k }) }()
	for deadline := time.Now().Add(10 * time.Second); !src.Drained(); {
		if time.Now().After(deadline) {
			t.Fatal("the source did not read the log to its end in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	read := src.dec.Stats().Lines
	t.Logf("ring of %d bytes: %d records written, %d read, %d counted lost", size, n, read, lost)
	if lost == 0 {
		t.Errorf("no record counted lost after writing %d records (%d bytes of text) into a ring of %d bytes", n, n*len(line), size)
	}
	if read+lost < uint64(n) {
		t.Errorf("%d records read + %d counted lost < %d written: a silent gap", read, lost, n)
	}
}
