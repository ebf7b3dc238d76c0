//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Env is the cluster under test, read once from the environment (see doc.go).
type Env struct {
	// Bin is the absolute path of the built kubectl-svctrace.
	Bin string
	// Kubeconfig is the cluster's kubeconfig file.
	Kubeconfig string
	// Exec prefixes commands that must run inside the cluster's network (node namespace).
	Exec []string
	// ExecExternal prefixes commands run by a client outside the cluster (gateway namespace).
	ExecExternal []string
	// ExecNode prefixes commands that must run on a given node (its network namespace on the
	// local cluster); its element "{node}" stands for the node's name. Empty: tests that need
	// it skip.
	ExecNode []string
	// Backend is kube-proxy's iptables backend: "nft" or "legacy" ("" when unknown).
	Backend string
	// ProxyMode is kube-proxy's mode: "iptables" or "nftables" ("" when unknown).
	ProxyMode string
	// KubectlBin is the kubectl command.
	KubectlBin string
}

// NodePlaceholder is the element of SVCTRACE_EXEC_NODE that stands for the node's name.
const NodePlaceholder = "{node}"

// PodBridge is the bridge the pods of a local-cluster node hang on (kube-router's CNI
// configuration): the address a node masquerades to towards its own pods.
const PodBridge = "kube-bridge"

// ManagedByLabel marks everything kubectl-svctrace creates in a cluster.
const ManagedByLabel = "app.kubernetes.io/managed-by=kubectl-svctrace"

// DefaultTimeout bounds every command a helper runs unless the caller's context is shorter.
const DefaultTimeout = 2 * time.Minute

var env Env

func TestMain(m *testing.M) {
	e, err := envFromOS(os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(2)
	}
	env = e
	os.Exit(m.Run())
}

// envFromOS reads the harness's variables; getenv is a seam for tests.
func envFromOS(getenv func(string) string) (Env, error) {
	e := Env{
		Bin:          getenv("SVCTRACE_BIN"),
		Kubeconfig:   getenv("KUBECONFIG"),
		Exec:         strings.Fields(getenv("SVCTRACE_EXEC")),
		ExecExternal: strings.Fields(getenv("SVCTRACE_EXEC_EXTERNAL")),
		ExecNode:     strings.Fields(getenv("SVCTRACE_EXEC_NODE")),
		Backend:      getenv("SVCTRACE_BACKEND"),
		ProxyMode:    getenv("SVCTRACE_PROXY_MODE"),
		KubectlBin:   getenv("SVCTRACE_KUBECTL"),
	}
	if e.Bin == "" || e.Kubeconfig == "" {
		return Env{}, errors.New("SVCTRACE_BIN and KUBECONFIG must be set: run the e2e tests with hack/e2e.sh (make e2e)")
	}
	if !filepath.IsAbs(e.Bin) {
		return Env{}, fmt.Errorf("SVCTRACE_BIN=%q must be an absolute path: the tests run it from other directories", e.Bin)
	}
	if _, err := os.Stat(e.Bin); err != nil {
		return Env{}, fmt.Errorf("SVCTRACE_BIN: %w: run make build", err)
	}
	switch e.Backend {
	case "", "nft", "legacy":
	default:
		return Env{}, fmt.Errorf("SVCTRACE_BACKEND=%q: want nft or legacy", e.Backend)
	}
	switch e.ProxyMode {
	case "", "iptables", "nftables":
	default:
		return Env{}, fmt.Errorf("SVCTRACE_PROXY_MODE=%q: want iptables or nftables", e.ProxyMode)
	}
	if len(e.ExecNode) > 0 && !slices.Contains(e.ExecNode, NodePlaceholder) {
		return Env{}, fmt.Errorf("SVCTRACE_EXEC_NODE=%q has no %s element for the node's name", strings.Join(e.ExecNode, " "), NodePlaceholder)
	}
	if e.KubectlBin == "" {
		e.KubectlBin = "kubectl"
	}
	return e, nil
}

// Result is what a finished command left behind.
type Result struct {
	Args     []string
	Stdout   string
	Stderr   string
	ExitCode int
}

// String describes the result for failure messages.
func (r Result) String() string {
	return fmt.Sprintf("$ %s\nexit code %d\n--- stdout\n%s\n--- stderr\n%s", strings.Join(r.Args, " "), r.ExitCode, r.Stdout, r.Stderr)
}

// Run runs prefix+args and returns its output and exit code. A non-zero exit is not a test
// failure (callers assert on it); a command that cannot start or times out is.
func Run(t testing.TB, prefix []string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), DefaultTimeout)
	defer cancel()
	return RunContext(ctx, t, prefix, args...)
}

// RunContext is Run with the caller's context.
func RunContext(ctx context.Context, t testing.TB, prefix []string, args ...string) Result {
	t.Helper()
	argv := append(append([]string{}, prefix...), args...)
	if len(argv) == 0 {
		t.Fatal("Run: no command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Args: argv, Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("command did not finish: %v\n%s", ctx.Err(), res)
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		t.Fatalf("start %q: %v", argv[0], err)
	}
	return res
}

// InCluster runs a command inside the cluster's network (the node namespace of the local
// cluster): ClusterIPs and the API server are reachable there.
func (e Env) InCluster(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, e.Exec, args...)
}

// NodePrefix is the command prefix that runs a command on node (see ExecNode).
func (e Env) NodePrefix(node string) []string {
	p := make([]string, len(e.ExecNode))
	for i, a := range e.ExecNode {
		if a == NodePlaceholder {
			a = node
		}
		p[i] = a
	}
	return p
}

// OnNode runs a command on the named node (in its network namespace on the local cluster);
// the test is skipped when commands cannot run on a chosen node.
func (e Env) OnNode(t testing.TB, node string, args ...string) Result {
	t.Helper()
	if len(e.ExecNode) == 0 {
		t.Skip("SVCTRACE_EXEC_NODE is not set: this test needs a shell on each node (the local cluster)")
	}
	return Run(t, e.NodePrefix(node), args...)
}

// RequireExec skips the test when commands cannot run inside the cluster's network.
func (e Env) RequireExec(t testing.TB) {
	t.Helper()
	if len(e.Exec) == 0 {
		t.Skip("SVCTRACE_EXEC is not set: this test needs a shell in the cluster's network (the local cluster)")
	}
}

// External runs a command on a client outside the cluster (the local cluster's gateway
// namespace, 10.199.0.1); the test is skipped when there is none.
func (e Env) External(t testing.TB, args ...string) Result {
	t.Helper()
	if len(e.ExecExternal) == 0 {
		t.Skip("SVCTRACE_EXEC_EXTERNAL is not set: no client outside the cluster")
	}
	return Run(t, e.ExecExternal, args...)
}

// Plugin runs the built kubectl-svctrace with args inside the cluster's network.
func (e Env) Plugin(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, e.Exec, append([]string{e.Bin}, args...)...)
}

// Kubectl runs kubectl and fails the test if it fails; it returns stdout.
func (e Env) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	res := e.TryKubectl(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("kubectl failed:\n%s", res)
	}
	return res.Stdout
}

// TryKubectl runs kubectl and returns its result whatever the exit code.
func (e Env) TryKubectl(t testing.TB, args ...string) Result {
	t.Helper()
	return Run(t, e.Exec, append([]string{e.KubectlBin}, args...)...)
}

// KubectlJSON runs `kubectl ARGS -o json` and decodes the output into v.
func (e Env) KubectlJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	out := e.Kubectl(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("decode kubectl %s output: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The subset of the Kubernetes objects the e2e tests read (decoded from kubectl's JSON, so
// the tests need no client library).

// ObjectMeta is metadata of any object.
type ObjectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	Labels            map[string]string `json:"labels"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp"`
}

// Pod is a core/v1 Pod.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase      string `json:"phase"`
		PodIP      string `json:"podIP"`
		HostIP     string `json:"hostIP"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
	} `json:"status"`
}

// Ready reports the pod's Ready condition.
func (p Pod) Ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// PodList is a list of pods.
type PodList struct {
	Items []Pod `json:"items"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name       string `json:"name"`
	Protocol   string `json:"protocol"`
	Port       int    `json:"port"`
	TargetPort any    `json:"targetPort"`
	NodePort   int    `json:"nodePort"`
}

// Service is a core/v1 Service.
type Service struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		Type                  string            `json:"type"`
		ClusterIP             string            `json:"clusterIP"`
		ExternalTrafficPolicy string            `json:"externalTrafficPolicy"`
		Selector              map[string]string `json:"selector"`
		Ports                 []ServicePort     `json:"ports"`
	} `json:"spec"`
	Status struct {
		LoadBalancer struct {
			Ingress []struct {
				IP string `json:"ip"`
			} `json:"ingress"`
		} `json:"loadBalancer"`
	} `json:"status"`
}

// Node is a node of the cluster under test.
type Node struct {
	Name       string
	InternalIP string
	PodCIDR    string
}

// Nodes lists the cluster's nodes, sorted by name (the local cluster's first node,
// svctrace-node, comes first).
func (e Env) Nodes(t testing.TB) []Node {
	t.Helper()
	var l struct {
		Items []struct {
			Metadata ObjectMeta `json:"metadata"`
			Spec     struct {
				PodCIDR string `json:"podCIDR"`
			} `json:"spec"`
			Status struct {
				Addresses []struct {
					Type    string `json:"type"`
					Address string `json:"address"`
				} `json:"addresses"`
			} `json:"status"`
		} `json:"items"`
	}
	e.KubectlJSON(t, &l, "get", "nodes")
	nodes := make([]Node, 0, len(l.Items))
	for _, it := range l.Items {
		n := Node{Name: it.Metadata.Name, PodCIDR: it.Spec.PodCIDR}
		for _, a := range it.Status.Addresses {
			if a.Type == "InternalIP" {
				n.InternalIP = a.Address
			}
		}
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes
}

// GetService reads a Service in the default namespace.
func (e Env) GetService(t testing.TB, name string) Service {
	t.Helper()
	var s Service
	e.KubectlJSON(t, &s, "get", "service", name, "-n", "default")
	return s
}

// ListPods lists pods matching a label selector in all namespaces.
func (e Env) ListPods(t testing.TB, selector string) []Pod {
	t.Helper()
	var l PodList
	e.KubectlJSON(t, &l, "get", "pods", "--all-namespaces", "-l", selector)
	return l.Items
}

// Eventually polls check until it returns nil or timeout passes, then fails with its last error.
func Eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || t.Context().Err() != nil {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(time.Second)
	}
}

// ruleDumps are the commands whose output must never show an svctrace rule after a run.
var ruleDumps = [][]string{
	{"iptables-legacy-save"},
	{"iptables-nft-save"},
	{"nft", "list", "ruleset"},
}

// AssertNoLeftovers fails unless, within a minute, no pod labelled
// app.kubernetes.io/managed-by=kubectl-svctrace remains and (when commands can run in the
// cluster's network) no iptables/nftables rule carries svctrace's comment.
func (e Env) AssertNoLeftovers(t testing.TB) {
	t.Helper()
	Eventually(t, time.Minute, "kubectl-svctrace pods left behind", func() error { return e.LeftoverPods(t) })
	if len(e.Exec) == 0 {
		t.Log("SVCTRACE_EXEC not set: not checking the node's rules for leftovers")
		return
	}
	Eventually(t, time.Minute, "svctrace rules left behind", func() error { return e.LeftoverRules(t) })
}

// CleanUpAfterKill, for a test that kills the plugin p and leaves cleanup to the agents: if
// the test fails, it logs what p printed and runs `kubectl svctrace cleanup`, so the tests
// after it do not inherit its pods and rules.
func (e Env) CleanUpAfterKill(t *testing.T, p *Process) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		stdout, stderr := p.Output()
		t.Logf("the killed plugin's stdout:\n%s\nits stderr:\n%s", stdout, stderr)
		t.Logf("kubectl svctrace cleanup:\n%s", e.Plugin(t, "cleanup"))
	})
}

// LeftoverPods says which pods labelled app.kubernetes.io/managed-by=kubectl-svctrace
// exist now (nil: none).
func (e Env) LeftoverPods(t testing.TB) error {
	t.Helper()
	pods := e.ListPods(t, ManagedByLabel)
	if len(pods) == 0 {
		return nil
	}
	names := make([]string, 0, len(pods))
	for _, p := range pods {
		names = append(names, p.Metadata.Namespace+"/"+p.Metadata.Name)
	}
	return fmt.Errorf("pods %s", strings.Join(names, ", "))
}

// LeftoverRules says which iptables/nftables rules carry svctrace's comment now, on every
// node when commands can run on each, else on the node Exec reaches (nil: none).
func (e Env) LeftoverRules(t testing.TB) error {
	t.Helper()
	prefixes := map[string][]string{"": e.Exec}
	if len(e.ExecNode) > 0 {
		prefixes = map[string][]string{}
		for _, n := range e.Nodes(t) {
			prefixes["node "+n.Name+": "] = e.NodePrefix(n.Name)
		}
	}
	var found []string
	for where, prefix := range prefixes {
		for _, dump := range ruleDumps {
			res := Run(t, prefix, dump...)
			if res.ExitCode != 0 {
				return fmt.Errorf("%s%s failed:\n%s", where, strings.Join(dump, " "), res)
			}
			for _, line := range strings.Split(res.Stdout, "\n") {
				// The comment every svctrace rule carries; kube-router's
				// comments name namespaces such as svctrace-np.
				if strings.Contains(strings.ToLower(line), "svctrace:") {
					found = append(found, where+strings.Join(dump, " ")+": "+line)
				}
			}
		}
	}
	slices.Sort(found)
	if len(found) > 0 {
		return errors.New(strings.Join(found, "\n"))
	}
	return nil
}

// Process is a command started in the background, e.g. a trace that waits for traffic.
type Process struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	// writes is when each write to stdout or stderr came, and where it
	// ended in its buffer; exited is when the process exited.
	writes []timedWrite
	exited time.Time
	result Result
}

type timedWrite struct {
	at     time.Time
	stdout bool
	end    int
}

// lockedWriter appends to a buffer under the process's lock.
type lockedWriter struct {
	p      *Process
	stdout bool
}

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	buf := &w.p.stderr
	if w.stdout {
		buf = &w.p.stdout
	}
	n, err := buf.Write(b)
	w.p.writes = append(w.p.writes, timedWrite{at: time.Now(), stdout: w.stdout, end: buf.Len()})
	return n, err
}

// OutputAt returns when the process first wrote substr on stdout or stderr (ok false: not
// yet).
func (p *Process) OutputAt(substr string) (at time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, stdout := range []bool{true, false} {
		buf := p.stderr.String()
		if stdout {
			buf = p.stdout.String()
		}
		i := strings.Index(buf, substr)
		if i < 0 {
			continue
		}
		for _, w := range p.writes {
			if w.stdout == stdout && w.end >= i+len(substr) && (!ok || w.at.Before(at)) {
				at, ok = w.at, true
				break
			}
		}
	}
	return at, ok
}

// ExitedAt is when the process exited (zero while it runs).
func (p *Process) ExitedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// StartPlugin starts the built binary with args inside the cluster's network and returns at
// once; the test's end kills it if it still runs.
func (e Env) StartPlugin(t testing.TB, args ...string) *Process {
	t.Helper()
	argv := append(append(append([]string{}, e.Exec...), e.Bin), args...)
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	p := &Process{cancel: cancel, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	// SIGINT first, like a user's Ctrl-C, so the plugin can clean up; SIGKILL 10 s later.
	p.cmd.Cancel = func() error { return p.cmd.Process.Signal(os.Interrupt) }
	p.cmd.WaitDelay = 10 * time.Second
	p.cmd.Stdout = lockedWriter{p, true}
	p.cmd.Stderr = lockedWriter{p, false}
	p.result.Args = argv
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	go func() {
		err := p.cmd.Wait()
		p.mu.Lock()
		p.exited = time.Now()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			p.result.ExitCode = exitErr.ExitCode()
		} else if err != nil {
			p.result.ExitCode = -1
			fmt.Fprintf(&p.stderr, "\n[e2e: wait: %v]", err)
		}
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		<-p.done
	})
	return p
}

// Output returns what the process wrote so far.
func (p *Process) Output() (stdout, stderr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String(), p.stderr.String()
}

// WaitForOutput waits until stdout or stderr contains substr, e.g. the plugin's readiness line.
func (p *Process) WaitForOutput(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		stdout, stderr := p.Output()
		if strings.Contains(stdout, substr) || strings.Contains(stderr, substr) {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("process exited before printing %q:\n%s", substr, p.Result())
		case <-deadline:
			t.Fatalf("no %q after %s:\n--- stdout\n%s\n--- stderr\n%s", substr, timeout, stdout, stderr)
		case <-tick.C:
		}
	}
}

// Stop interrupts the process (SIGINT) if it still runs.
func (p *Process) Stop() { p.cancel() }

// Wait waits for the process to exit, at most timeout (then it is interrupted), and returns
// its result.
func (p *Process) Wait(t testing.TB, timeout time.Duration) Result {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Stop()
		<-p.done
		t.Errorf("process still running after %s: interrupted it", timeout)
	}
	return p.Result()
}

// Result is the process's output and exit code (final once it exited).
func (p *Process) Result() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.result
	r.Stdout, r.Stderr = p.stdout.String(), p.stderr.String()
	return r
}

func TestEnvFromOS(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kubectl-svctrace")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		vars    map[string]string
		want    Env
		wantErr string
	}{
		{
			name: "local cluster",
			vars: map[string]string{
				"SVCTRACE_BIN": bin, "KUBECONFIG": "/k", "SVCTRACE_BACKEND": "legacy",
				"SVCTRACE_EXEC": "/r/hack/local-cluster.sh exec --", "SVCTRACE_EXEC_EXTERNAL": "/r/hack/local-cluster.sh exec-external --",
				"SVCTRACE_EXEC_NODE": "/r/hack/local-cluster.sh exec --node {node} --", "SVCTRACE_PROXY_MODE": "iptables",
			},
			want: Env{
				Bin: bin, Kubeconfig: "/k", Backend: "legacy", ProxyMode: "iptables", KubectlBin: "kubectl",
				Exec:         []string{"/r/hack/local-cluster.sh", "exec", "--"},
				ExecExternal: []string{"/r/hack/local-cluster.sh", "exec-external", "--"},
				ExecNode:     []string{"/r/hack/local-cluster.sh", "exec", "--node", "{node}", "--"},
			},
		},
		{
			name:    "unknown proxy mode",
			vars:    map[string]string{"SVCTRACE_BIN": bin, "KUBECONFIG": "/k", "SVCTRACE_PROXY_MODE": "ipvs"},
			wantErr: `SVCTRACE_PROXY_MODE="ipvs": want iptables or nftables`,
		},
		{
			name:    "node prefix without the node",
			vars:    map[string]string{"SVCTRACE_BIN": bin, "KUBECONFIG": "/k", "SVCTRACE_EXEC_NODE": "ssh --"},
			wantErr: `SVCTRACE_EXEC_NODE="ssh --" has no {node} element for the node's name`,
		},
		{
			name: "other cluster",
			vars: map[string]string{"SVCTRACE_BIN": bin, "KUBECONFIG": "/k", "SVCTRACE_KUBECTL": "/usr/bin/kubectl"},
			want: Env{Bin: bin, Kubeconfig: "/k", KubectlBin: "/usr/bin/kubectl"},
		},
		{
			name:    "no binary",
			vars:    map[string]string{"KUBECONFIG": "/k"},
			wantErr: "SVCTRACE_BIN and KUBECONFIG must be set: run the e2e tests with hack/e2e.sh (make e2e)",
		},
		{
			name:    "relative binary",
			vars:    map[string]string{"SVCTRACE_BIN": "_output/bin/kubectl-svctrace", "KUBECONFIG": "/k"},
			wantErr: `SVCTRACE_BIN="_output/bin/kubectl-svctrace" must be an absolute path: the tests run it from other directories`,
		},
		{
			name:    "unknown backend",
			vars:    map[string]string{"SVCTRACE_BIN": bin, "KUBECONFIG": "/k", "SVCTRACE_BACKEND": "ipvs"},
			wantErr: `SVCTRACE_BACKEND="ipvs": want nft or legacy`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envFromOS(func(k string) string { return tc.vars[k] })
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Env (-want +got):\n%s", diff)
			}
		})
	}
}
