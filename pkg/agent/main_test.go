//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// agentBin is the built kubectl-svctrace binary the real-kernel tests run
// as the agent (its hidden `agent` subcommand), or the error building it.
var (
	agentBin    string
	agentBinErr error
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() == 0 {
			dir, cleanup, err := buildAgent()
			if err != nil {
				agentBinErr = err
			} else {
				defer cleanup()
				agentBin = dir
			}
		}
		defer restoreNfLogAllNetns()
		return m.Run()
	}()
	os.Exit(code)
}

// buildAgent builds ./cmd/kubectl-svctrace into _output (or uses
// $SVCTRACE_BIN, e.g. what `make build` produced).
func buildAgent() (string, func(), error) {
	if p := os.Getenv("SVCTRACE_BIN"); p != "" {
		return p, func() {}, nil
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, "_output"), 0o755); err != nil {
		return "", nil, err
	}
	dir, err := os.MkdirTemp(filepath.Join(root, "_output"), "agent-test-")
	if err != nil {
		return "", nil, err
	}
	bin := filepath.Join(dir, "kubectl-svctrace")
	goBin, err := exec.LookPath("go")
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("find the go command to build the agent binary: %w", err)
	}
	// The release flags of the Makefile: memory figures depend on them
	// (an unstripped binary maps twice as many pages).
	cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/kubectl-svctrace")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build the agent binary: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

func requireAgentBin(t testing.TB) {
	t.Helper()
	requireRoot(t)
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
}

// requireAgent skips or fails a test of the built agent on backend b like
// requireAgentBin, and for iptables-legacy makes the kernel log TRACE
// records from every network namespace.
func requireAgent(t testing.TB, b ipBackend) {
	t.Helper()
	requireAgentBin(t)
	if b == backendLegacy {
		enableNfLogAllNetns(t)
	}
}

// agentProc is a running agent in a test namespace.
type agentProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *syncBuffer

	mu      sync.Mutex
	records []map[string]any
	raw     [][]byte
	ready   chan map[string]any
	done    chan struct{}
	waitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgent runs `kubectl-svctrace agent ARGS` inside ns.
func startAgent(t testing.TB, ns *netns, args ...string) *agentProc {
	t.Helper()
	requireAgentBin(t)
	a := &agentProc{t: t, stderr: &syncBuffer{}, ready: make(chan map[string]any, 1), done: make(chan struct{})}
	a.cmd = ns.command(context.Background(), append([]string{agentBin, "agent"}, args...)...)
	a.cmd.Stderr = a.stderr
	var err error
	if a.stdin, err = a.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var rec map[string]any
			line := append([]byte(nil), sc.Bytes()...)
			if err := json.Unmarshal(line, &rec); err != nil {
				t.Errorf("agent wrote a line that is not JSON: %q: %v", line, err)
				continue
			}
			a.mu.Lock()
			a.records = append(a.records, rec)
			a.raw = append(a.raw, line)
			a.mu.Unlock()
			if rec["type"] == record.TypeReady {
				a.ready <- rec
			}
		}
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	})
	return a
}

// waitReady waits for the ready record.
func (a *agentProc) waitReady(timeout time.Duration) map[string]any {
	a.t.Helper()
	select {
	case r := <-a.ready:
		return r
	case <-a.done:
		a.t.Fatalf("agent exited before ready: %v\nstderr:\n%s", a.waitErr, a.stderr.String())
	case <-time.After(timeout):
		a.t.Fatalf("agent not ready after %s\nstderr:\n%s", timeout, a.stderr.String())
	}
	return nil
}

// wait waits for the agent to exit and returns its exit code.
func (a *agentProc) wait(timeout time.Duration) int {
	a.t.Helper()
	select {
	case <-a.done:
	case <-time.After(timeout):
		_ = a.cmd.Process.Kill()
		<-a.done
		a.t.Fatalf("agent still running after %s\nstderr:\n%s", timeout, a.stderr.String())
	}
	if a.waitErr != nil {
		var ee *exec.ExitError
		if ok := asExitError(a.waitErr, &ee); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return -int(ws.Signal())
			}
			return ee.ExitCode()
		}
		a.t.Fatalf("wait for the agent: %v", a.waitErr)
	}
	return 0
}

func asExitError(err error, target **exec.ExitError) bool {
	ee, ok := err.(*exec.ExitError)
	if ok {
		*target = ee
	}
	return ok
}

func (a *agentProc) signal(sig os.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("signal the agent: %v", err)
	}
}

// recordsOf returns the records of one type, decoded into T.
func recordsOf[T any](a *agentProc, typ string) []T {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []T
	for i, r := range a.records {
		if r["type"] != typ {
			continue
		}
		var v T
		if err := json.Unmarshal(a.raw[i], &v); err != nil {
			a.t.Fatalf("decode %s record: %v", typ, err)
		}
		out = append(out, v)
	}
	return out
}

// waitRecord waits until a record of type typ satisfying ok shows up.
func waitRecord[T any](a *agentProc, typ string, timeout time.Duration, ok func(T) bool) T {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range recordsOf[T](a, typ) {
			if ok(r) {
				return r
			}
		}
		select {
		case <-a.done:
			for _, r := range recordsOf[T](a, typ) {
				if ok(r) {
					return r
				}
			}
			a.t.Fatalf("agent exited without the awaited %s record\nstderr:\n%s", typ, a.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	var zero T
	a.t.Fatalf("no matching %s record after %s\nstderr:\n%s", typ, timeout, a.stderr.String())
	return zero
}

func (a *agentProc) bye() record.Bye {
	a.t.Helper()
	byes := recordsOf[record.Bye](a, record.TypeBye)
	if len(byes) != 1 {
		a.t.Fatalf("got %d bye records, want 1\nstderr:\n%s", len(byes), a.stderr.String())
	}
	return byes[0]
}

// svctraceRules returns the svctrace rules the namespace holds, in any
// backend or family.
func svctraceRules(t testing.TB, ns *netns) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(ns.ruleset(t), "\n") {
		if strings.Contains(l, "svctrace:") {
			out = append(out, l)
		}
	}
	return out
}

// onePacket waits for the agent to exit 0 and returns its one packet record.
func (a *agentProc) onePacket(timeout time.Duration) record.Packet {
	a.t.Helper()
	if code := a.wait(timeout); code != 0 {
		a.t.Fatalf("agent exit code %d, want 0\nstderr:\n%s", code, a.stderr.String())
	}
	pkts := recordsOf[record.Packet](a, record.TypePacket)
	if len(pkts) != 1 {
		a.t.Fatalf("got %d packets, want 1\nstderr:\n%s", len(pkts), a.stderr.String())
	}
	return pkts[0]
}
