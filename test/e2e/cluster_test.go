//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// These tests check the harness itself: the demo workload of hack/manifests is up and real
// traffic flows through kube-proxy the way svctrace will later explain it.

func TestDemoServices(t *testing.T) {
	type port struct {
		Name     string
		Protocol string
		Port     int
		NodePort int
	}
	type svc struct {
		Type                  string
		ExternalTrafficPolicy string
		Ports                 []port
	}
	tests := []struct {
		name string
		want svc
	}{
		{name: "myapp", want: svc{Type: "ClusterIP", Ports: []port{{Protocol: "TCP", Port: 80}}}},
		{name: "myapp-nodeport", want: svc{Type: "NodePort", ExternalTrafficPolicy: "Cluster", Ports: []port{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}}}},
		{name: "myapp-udp", want: svc{Type: "ClusterIP", Ports: []port{{Protocol: "UDP", Port: 5353}}}},
		{name: "noendpoints", want: svc{Type: "ClusterIP", Ports: []port{{Protocol: "TCP", Port: 80}}}},
		{name: "myapp-local", want: svc{Type: "NodePort", ExternalTrafficPolicy: "Local", Ports: []port{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30081}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := env.GetService(t, tc.name)
			got := svc{Type: s.Spec.Type, ExternalTrafficPolicy: s.Spec.ExternalTrafficPolicy}
			for _, p := range s.Spec.Ports {
				got.Ports = append(got.Ports, port{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("service %s (-want +got):\n%s", tc.name, diff)
			}
			if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == "None" {
				t.Errorf("service %s has no cluster IP", tc.name)
			}
		})
	}
}

func TestDemoPodsReady(t *testing.T) {
	tests := []struct {
		selector string
		want     int
	}{
		{selector: "app=myapp,release=canary", want: 3},
		{selector: "app=myapp-local", want: 1},
		{selector: "app=client", want: 1},
	}
	for _, tc := range tests {
		t.Run(tc.selector, func(t *testing.T) {
			var ready []string
			for _, p := range env.ListPods(t, tc.selector) {
				if p.Ready() && p.Metadata.DeletionTimestamp == nil {
					ready = append(ready, p.Metadata.Name)
				}
			}
			if len(ready) != tc.want {
				t.Errorf("%d ready pods for %s (%v), want %d: run hack/local-cluster.sh demo-apps",
					len(ready), tc.selector, ready, tc.want)
			}
		})
	}
}

// addr matches an IPv4 address in `ip -4 -o addr` output.
var inetRE = regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`)

// interfaceIPv4 returns the first IPv4 address of dev as seen by the runner.
func interfaceIPv4(t testing.TB, run func(testing.TB, ...string) Result, dev string) string {
	t.Helper()
	res := run(t, "ip", "-4", "-o", "addr", "show", "dev", dev)
	m := inetRE.FindStringSubmatch(res.Stdout)
	if res.ExitCode != 0 || m == nil {
		t.Fatalf("no IPv4 address on %s:\n%s", dev, res)
	}
	return m[1]
}

// serverLogRE matches the demo server's log line (hack/workload).
var serverLogRE = regexp.MustCompile(`^http client=(\S+):(\d+) method=(\S+) path=(\S+) server=(\S+)$`)

// servedBy parses "hello from POD" (the demo server's answer) and returns POD.
func servedBy(t testing.TB, body string) string {
	t.Helper()
	pod, ok := strings.CutPrefix(strings.TrimSpace(body), "hello from ")
	if !ok || pod == "" {
		t.Fatalf("unexpected answer %q: want \"hello from POD\"", body)
	}
	return pod
}

// clientSeenBy waits for the server pod's log line for path and returns the client address in it.
func clientSeenBy(t testing.TB, pod, path string) string {
	t.Helper()
	var client string
	Eventually(t, 30*time.Second, "request "+path+" in the log of pod "+pod, func() error {
		// Every container: the HTTP server is "myapp" in the myapp pods, "sourceip" in sourceip's.
		logs := env.Kubectl(t, "logs", "-n", "default", pod, "--all-containers")
		for _, line := range strings.Split(logs, "\n") {
			m := serverLogRE.FindStringSubmatch(strings.TrimSpace(line))
			if m != nil && m[4] == path {
				client = m[1]
				return nil
			}
		}
		return fmt.Errorf("no line with path=%s in:\n%s", path, logs)
	})
	return client
}

// masqueradeAddr is the source address node gives a masqueraded connection to pod: the
// address of its pod bridge (the interface towards the pod) when the pod runs there, its own
// (eth0's, the way to the pod's node) when the pod runs on another node.
func masqueradeAddr(t testing.TB, node Node, bridgeIP, pod string) string {
	t.Helper()
	var p Pod
	env.KubectlJSON(t, &p, "get", "pod", pod, "-n", "default")
	if p.Spec.NodeName == node.Name {
		return bridgeIP
	}
	return node.InternalIP
}

// curl fetches url and returns the body and the HTTP status (0 when no answer came).
func curl(t testing.TB, run func(testing.TB, ...string) Result, url string) (string, int, Result) {
	t.Helper()
	res := run(t, "curl", "-sS", "-m", "10", "-w", "\n%{http_code}", url)
	i := strings.LastIndex(res.Stdout, "\n")
	if i < 0 {
		return "", 0, res
	}
	code, err := strconv.Atoi(strings.TrimSpace(res.Stdout[i+1:]))
	if err != nil {
		t.Fatalf("no status code in curl output:\n%s", res)
	}
	return res.Stdout[:i], code, res
}

func TestTrafficFlows(t *testing.T) {
	env.RequireExec(t)
	myapp := env.GetService(t, "myapp").Spec.ClusterIP
	// Traffic enters the first node (the namespace env.Exec runs in, its NodePorts).
	node := env.Nodes(t)[0]
	nodeIP := node.InternalIP
	bridgeIP := interfaceIPv4(t, env.InCluster, PodBridge)
	clientPods := env.ListPods(t, "app=client")
	if len(clientPods) != 1 || clientPods[0].Status.PodIP == "" {
		t.Fatalf("want one client pod with an IP, got %+v: run hack/local-cluster.sh demo-apps", clientPods)
	}
	clientIP := clientPods[0].Status.PodIP

	inClientPod := func(t testing.TB, args ...string) Result {
		t.Helper()
		return env.TryKubectl(t, append([]string{"exec", "-n", "default", "client", "--"}, args...)...)
	}

	tests := []struct {
		name string
		// fetch sends GET path and returns the answer's body.
		fetch      func(t *testing.T, path string) string
		wantServer string // pod name prefix
		// wantClient is the source address the server pod must log.
		wantClient func(t *testing.T, pod string) string
	}{
		{
			name: "node to ClusterIP is masqueraded",
			fetch: func(t *testing.T, path string) string {
				body, code, res := curl(t, env.InCluster, "http://"+myapp+path)
				if code != 200 {
					t.Fatalf("want HTTP 200 from http://%s%s:\n%s", myapp, path, res)
				}
				return body
			},
			wantServer: "myapp-",
			wantClient: func(t *testing.T, pod string) string { return masqueradeAddr(t, node, bridgeIP, pod) },
		},
		{
			name: "client pod to ClusterIP keeps its address",
			fetch: func(t *testing.T, path string) string {
				// busybox wget crashes with -T: bound it with timeout instead.
				res := inClientPod(t, "timeout", "10", "wget", "-q", "-O", "-", "http://"+myapp+path)
				if res.ExitCode != 0 {
					t.Fatalf("wget from the client pod failed:\n%s", res)
				}
				return res.Stdout
			},
			wantServer: "myapp-",
			wantClient: func(*testing.T, string) string { return clientIP },
		},
		{
			name: "gateway to NodePort 30080 is masqueraded",
			fetch: func(t *testing.T, path string) string {
				body, code, res := curl(t, env.External, "http://"+nodeIP+":30080"+path)
				if code != 200 {
					t.Fatalf("want HTTP 200 from the NodePort:\n%s", res)
				}
				return body
			},
			wantServer: "myapp-",
			wantClient: func(t *testing.T, pod string) string { return masqueradeAddr(t, node, bridgeIP, pod) },
		},
		{
			name: "gateway to externalTrafficPolicy Local NodePort keeps its address",
			fetch: func(t *testing.T, path string) string {
				body, code, res := curl(t, env.External, "http://"+nodeIP+":30081"+path)
				if code != 200 {
					t.Fatalf("want HTTP 200 from the NodePort:\n%s", res)
				}
				return body
			},
			wantServer: "myapp-local-",
			wantClient: func(t *testing.T, _ string) string { return interfaceIPv4(t, env.External, "eth0") },
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := fmt.Sprintf("/e2e-%d-%d", time.Now().UnixNano(), i)
			pod := servedBy(t, tc.fetch(t, path))
			if !strings.HasPrefix(pod, tc.wantServer) {
				t.Errorf("served by %s, want a pod named %s*", pod, tc.wantServer)
			}
			if diff := cmp.Diff(tc.wantClient(t, pod), clientSeenBy(t, pod, path)); diff != "" {
				t.Errorf("client address logged by %s (-want +got):\n%s", pod, diff)
			}
		})
	}
}

func TestUDPEcho(t *testing.T) {
	env.RequireExec(t)
	udp := env.GetService(t, "myapp-udp").Spec.ClusterIP
	payload := fmt.Sprintf("svctrace-e2e-%d", time.Now().UnixNano())
	// bash's /dev/udp: one datagram out, one read of the reply.
	script := fmt.Sprintf(`exec 3<>/dev/udp/%s/5353 && printf %%s %q >&3 && timeout 10 dd bs=65535 count=1 status=none <&3`, udp, payload)
	res := env.InCluster(t, "bash", "-c", script)
	if res.ExitCode != 0 {
		t.Fatalf("no UDP echo from %s:5353:\n%s", udp, res)
	}
	if diff := cmp.Diff(payload, res.Stdout); diff != "" {
		t.Errorf("echo (-want +got):\n%s", diff)
	}
}

func TestServiceWithoutEndpointsRejects(t *testing.T) {
	env.RequireExec(t)
	ip := env.GetService(t, "noendpoints").Spec.ClusterIP
	_, code, res := curl(t, env.InCluster, "http://"+ip+"/")
	// kube-proxy REJECTs (icmp port unreachable): curl exit code 7, "Couldn't connect".
	if code != 0 || res.ExitCode != 7 {
		t.Errorf("want connection refused (curl exit 7) from %s:80:\n%s", ip, res)
	}
}

func TestNoLeftoversBeforePluginTests(t *testing.T) {
	env.AssertNoLeftovers(t)
}
