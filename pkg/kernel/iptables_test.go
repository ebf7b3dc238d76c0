//go:build linux

package kernel

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// TestLegacyFingerprint, in a network namespace of its own: a renamed
// chain (kube-router's syncs: same sizes, new names) and a rule replaced
// by one of the same size change the fingerprint; counters do not.
func TestLegacyFingerprint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, iptables-legacy)")
	}
	if _, err := exec.LookPath("iptables-legacy"); err != nil {
		t.Skip("iptables-legacy not installed")
	}
	name := fmt.Sprintf("svctest-fp-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ipt := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"netns", "exec", name, "iptables-legacy", "-w", "-t", "filter"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables-legacy %v: %v: %s", args, err, out)
		}
	}
	ipt("-N", "KUBE-POD-FW-AAAA")
	ipt("-A", "KUBE-POD-FW-AAAA", "-d", "10.244.0.5/32", "-j", "ACCEPT")
	ipt("-A", "OUTPUT", "-c", "100", "2000", "-j", "KUBE-POD-FW-AAAA")

	fp := func() uint64 {
		t.Helper()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = netns.Set(orig) }()
		v, err := LegacyFingerprint("/proc/thread-self", 4)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	base := fp()
	ipt("-Z")
	if got := fp(); got != base {
		t.Errorf("zeroing the counters changed the fingerprint")
	}
	ipt("-E", "KUBE-POD-FW-AAAA", "KUBE-POD-FW-BBBB")
	renamed := fp()
	if renamed == base {
		t.Errorf("renaming a chain left the fingerprint as it was")
	}
	ipt("-R", "KUBE-POD-FW-BBBB", "1", "-d", "10.244.0.6/32", "-j", "ACCEPT")
	if got := fp(); got == renamed {
		t.Errorf("replacing a rule by one of the same size left the fingerprint as it was")
	}
}
