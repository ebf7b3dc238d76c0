package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// podNetns is the network namespace of a pod, found by the pod's IP among
// the namespaces of the node's processes (the agent runs with hostPID).
// Connections made in it leave from the pod's own interface, as the pod's
// own would, whatever tools the pod's image has.
type podNetns struct {
	ip  netip.Addr
	pid int
	// f is /proc/PID/ns/net, held open: it keeps the namespace (and our
	// way into it) even if that process exits.
	f *os.File
}

// Close releases the namespace.
func (n *podNetns) Close() error {
	if n == nil {
		return nil
	}
	return n.f.Close()
}

// findNetnsByIP returns the one network namespace, other than the agent's
// own (the node's), that has an interface with address ip.
func findNetnsByIP(procRoot string, ip netip.Addr) (*podNetns, error) {
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
	var found []*podNetns
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
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		scanned++
		if ok, err := netnsHasAddr(int(f.Fd()), ip); err != nil || !ok {
			f.Close()
			continue
		}
		found = append(found, &podNetns{ip: ip, pid: pid, f: f})
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no network namespace on this node has address %s (looked at %d besides the node's): is the pod running on this node, and is %s its IP? (a hostNetwork pod shares the node's namespace: trace it with --probe instead)", ip, scanned, ip)
	case 1:
		return found[0], nil
	}
	var owners []string
	for _, n := range found {
		owners = append(owners, "pid "+strconv.Itoa(n.pid))
		n.Close()
	}
	return nil, fmt.Errorf("%d network namespaces on this node have address %s (%v): cannot tell which one is the pod's", len(found), ip, owners)
}

// nsInode identifies a namespace by the inode of its nsfs file.
func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// netnsHasAddr asks rtnetlink inside the namespace nsFD whether one of its
// interfaces has address ip.
func netnsHasAddr(nsFD int, ip netip.Addr) (bool, error) {
	r, err := dialRtnl(nsFD)
	if err != nil {
		return false, err
	}
	defer r.Close()
	return r.hasAddr(ip)
}

// errEnterNetns marks a failure to get into or out of the pod's namespace,
// as opposed to a connection that failed there (which the trace explains).
var errEnterNetns = errors.New("pod network namespace")

// dial opens one probe connection from inside the namespace. The socket is
// created on an OS thread locked into the namespace, so it belongs there;
// the thread goes back to the agent's namespace before it runs anything
// else.
func (n *podNetns) dial(ctx context.Context, proto string, ap netip.AddrPort) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: remember the agent's namespace: %v", errEnterNetns, err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("%w: enter the namespace of pid %d (the agent needs CAP_SYS_ADMIN): %v", errEnterNetns, n.pid, err)
			return
		}
		err = probeOne(ctx, proto, ap)
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// The thread stays locked and ends with this goroutine:
			// nothing else ever runs in the pod's namespace.
			errc <- fmt.Errorf("%w: go back to the agent's namespace: %v", errEnterNetns, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}
