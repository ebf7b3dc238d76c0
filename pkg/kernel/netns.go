//go:build linux

package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is the network namespace of a pod, found by the pod's IP among the
// namespaces of the node's processes (the agent runs with hostPID).
// Connections made in it leave from the pod's own interface, as the pod's
// own would, whatever tools the pod's image has.
type Netns struct {
	// Addr is the address the namespace was found by; PID the process
	// whose namespace it is.
	Addr netip.Addr
	PID  int
	// h is /proc/PID/ns/net, held open: it keeps the namespace (and our
	// way into it) even if that process exits.
	h netns.NsHandle
}

// Close releases the namespace.
func (n *Netns) Close() error {
	if n == nil {
		return nil
	}
	return n.h.Close()
}

// FindNetnsByAddr returns the one network namespace, other than the
// caller's own (the node's), that has an interface with address ip. The
// scan of /proc is ours (no library finds a namespace by address); each
// namespace is asked over route netlink.
func FindNetnsByAddr(procRoot string, ip netip.Addr) (*Netns, error) {
	ip = ip.Unmap()
	own, err := nsInode(filepath.Join(procRoot, "self/ns/net"))
	if err != nil {
		return nil, fmt.Errorf("read the agent's own network namespace (the agent needs hostPID and root): %w", err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list the node's processes: %w", err)
	}
	seen := map[uint64]bool{own: true}
	var found []*Netns
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pids = append(pids, pid)
	}
	// Oldest first: a pod's sandbox (pause) process started before any
	// process that joined its namespace later.
	sort.Ints(pids)
	scanned := 0
	for _, pid := range pids {
		path := filepath.Join(procRoot, strconv.Itoa(pid), "ns/net")
		ino, err := nsInode(path)
		if err != nil || seen[ino] {
			continue // gone, or a namespace already looked at
		}
		seen[ino] = true
		h, err := netns.GetFromPath(path)
		if err != nil {
			continue
		}
		scanned++
		n := &Netns{Addr: ip, PID: pid, h: h}
		if ok, err := n.hasAddr(ip); err != nil || !ok {
			n.Close()
			continue
		}
		found = append(found, n)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no network namespace on this node has address %s (looked at %d besides the node's): is the pod running on this node, and is %s its IP? (a hostNetwork pod shares the node's namespace: trace it with --probe instead)", ip, scanned, ip)
	case 1:
		return found[0], nil
	}
	var owners []string
	for _, n := range found {
		owners = append(owners, "pid "+strconv.Itoa(n.PID))
		n.Close()
	}
	return nil, fmt.Errorf("%d network namespaces on this node have address %s (%v): cannot tell which one is the pod's", len(found), ip, owners)
}

func (n *Netns) hasAddr(ip netip.Addr) (bool, error) {
	r, err := OpenRtnlAt(n)
	if err != nil {
		return false, err
	}
	defer r.Close()
	return r.HasAddr(ip)
}

// nsInode identifies a namespace by the inode of its nsfs file.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ErrEnterNetns marks a failure to get into or out of the namespace, as
// opposed to an error of the function run there.
var ErrEnterNetns = errors.New("pod network namespace")

// Do runs fn on an OS thread locked into the namespace, so the sockets fn
// creates belong there; the thread goes back to the caller's namespace
// before it runs anything else (vishvananda/netns does the setns).
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: remember the agent's namespace: %v", ErrEnterNetns, err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.h); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: enter the namespace of pid %d (the agent needs CAP_SYS_ADMIN): %v", ErrEnterNetns, n.PID, err)
			return
		}
		err = fn()
		if rerr := netns.Set(orig); rerr != nil {
			// The thread stays locked and ends with this goroutine:
			// nothing else ever runs in the pod's namespace.
			errc <- fmt.Errorf("%w: go back to the agent's namespace: %v", ErrEnterNetns, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}
