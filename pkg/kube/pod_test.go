package kube

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test ./pkg/kube -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// stampVersion sets pkg/version for the duration of a test.
func stampVersion(t *testing.T, v, image string) {
	t.Helper()
	oldV, oldI := version.Version, version.Image
	version.Version, version.Image = v, image
	t.Cleanup(func() { version.Version, version.Image = oldV, oldI })
}

func TestAgentPodGolden(t *testing.T) {
	stampVersion(t, "v0.1.0", "docker.io/library/svctrace-agent:v0.1.0")
	target := &Target{
		Namespace: "default", Name: "myapp-nodeport", Proto: "tcp",
		Dst:       []string{"10.96.0.50:80", "[fd00:10:96::50]:80"},
		NodePorts: []int32{30080},
		Services:  []string{"default/myapp-nodeport:http/tcp"},
	}
	tests := []struct {
		golden string
		opts   PodOptions
	}{
		{
			golden: "agent-pod.golden.yaml",
			opts: PodOptions{
				Namespace: "default", Node: "svctrace-node", Session: "x7k2q", Image: version.Image,
				Purpose: PurposeTrace, Target: target.DisplayName(), Stdin: true,
				Args: AgentArgs(target, "svctrace-node", AgentOptions{
					Duration: 60 * time.Second, MaxPackets: 1, Probe: true, Source: "auto",
				}),
				ActiveDeadline: 2*time.Minute + 60*time.Second + deadlineMargin,
			},
		},
		{
			golden: "cleanup-pod.golden.yaml",
			opts: PodOptions{
				Namespace: "kube-system", Node: "svctrace-node", Session: "x7k2q", Image: version.Image,
				Purpose: PurposeCleanup, Args: []string{"agent", "--cleanup", "--node=svctrace-node"},
				ActiveDeadline: 2*time.Minute + deadlineMargin,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			pod := AgentPod(tc.opts)
			// Pure: the same options give the same pod.
			if diff := cmp.Diff(pod, AgentPod(tc.opts)); diff != "" {
				t.Fatalf("AgentPod() is not deterministic (-first +second):\n%s", diff)
			}
			out, err := yaml.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, out)
		})
	}
}

func TestAgentArgs(t *testing.T) {
	target := &Target{
		Proto:     "udp",
		Dst:       []string{"10.96.0.10:53", "[fd00::a]:53"},
		NodePorts: []int32{30053, 30054},
		Services:  []string{"kube-system/kube-dns:dns/udp"},
	}
	tests := []struct {
		name string
		t    *Target
		o    AgentOptions
		want []string
	}{
		{
			name: "defaults",
			t:    target,
			o:    AgentOptions{Duration: time.Minute, Source: "auto"},
			want: []string{"agent", "--dst=10.96.0.10:53,[fd00::a]:53", "--nodeport=30053", "--nodeport=30054",
				"--proto=udp", "--service=kube-system/kube-dns:dns/udp", "--node=n1", "--duration=1m0s", "--stdin-watch", "--log-stdout"},
		},
		{
			name: "every option",
			t:    target,
			o:    AgentOptions{Duration: 90 * time.Second, MaxPackets: 3, Probe: true, AllPackets: true, Source: "kmsg"},
			want: []string{"agent", "--dst=10.96.0.10:53,[fd00::a]:53", "--nodeport=30053", "--nodeport=30054",
				"--proto=udp", "--service=kube-system/kube-dns:dns/udp", "--node=n1", "--duration=1m30s", "--stdin-watch", "--log-stdout",
				"--max-packets=3", "--probe", "--all-packets", "--source=kmsg"},
		},
		{
			name: "--probe nodeport: the NodePort on this node's address only",
			t: &Target{Proto: "tcp", Dst: []string{"10.96.0.10:80"}, NodePorts: []int32{30080}, Services: []string{"default/myapp/tcp"},
				Ports: []Port{{Port: 80, NodePort: 30080}}, ClusterIPs: []string{"10.96.0.10"}, Nodes: []NodeInfo{{Name: "n1", Addresses: []string{"10.199.0.2"}}}},
			o: AgentOptions{Duration: time.Minute, Probe: true, ProbeKind: ProbeNodePort},
			want: []string{"agent", "--dst=10.96.0.10:80", "--nodeport=30080", "--proto=tcp", "--service=default/myapp/tcp", "--node=n1",
				"--duration=1m0s", "--stdin-watch", "--log-stdout", "--probe", "--probe-to=10.199.0.2:30080"},
		},
		{
			name: "--from a pod: probe from its namespace, trace only its packets",
			t:    &Target{Proto: "tcp", Dst: []string{"10.96.0.10:80"}, Services: []string{"default/myapp/tcp"}},
			o:    AgentOptions{Duration: time.Minute, MaxPackets: 1, Probe: true, ProbeFromIP: "10.244.0.9"},
			want: []string{"agent", "--dst=10.96.0.10:80", "--proto=tcp", "--service=default/myapp/tcp", "--node=n1", "--duration=1m0s", "--stdin-watch", "--log-stdout",
				"--max-packets=1", "--probe", "--probe-from-ip=10.244.0.9", "--src=10.244.0.9"},
		},
		{
			name: "following: the endpoints on this node (target ports, hostNetwork ones at the node's address)",
			t: &Target{Proto: "tcp", Dst: []string{"10.96.0.10:80"}, Services: []string{"default/myapp/tcp"},
				Endpoints:          []Endpoint{{IP: "10.244.1.5", Node: "n1", Ready: true}, {IP: "10.199.0.2", Node: "n1", Ready: true}, {IP: "10.244.2.5", Node: "n2", Ready: true}, {IP: "10.244.1.9", Node: "n1"}},
				EndpointsByService: map[string][]string{"default/myapp": {"10.199.0.2:8080", "10.244.1.5:8080", "10.244.2.5:8080"}, "default/myapp:metrics": {"10.244.1.5:9090"}}},
			o: AgentOptions{Duration: time.Minute, TraceEndpoints: true},
			want: []string{"agent", "--dst=10.96.0.10:80", "--proto=tcp", "--service=default/myapp/tcp",
				"--endpoint=10.199.0.2:8080,10.244.1.5:8080,10.244.1.5:9090", "--node=n1", "--duration=1m0s", "--stdin-watch", "--log-stdout"},
		},
		{
			name: "a node the --from packet is followed to: no probe, only the pod's packets",
			t:    &Target{Proto: "tcp", Dst: []string{"10.96.0.10:80"}, Services: []string{"default/myapp/tcp"}},
			o:    AgentOptions{Duration: time.Minute, Src: "10.244.0.9"},
			want: []string{"agent", "--dst=10.96.0.10:80", "--proto=tcp", "--service=default/myapp/tcp", "--node=n1", "--duration=1m0s", "--stdin-watch", "--log-stdout", "--src=10.244.0.9"},
		},
		{
			name: "NodePort only (hostname load balancer), no --dst",
			t:    &Target{Proto: "tcp", NodePorts: []int32{30080}, Services: []string{"default/web/tcp"}},
			o:    AgentOptions{Duration: time.Minute},
			want: []string{"agent", "--nodeport=30080", "--proto=tcp", "--service=default/web/tcp", "--node=n1", "--duration=1m0s", "--stdin-watch", "--log-stdout"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, AgentArgs(tc.t, "n1", tc.o)); diff != "" {
				t.Errorf("AgentArgs() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPodName(t *testing.T) {
	tests := []struct {
		session, node, want string
	}{
		{"x7k2q", "svctrace-node", "svctrace-x7k2q-svctrace-node"},
		{"x7k2q", "Worker-1", "svctrace-x7k2q-worker-1"},
		// Cut to a 63-character DNS label without a trailing dash or dot.
		{"x7k2q", "ip-10-0-1-2.eu-west-1.compute.internal-with-a-very-long-suffix", "svctrace-x7k2q-ip-10-0-1-2.eu-west-1.compute.internal-with-a-ve"},
		{"x7k2q", strings.Repeat("a", 47) + "-b", "svctrace-x7k2q-" + strings.Repeat("a", 47)},
	}
	for _, tc := range tests {
		got := PodName(tc.session, tc.node)
		if got != tc.want {
			t.Errorf("PodName(%q, %q) = %q, want %q", tc.session, tc.node, got, tc.want)
		}
		if len(got) > 63 {
			t.Errorf("PodName(%q, %q) is %d characters long, want at most 63", tc.session, tc.node, len(got))
		}
	}
}
