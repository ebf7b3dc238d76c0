//go:build linux

package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// seedLine returns the n-th kernel TRACE line of the seed kern.log capture.
func seedLines(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(string(readCapture(t, "seed-001-kernlog.txt")), "\n") {
		if strings.Contains(l, " kernel: [") && strings.Contains(l, "TRACE: ") {
			out = append(out, l)
		}
	}
	if len(out) < 4 {
		t.Fatalf("seed capture has %d kernel TRACE lines, want at least 4", len(out))
	}
	return out
}

func appendFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernLogSource follows a syslog file: lines already there are skipped,
// new ones are decoded, and rotation (rename + new file) is followed.
func TestKernLogSource(t *testing.T) {
	lines := seedLines(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "kern.log")
	appendFile(t, path, "May 8 16:30:28 ceph4 kernel: [324780.000000] eth0: link up", lines[0])

	src := newKernLogSource(path)
	if err := src.Open(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(ev *trace.Event) {
			mu.Lock()
			got = append(got, ev.Table+":"+ev.Chain+":"+ev.Kind.String())
			mu.Unlock()
		}, func(uint64) { t.Error("kern.log cannot count losses") })
	}()
	waitFor := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			k := len(got)
			mu.Unlock()
			if k >= n {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("got %d events %v, want %d", len(got), got, n)
	}

	appendFile(t, path, "May 8 16:30:29 ceph4 sshd[1]: not the kernel", lines[1], lines[2])
	waitFor(2)
	// Rotation: the daemon renames the file and starts a new one.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	appendFile(t, path, lines[3])
	waitFor(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := []string{"nat:OUTPUT:rule", "nat:KUBE-SERVICES:rule", "nat:KUBE-SVC-ZP4VKUJYTBCROZYY:rule"}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestKernLogSourceMissingFile(t *testing.T) {
	err := newKernLogSource(filepath.Join(t.TempDir(), "nope")).Open()
	if err == nil || !strings.Contains(err.Error(), "--source kmsg") {
		t.Fatalf("Open of a missing file: %v, want an error suggesting --source kmsg", err)
	}
}
