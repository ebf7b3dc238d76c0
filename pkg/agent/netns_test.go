//go:build linux

package agent

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// Real-kernel test helpers: every test builds its own network namespaces
// (named svct4-PID-N, deleted at the end) and sends traffic only inside them.

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("real-kernel test: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and edit netfilter rules; run `sudo go test ./pkg/agent/`")
	}
	for _, b := range []string{"ip", "iptables-legacy", "iptables-nft", "ip6tables-legacy", "ip6tables-nft", "nft"} {
		if _, err := lookBinary(b); err != nil {
			t.Skipf("real-kernel test: %v", err)
		}
	}
}

var nsSeq atomic.Int32

type netns struct {
	name string
}

func newNetns(t testing.TB, role string) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("svct4-%d-%d-%s", os.Getpid(), nsSeq.Add(1), role)}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.name, err, out)
		}
	})
	n.mustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

func (n *netns) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
}

func (n *netns) run(stdin []byte, args ...string) (string, error) {
	cmd := n.command(context.Background(), args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (n *netns) mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.run(nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mustRestore runs a command (iptables-restore, nft -f -) with data on stdin.
func (n *netns) mustRestore(t testing.TB, data string, args ...string) {
	t.Helper()
	if _, err := n.run([]byte(data), args...); err != nil {
		t.Fatal(err)
	}
}

// do runs fn on an OS thread inside the namespace: sockets fn creates stay
// in the namespace after fn returns. fn must not call t.Fatal.
func (n *netns) do(t testing.TB, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is left locked and dies with the goroutine if the
		// namespace cannot be restored, so no other goroutine runs in it.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			done <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", n.name, err)
			return
		}
		fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// ruleset returns what the namespace's rules look like to an operator:
// both backends' saves (comments and counters stripped) and nft list
// ruleset. Used to assert a session left the node as it found it.
func (n *netns) ruleset(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	for _, bin := range []string{"iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"} {
		out := n.mustRun(t, bin)
		b.WriteString("== " + bin + "\n")
		b.Write(stripSaveNoise([]byte(out)))
	}
	out := n.mustRun(t, "nft", "list", "ruleset")
	b.WriteString("== nft list ruleset\n")
	for _, l := range strings.Split(out, "\n") {
		// Counters move with the test's traffic; rules must not.
		if i := strings.Index(l, "counter packets"); i >= 0 {
			if j := strings.Index(l[i:], " bytes "); j >= 0 {
				rest := l[i+j+len(" bytes "):]
				if k := strings.IndexByte(rest, ' '); k >= 0 {
					rest = rest[k:]
				} else {
					rest = ""
				}
				l = l[:i] + "counter" + rest
			}
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// topo is a node namespace with kube-proxy-shaped rules and an endpoint
// namespace behind a veth pair:
//
//	node  vn: 198.19.X.1/24 fd19:X::1/64 (default routes via the endpoint)
//	ep    ve: 198.19.X.2/24 fd19:X::2/64 (TCP and UDP echo on :8080)
//
// Service myapp: ClusterIP 198.18.X.10:80 and [fd18:X::10]:80, NodePort
// 30080 (IPv4), one endpoint 198.19.X.2:8080 / [fd19:X::2]:8080.
type topo struct {
	node, ep  *netns
	x         int
	backend   ipBackend
	proto     string // of the Service: tcp or udp
	listeners []net.Listener
	udp       []net.PacketConn
	accepted  atomic.Int64
}

var topoSeq atomic.Int32

func newTopo(t testing.TB, b ipBackend) *topo { return newTopoProto(t, b, "tcp") }

func newTopoProto(t testing.TB, b ipBackend, proto string) *topo {
	t.Helper()
	x := 10 + int(topoSeq.Add(1))%200
	tp := &topo{node: newNetns(t, "node"), ep: newNetns(t, "ep"), x: x, backend: b, proto: proto}
	vn, ve := fmt.Sprintf("svn%d", x), fmt.Sprintf("sve%d", x)
	if out, err := exec.Command("ip", "link", "add", vn, "netns", tp.node.name, "type", "veth", "peer", "name", ve, "netns", tp.ep.name).CombinedOutput(); err != nil {
		t.Fatalf("create veth: %v: %s", err, out)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", tp.nodeIP4().String() + "/24", "dev", vn},
		{"ip", "addr", "add", tp.nodeIP6().String() + "/64", "dev", vn, "nodad"},
		{"ip", "link", "set", vn, "up"},
		{"ip", "route", "add", "default", "via", tp.epIP4().String()},
		{"ip", "-6", "route", "add", "default", "via", tp.epIP6().String()},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
	} {
		tp.node.mustRun(t, c...)
	}
	for _, c := range [][]string{
		{"ip", "addr", "add", tp.epIP4().String() + "/24", "dev", ve},
		{"ip", "addr", "add", tp.epIP6().String() + "/64", "dev", ve, "nodad"},
		{"ip", "link", "set", ve, "up"},
	} {
		tp.ep.mustRun(t, c...)
	}
	var lerr error
	tp.ep.do(t, func() {
		for _, fam := range []string{"4", "6"} {
			l, err := net.Listen("tcp"+fam, ":8080")
			if err != nil {
				lerr = err
				return
			}
			tp.listeners = append(tp.listeners, l)
			u, err := net.ListenPacket("udp"+fam, ":8080")
			if err != nil {
				lerr = err
				return
			}
			tp.udp = append(tp.udp, u)
		}
	})
	if lerr != nil {
		t.Fatalf("listen in the endpoint namespace: %v", lerr)
	}
	for _, l := range tp.listeners {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				tp.accepted.Add(1)
				c.Close()
			}
		}()
	}
	for _, u := range tp.udp {
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = u.WriteTo(buf[:n], from)
			}
		}()
	}
	t.Cleanup(func() {
		for _, l := range tp.listeners {
			l.Close()
		}
		for _, u := range tp.udp {
			u.Close()
		}
	})
	tp.loadKubeProxy(t)
	return tp
}

func (tp *topo) nodeIP4() netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("198.19.%d.1", tp.x))
}
func (tp *topo) epIP4() netip.Addr { return netip.MustParseAddr(fmt.Sprintf("198.19.%d.2", tp.x)) }
func (tp *topo) nodeIP6() netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("fd19:%d::1", tp.x))
}
func (tp *topo) epIP6() netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd19:%d::2", tp.x)) }
func (tp *topo) svc4() netip.AddrPort {
	return netip.MustParseAddrPort(fmt.Sprintf("198.18.%d.10:80", tp.x))
}
func (tp *topo) svc6() netip.AddrPort {
	return netip.MustParseAddrPort(fmt.Sprintf("[fd18:%d::10]:80", tp.x))
}

const (
	testNodePort = 30080
	svcName      = "default/myapp"
)

// Chain names as kube-proxy computes them (hash of the Service port name
// and protocol; endpoint chains add the endpoint).
func (tp *topo) svcChain() string { return rules.ServiceChainName("KUBE-SVC-", svcName, tp.proto) }
func (tp *topo) extChain() string { return rules.ServiceChainName("KUBE-EXT-", svcName, tp.proto) }
func (tp *topo) sepChain(ep netip.AddrPort) string {
	return rules.EndpointChainName(svcName, tp.proto, ep.String())
}

// kubeProxyRules renders kube-proxy iptables-mode rules for one family, in
// the exact format kube-proxy's iptables-restore input uses.
func (tp *topo) kubeProxyRules(fam uint8) string { return tp.kubeProxyRulesN(fam, nil) }

// kubeProxyRulesN is kubeProxyRules with bulk Services added before the
// test's own (see bulkServices).
func (tp *topo) kubeProxyRulesN(fam uint8, bulk *bulkRules) string {
	svc, ep, bits, podCIDR := tp.svc4(), netip.AddrPortFrom(tp.epIP4(), 8080), "/32", "10.244.0.0/16"
	if fam == 6 {
		svc, ep, bits, podCIDR = tp.svc6(), netip.AddrPortFrom(tp.epIP6(), 8080), "/128", "fd44::/64"
	}
	svcC, sepC, extC := tp.svcChain(), tp.sepChain(ep), tp.extChain()
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("*mangle")
	w(":KUBE-PROXY-CANARY - [0:0]")
	w("COMMIT")
	w("*filter")
	w(":INPUT ACCEPT [0:0]")
	w(":FORWARD ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	w(":KUBE-SERVICES - [0:0]")
	w(":KUBE-FORWARD - [0:0]")
	w("-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD")
	w("-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
	w("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
	w("COMMIT")
	w("*nat")
	w(":PREROUTING ACCEPT [0:0]")
	w(":INPUT ACCEPT [0:0]")
	w(":OUTPUT ACCEPT [0:0]")
	w(":POSTROUTING ACCEPT [0:0]")
	w(":KUBE-SERVICES - [0:0]")
	w(":KUBE-NODEPORTS - [0:0]")
	w(":KUBE-POSTROUTING - [0:0]")
	w(":KUBE-MARK-MASQ - [0:0]")
	w(":%s - [0:0]", svcC)
	w(":%s - [0:0]", sepC)
	if fam == 4 {
		w(":%s - [0:0]", extC)
	}
	if bulk != nil {
		b.WriteString(bulk.decls)
	}
	w("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
	w("-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
	w("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING")
	w("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000")
	w("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN")
	w("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0")
	w("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully")
	if bulk != nil {
		b.WriteString(bulk.services)
		b.WriteString(bulk.chains)
	}
	p := tp.proto
	w("-A KUBE-SERVICES -d %s%s -p %s -m comment --comment \"%s cluster IP\" -m %s --dport %d -j %s", svc.Addr(), bits, p, svcName, p, svc.Port(), svcC)
	w("-A %s ! -s %s -d %s%s -p %s -m comment --comment \"%s cluster IP\" -m %s --dport %d -j KUBE-MARK-MASQ", svcC, podCIDR, svc.Addr(), bits, p, svcName, p, svc.Port())
	w("-A %s -m comment --comment \"%s -> %s\" -j %s", svcC, svcName, ep, sepC)
	w("-A %s -s %s%s -m comment --comment \"%s\" -j KUBE-MARK-MASQ", sepC, ep.Addr(), bits, svcName)
	w("-A %s -p %s -m comment --comment \"%s\" -m %s -j DNAT --to-destination %s", sepC, p, svcName, p, ep)
	if fam == 4 {
		w("-A KUBE-NODEPORTS -p %s -m comment --comment \"%s\" -m %s --dport %d -j %s", p, svcName, p, testNodePort, extC)
		w("-A %s -m comment --comment \"masquerade traffic for %s external destinations\" -j KUBE-MARK-MASQ", extC, svcName)
		w("-A %s -j %s", extC, svcC)
	}
	w("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
	w("COMMIT")
	return b.String()
}

func (tp *topo) loadKubeProxy(t testing.TB) {
	t.Helper()
	tp.node.mustRestore(t, tp.kubeProxyRules(4), tp.backend.Binary(4)+"-restore")
	tp.node.mustRestore(t, tp.kubeProxyRules(6), tp.backend.Binary(6)+"-restore")
	if tp.backend == backendLegacy {
		// Instantiate the legacy raw tables now: the kernel cannot
		// remove a legacy table, so one created by the session would
		// show as a difference that is not svctrace's to undo.
		tp.node.mustRun(t, "iptables-legacy", "-w", "-t", "raw", "-S")
		tp.node.mustRun(t, "ip6tables-legacy", "-w", "-t", "raw", "-S")
	}
}

// dial connects from the node namespace (the node's own traffic: OUTPUT).
func (tp *topo) dial(t testing.TB, proto string, to netip.AddrPort) error {
	t.Helper()
	var err error
	tp.node.do(t, func() {
		var c net.Conn
		c, err = net.DialTimeout(proto, to.String(), 2*time.Second)
		if err == nil {
			if proto == "udp" {
				_, err = c.Write([]byte("x"))
			}
			c.Close()
		}
	})
	return err
}

// dialFromEndpoint connects from the endpoint namespace to the node
// (an outside client: PREROUTING on the node).
func (tp *topo) dialFromEndpoint(t testing.TB, to netip.AddrPort) error {
	t.Helper()
	var err error
	tp.ep.do(t, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp", to.String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
	})
	return err
}

// nfLogAllNetns makes the kernel log legacy TRACE output from namespaces
// other than the root one (written in the root namespace), for the whole
// test binary; restored by TestMain.
var nfLogAllNetns struct {
	once    sync.Once
	changed bool
	err     error
}

const nfLogAllNetnsPath = "/proc/sys/net/netfilter/nf_log_all_netns"

func enableNfLogAllNetns(t testing.TB) {
	t.Helper()
	nfLogAllNetns.once.Do(func() {
		b, err := os.ReadFile(nfLogAllNetnsPath)
		if err != nil {
			nfLogAllNetns.err = err
			return
		}
		if strings.TrimSpace(string(b)) == "1" {
			return
		}
		if err := os.WriteFile(nfLogAllNetnsPath, []byte("1"), 0o644); err != nil {
			nfLogAllNetns.err = err
			return
		}
		nfLogAllNetns.changed = true
		fmt.Fprintf(os.Stderr, "svctrace agent tests: set %s=1 (legacy TRACE output from test namespaces); restored to 0 when the tests end\n", nfLogAllNetnsPath)
	})
	if nfLogAllNetns.err != nil {
		t.Fatalf("enable legacy logging in namespaces: %v", nfLogAllNetns.err)
	}
}

func restoreNfLogAllNetns() {
	if nfLogAllNetns.changed {
		if err := os.WriteFile(nfLogAllNetnsPath, []byte("0"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "svctrace agent tests: restore %s: %v\n", nfLogAllNetnsPath, err)
			return
		}
		fmt.Fprintf(os.Stderr, "svctrace agent tests: restored %s=0\n", nfLogAllNetnsPath)
	}
}
