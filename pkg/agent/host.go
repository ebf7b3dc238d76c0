package agent

import (
	"context"
	"fmt"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// Host is the node as the agent sees it: host commands, the nf_tables
// netlink API, /proc. One Host serves one session.
type Host struct {
	Runner Runner
	// ProcRoot is "/proc" (a seam for tests).
	ProcRoot string

	mu   sync.Mutex
	nl   *nfnl
	ipts map[ipKey]*iptables.IPTables
}

type ipKey struct {
	b   Backend
	fam uint8
}

// NewHost returns the real host.
func NewHost() *Host {
	return &Host{Runner: ExecRunner{}, ProcRoot: "/proc"}
}

// Close releases the netlink socket.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nl != nil {
		err := h.nl.Close()
		h.nl = nil
		return err
	}
	return nil
}

func (h *Host) proc() procInfo { return procInfo{root: h.ProcRoot} }

func (h *Host) nfnl() (*nfnl, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nl == nil {
		n, err := dialNfnl()
		if err != nil {
			return nil, err
		}
		h.nl = n
	}
	return h.nl, nil
}

// iptables returns the go-iptables handle of a backend and family. It always
// passes --wait (iptables >= 1.4.20), so kube-proxy's iptables-restore holding
// the xtables lock is waited for, never raced.
func (h *Host) iptables(b Backend, fam uint8) (*iptables.IPTables, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := ipKey{b, fam}
	if ipt := h.ipts[k]; ipt != nil {
		return ipt, nil
	}
	path, err := LookBinary(b.Binary(fam))
	if err != nil {
		return nil, err
	}
	proto := iptables.ProtocolIPv4
	if fam == 6 {
		proto = iptables.ProtocolIPv6
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path))
	if err != nil {
		return nil, fmt.Errorf("use %s: %w", path, err)
	}
	if h.ipts == nil {
		h.ipts = map[ipKey]*iptables.IPTables{}
	}
	h.ipts[k] = ipt
	return ipt, nil
}

// run implements prober.
func (h *Host) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return h.Runner.Run(ctx, nil, name, args...)
}

// legacyTables implements prober.
func (h *Host) legacyTables(fam uint8) ([]string, error) {
	return readLegacyTables(h.ProcRoot, fam)
}

// nftTables implements prober.
func (h *Host) nftTables(fam uint8) ([]string, error) {
	n, err := h.nfnl()
	if err != nil {
		return nil, err
	}
	return n.tables(fam)
}

// linkExists implements prober.
func (h *Host) linkExists(name string) bool { return linkExists(name) }

// tablesOf returns the tables that exist in a backend and family.
func (h *Host) tablesOf(b Backend, fam uint8) ([]string, error) {
	if b == BackendLegacy {
		return h.legacyTables(fam)
	}
	return h.nftTables(fam)
}
