//go:build linux

package agent

import (
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/trace"
)

// ownership keeps only this node's legacy trace records where several
// nodes share one kernel (network namespaces on one machine, as the local
// multi-node cluster runs them): with nf_log_all_netns=1 every namespace's
// TRACE lines reach the one kernel log, and nothing in a line names the
// namespace. A record is this node's when what it shows of the packet
// belongs to this namespace:
//
//   - a bridged frame (PHYSIN=): the bridge port is one of the node's
//     interfaces (veth names are random per pod, so they tell nodes apart
//     where eth0 and cni0 do not);
//   - a received frame (IN= and MAC=): its destination MAC is one of the
//     node's interfaces', or its source MAC is one the node's bridges
//     learned (a pod behind one of its ports);
//   - a packet the node sends (IN= empty): its source is one of the
//     node's addresses;
//   - a received packet without a link header (tunnels, lo): its source or
//     destination is one of the node's addresses.
//
// The node's facts are read again (at most every refreshEvery) when a
// record fails the test, so new pods are known. It is enabled only where the
// agent's network namespace is not the machine's initial one
// (sharedKernelLog): on a real node the agent runs in the initial one, its
// kernel log is its own, and nothing is filtered.
type ownership struct {
	sysRoot string
	mu      sync.Mutex
	facts   nodeFacts
	read    time.Time
	foreign atomic.Uint64
}

// refreshEvery bounds how often a foreign-looking record rereads the facts.
var refreshEvery = time.Second

// nodeFacts are what a node's network namespace has of its own.
type nodeFacts struct {
	ifaces  map[string]bool
	macs    map[[6]byte]bool // its interfaces' MAC addresses
	learned map[[6]byte]bool // MAC addresses its bridges learned or own
	addrs   map[netip.Addr]bool
}

// sharedKernelLog reports whether this process's network namespace is not
// the machine's initial one, whose kernel log then also carries other
// namespaces' records: the kernel registers net.netfilter.nf_log_all_netns
// (the switch that lets other namespaces log at all) in the initial
// namespace only. (pid 1's namespace link is not always readable, even as
// root, so it is not asked.)
func sharedKernelLog(procRoot string) bool {
	nf := filepath.Join(procRoot, "sys/net/netfilter")
	if _, err := os.Stat(nf); err != nil {
		return false // no netfilter sysctls to judge by
	}
	_, err := os.Stat(filepath.Join(nf, "nf_log_all_netns"))
	return errors.Is(err, fs.ErrNotExist)
}

func newOwnership(sysRoot string) *ownership {
	o := &ownership{sysRoot: sysRoot}
	o.facts = readNodeFacts(sysRoot)
	o.read = time.Now()
	return o
}

// keep reports whether ev is this node's record, counting the others.
func (o *ownership) keep(ev *trace.Event) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.facts.owns(ev) {
		return true
	}
	if now := time.Now(); now.Sub(o.read) >= refreshEvery {
		o.facts, o.read = readNodeFacts(o.sysRoot), now
		if o.facts.owns(ev) {
			return true
		}
	}
	o.foreign.Add(1)
	return false
}

// owns is the test (see ownership).
func (f *nodeFacts) owns(ev *trace.Event) bool {
	h := &ev.Header
	switch {
	case h.PhysIn != "":
		return f.ifaces[h.PhysIn]
	case h.PhysOut != "" && h.In == "":
		return f.ifaces[h.PhysOut]
	case h.In == "":
		return f.addrs[h.Src]
	case ev.HasLink && ev.LinkDst != [6]byte{}:
		// Not the source MAC among the node's own interfaces': that is
		// how another node sees the frames this one sent it.
		return f.macs[ev.LinkDst] || f.learned[ev.LinkSrc]
	}
	return f.addrs[h.Src] || f.addrs[h.Dst]
}

// readNodeFacts reads the namespace's interfaces, addresses and bridge
// forwarding databases (sysfs brforward: the kernel's fdb entries, 16
// bytes each, MAC first).
func readNodeFacts(sysRoot string) nodeFacts {
	f := nodeFacts{ifaces: map[string]bool{}, macs: map[[6]byte]bool{}, learned: map[[6]byte]bool{}, addrs: map[netip.Addr]bool{}}
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		f.ifaces[ifc.Name] = true
		if len(ifc.HardwareAddr) == 6 {
			f.macs[[6]byte(ifc.HardwareAddr)] = true
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					f.addrs[ip.Unmap()] = true
				}
			}
		}
		data, err := os.ReadFile(filepath.Join(sysRoot, "class/net", ifc.Name, "brforward"))
		if err != nil {
			continue // not a bridge
		}
		for _, mac := range parseBrforward(data) {
			f.learned[mac] = true
		}
	}
	return f
}

// parseBrforward returns the MAC addresses of a bridge's brforward dump
// (struct __fdb_entry: mac_addr[6], port_no, is_local, ageing_timer_value
// u32, port_hi, pad0, unused u16).
func parseBrforward(data []byte) [][6]byte {
	const size = 16
	out := make([][6]byte, 0, len(data)/size)
	for len(data) >= size {
		out = append(out, [6]byte(data[:6]))
		data = data[size:]
	}
	return out
}
