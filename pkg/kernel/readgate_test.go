//go:build linux

package kernel

import (
	"os"
	"testing"
)

// TestReadGate walks a reader through its states on a real pipe: it is
// drained only while idle with nothing queued, and not once it read
// something it has yet to hand on.
func TestReadGate(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
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
	step("before the reader's first read", false)
	g.Empty()
	step("idle, nothing queued", true)
	if _, err := w.Write([]byte("record\n")); err != nil {
		t.Fatal(err)
	}
	step("idle, a record queued (the reader not woken yet)", false)
	g.Read()
	buf := make([]byte, 64)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	step("read, not handed on", false)
	g.Empty()
	step("handed on, idle again", true)
	r.Close()
	step("closed", true)
}
