//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"

	"github.com/svctrace/kubectl-svctrace/pkg/kernel"
)

// host is the node as the agent sees it: host commands, the nf_tables
// netlink API, /proc. One host serves one session.
type host struct {
	Runner runner
	// ProcRoot is "/proc" (a seam for tests).
	ProcRoot string

	mu   sync.Mutex
	nl   *kernel.Nftables
	rtnl *kernel.Rtnl
	ipts map[ipKey]*iptables.IPTables
}

type ipKey struct {
	b   ipBackend
	fam uint8
}

// newHost returns the real host.
func newHost() *host {
	return &host{Runner: execRunner{}, ProcRoot: "/proc"}
}

// Close releases the netlink sockets.
func (h *host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if h.nl != nil {
		errs = append(errs, h.nl.Close())
		h.nl = nil
	}
	if h.rtnl != nil {
		errs = append(errs, h.rtnl.Close())
		h.rtnl = nil
	}
	return errors.Join(errs...)
}

func (h *host) proc() procInfo { return procInfo{root: h.ProcRoot} }

// nftables returns the session's nf_tables netlink connection, opened on
// first use.
func (h *host) nftables() (*kernel.Nftables, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nl == nil {
		n, err := kernel.OpenNftables()
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
func (h *host) iptables(b ipBackend, fam uint8) (*iptables.IPTables, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := ipKey{b, fam}
	if ipt := h.ipts[k]; ipt != nil {
		return ipt, nil
	}
	path, err := lookBinary(b.Binary(fam))
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
func (h *host) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return h.Runner.Run(ctx, nil, name, args...)
}

// stream runs a host command and hands each line of its stdout to fn
// without holding the whole output (fn must not retain line).
func (h *host) stream(ctx context.Context, name string, args []string, fn func(line string)) error {
	path, err := lookBinary(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	scanErr := sc.Err()
	if scanErr != nil {
		_, _ = io.Copy(io.Discard, out)
	}
	if err := cmd.Wait(); err != nil {
		return &commandError{Cmd: name + " " + strings.Join(args, " "), Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	if scanErr != nil {
		return fmt.Errorf("read the output of %s: %w", name, scanErr)
	}
	return nil
}

// legacyTables implements prober.
func (h *host) legacyTables(fam uint8) ([]string, error) {
	return kernel.LegacyTables(h.ProcRoot, fam)
}

// nftTables implements prober.
func (h *host) nftTables(fam uint8) ([]string, error) {
	n, err := h.nftables()
	if err != nil {
		return nil, err
	}
	return n.Tables(fam)
}

// nftChainExists implements prober.
func (h *host) nftChainExists(fam uint8, table, chain string) (bool, error) {
	n, err := h.nftables()
	if err != nil {
		return false, err
	}
	return n.ChainExists(fam, table, chain)
}

// linkExists implements prober: asked over route netlink in the agent's
// namespace (the node's).
func (h *host) linkExists(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rtnl == nil {
		r, err := kernel.OpenRtnl()
		if err != nil {
			return false
		}
		h.rtnl = r
	}
	_, err := h.rtnl.LinkIndex(name)
	return err == nil
}

// tablesOf returns the tables that exist in a backend and family.
func (h *host) tablesOf(b ipBackend, fam uint8) ([]string, error) {
	if b == backendLegacy {
		return h.legacyTables(fam)
	}
	return h.nftTables(fam)
}
