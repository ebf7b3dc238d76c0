//go:build linux

package kernel

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestReadGate walks a reader through its states on a real pipe: it is
// drained only while idle with nothing queued, and not once it read
// something it has yet to hand on, nor while idle says it holds some back.
func TestReadGate(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var g ReadGate
	step := func(what string, want bool) {
		t.Helper()
		if got := g.Drained(rc); got != want {
			t.Errorf("%s: Drained = %v, want %v", what, got, want)
		}
	}
	// The reader: one ReadFrom at a time, told when to go; its idle
	// callback says whether it holds something back.
	buf := make([]byte, 64)
	holding := make(chan bool) // received by the reader's idle callback
	next, got := make(chan struct{}), make(chan int)
	go func() {
		for range next {
			n, err := g.ReadFrom(rc, func(fd int) (int, error) { return syscall.Read(fd, buf) }, func() bool { return !<-holding })
			if err != nil {
				n = -1
			}
			got <- n
		}
	}()
	waitIdle := func() {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !g.idle.Load(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the reader never went idle")
			}
		}
	}
	step("before the reader's first read", false)

	next <- struct{}{}
	holding <- true // it found nothing queued and says it holds a record back
	step("waiting, but holding a record back", false)
	if _, err := w.Write([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 1 {
		t.Fatalf("read %d bytes, want 1", n)
	}
	step("read, not handed on", false)

	next <- struct{}{}
	holding <- false
	waitIdle()
	step("waiting, nothing queued", true)
	if _, err := w.Write([]byte("bc")); err != nil {
		t.Fatal(err)
	}
	// The reader may or may not have woken yet: either way not drained.
	step("a record queued", false)
	if n := <-got; n != 2 {
		t.Fatalf("read %d bytes, want 2", n)
	}
	close(next)
	r.Close()
	step("closed", true)
}
