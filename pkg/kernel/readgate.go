//go:build linux

package kernel

import (
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// ReadGate tells whether a reader of a kernel queue (a netlink socket,
// /dev/kmsg) has read everything queued and handed it on. A packet whose
// trace records stop arriving is complete only when the pause is the
// kernel's: a reader starved of CPU for a tick or two leaves the rest of a
// packet's records queued while the clock runs, and the packet would be
// cut in two.
type ReadGate struct {
	reads atomic.Uint64
	idle  atomic.Bool
}

// Read notes a read that returned records, before they are handed on.
func (g *ReadGate) Read() {
	g.idle.Store(false)
	g.reads.Add(1)
}

// Empty notes that the reader found nothing queued: everything it read
// was handed on, and it waits for more.
func (g *ReadGate) Empty() { g.idle.Store(true) }

// ReadFrom reads once from the non-blocking file behind rc with read, waiting
// until it is readable, and keeps the gate: a read that finds nothing queued
// calls idle, whose true means nothing is held back (nil: always), and then
// notes the reader idle. It returns read's count and error (never EAGAIN).
func (g *ReadGate) ReadFrom(rc syscall.RawConn, read func(fd int) (int, error), idle func() bool) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		n, rerr = read(int(fd))
		if rerr == unix.EAGAIN {
			if idle == nil || idle() {
				g.Empty()
			}
			return false
		}
		if rerr == nil {
			g.Read()
		}
		return true
	})
	if err != nil {
		return n, err
	}
	return n, rerr
}

// Drained reports whether the reader waits with nothing queued on the
// file behind rc: it is idle since its last read and a poll finds nothing
// to read. A record queued once Drained returned came after the call.
func (g *ReadGate) Drained(rc syscall.RawConn) bool {
	n := g.reads.Load()
	idle := g.idle.Load()
	queued := true
	if err := rc.Control(func(fd uintptr) { queued = readable(fd) }); err != nil {
		// Closed: nothing more will be read.
		return true
	}
	return idle && !queued && g.reads.Load() == n
}

// readable polls fd without waiting (true on a poll error: ask again).
func readable(fd uintptr) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, 0)
	return err != nil || n > 0 && pfd[0].Revents&(unix.POLLIN|unix.POLLERR) != 0
}
