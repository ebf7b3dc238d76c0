//go:build linux

package agent

import (
	"fmt"
	"os"
	"strings"
)

// Legacy TRACE output goes through the netfilter logger bound to the
// family (net.netfilter.nf_log.2 for IPv4, .10 for IPv6). With none bound
// ("NONE") the kernel logs nothing and a legacy trace stays empty.

func nfLogPath(procRoot string, fam uint8) string {
	n := "2"
	if fam == 6 {
		n = "10"
	}
	return procRoot + "/sys/net/netfilter/nf_log/" + n
}

func nfLogger(fam uint8) string {
	if fam == 6 {
		return "nf_log_ipv6"
	}
	return "nf_log_ipv4"
}

// ensureLogger binds the family's kernel logger when none is bound and
// reports whether it did (the caller restores it with restoreLogger).
func ensureLogger(procRoot string, fam uint8) (bool, error) {
	p := nfLogPath(procRoot, fam)
	b, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("read the netfilter logger setting %s: %w", p, err)
	}
	if strings.TrimSpace(string(b)) != "NONE" {
		return false, nil
	}
	if err := os.WriteFile(p, []byte(nfLogger(fam)), 0o644); err != nil {
		return false, fmt.Errorf("bind the netfilter logger %s (legacy TRACE output needs it): %w", nfLogger(fam), err)
	}
	return true, nil
}

// restoreLogger unbinds the family's logger again ("NONE"), if it is still
// the one svctrace bound.
func restoreLogger(procRoot string, fam uint8) error {
	p := nfLogPath(procRoot, fam)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read the netfilter logger setting %s: %w", p, err)
	}
	if strings.TrimSpace(string(b)) != nfLogger(fam) {
		return nil // someone changed it since: leave their choice
	}
	if err := os.WriteFile(p, []byte("NONE"), 0o644); err != nil {
		return fmt.Errorf("restore the netfilter logger %s to NONE: %w", p, err)
	}
	return nil
}
