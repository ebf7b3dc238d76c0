package kube

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChooseNodesFollow(t *testing.T) {
	nodes := []NodeInfo{{Name: "n1", Ready: true}, {Name: "n2", Ready: true}, {Name: "n3", Ready: true}, {Name: "n4", Ready: false}}
	eps := []Endpoint{
		{IP: "10.244.1.2", Node: "n2", Ready: true}, {IP: "10.244.1.3", Node: "n2", Ready: true},
		{IP: "10.244.2.2", Node: "n3", Ready: true},
		{IP: "10.244.3.2", Node: "n4", Ready: true},  // NotReady node: left out
		{IP: "10.244.0.9", Node: "n1", Ready: false}, // not ready: n1 is no endpoint node
	}
	target := Target{Nodes: nodes, Endpoints: eps}
	tests := []struct {
		name      string
		opts      NodeOptions
		want      []NodeRole
		wantWhy   string
		wantError string
		probes    []string // the nodes that send the test connection
	}{
		{
			name:    "--node and the endpoint nodes",
			opts:    NodeOptions{Node: "n1", Follow: true},
			want:    []NodeRole{{Node: "n1", Roles: []string{RoleEntry}}, {Node: "n2", Roles: []string{RoleEndpoint}, Endpoints: 2}, {Node: "n3", Roles: []string{RoleEndpoint}, Endpoints: 1}},
			wantWhy: "on node n1 (--node), following the packets to the endpoints on n2, n3",
		},
		{
			name:   "--probe: the client node hosts endpoints itself and plays both parts",
			opts:   NodeOptions{Probe: true, Follow: true},
			want:   []NodeRole{{Node: "n2", Roles: []string{RoleClient, RoleEndpoint}, Endpoints: 2}, {Node: "n3", Roles: []string{RoleEndpoint}, Endpoints: 1}},
			probes: []string{"n2"},
		},
		{
			name:   "--from: the pod's node, then the endpoint nodes",
			opts:   NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "n1", IP: "10.244.0.7"}, Follow: true},
			want:   []NodeRole{{Node: "n1", Roles: []string{RoleClient}}, {Node: "n2", Roles: []string{RoleEndpoint}, Endpoints: 2}, {Node: "n3", Roles: []string{RoleEndpoint}, Endpoints: 1}},
			probes: []string{"n1"},
		},
		{
			name:    "the cap leaves endpoint nodes out and says which",
			opts:    NodeOptions{Node: "n1", Follow: true, MaxNodes: 2},
			want:    []NodeRole{{Node: "n1", Roles: []string{RoleEntry}}, {Node: "n2", Roles: []string{RoleEndpoint}, Endpoints: 2}},
			wantWhy: "; not following to n3 (--max-nodes 2)",
		},
		{
			name: "--no-follow: only the chosen node",
			opts: NodeOptions{Node: "n1"},
			want: []NodeRole{{Node: "n1", Roles: []string{RoleEntry}}},
		},
		{
			name:   "--all-nodes: every Ready node, endpoint counts shown; with --probe each probes",
			opts:   NodeOptions{AllNodes: true, Follow: true, Probe: true},
			want:   []NodeRole{{Node: "n1", Roles: []string{RoleAll}}, {Node: "n2", Roles: []string{RoleAll, RoleEndpoint}, Endpoints: 2}, {Node: "n3", Roles: []string{RoleAll, RoleEndpoint}, Endpoints: 1}},
			probes: []string{"n1", "n2", "n3"},
		},
		{
			name:      "--all-nodes above the cap",
			opts:      NodeOptions{AllNodes: true, MaxNodes: 2},
			wantError: "--all-nodes would start 3 agents, more than --max-nodes 2: raise --max-nodes, or pick nodes with --node",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChooseNodes(&target, tc.opts)
			if tc.wantError != "" {
				if err == nil || err.Error() != tc.wantError {
					t.Fatalf("error = %v, want %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got.Roles); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
			var names []string
			for _, r := range tc.want {
				names = append(names, r.Node)
			}
			if diff := cmp.Diff(names, got.Nodes); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
			if tc.probes != nil {
				var probes []string
				for _, n := range got.Nodes {
					if got.Probes(n) {
						probes = append(probes, n)
					}
				}
				if diff := cmp.Diff(tc.probes, probes); diff != "" {
					t.Errorf("probing nodes (-want +got):\n%s", diff)
				}
			}
			if !strings.Contains(got.Reason, tc.wantWhy) {
				t.Errorf("reason %q does not contain %q", got.Reason, tc.wantWhy)
			}
		})
	}
}

func TestChooseNodes(t *testing.T) {
	three := []NodeInfo{{Name: "a", Ready: true}, {Name: "b", Ready: true}, {Name: "c", Ready: false}}
	epOnB := []Endpoint{{IP: "10.244.1.2", Node: "b", Ready: true}, {IP: "10.244.2.2", Node: "c", Ready: true}}

	tests := []struct {
		name      string
		target    Target
		opts      NodeOptions
		want      []string
		wantWhy   string // substring of the reason
		wantError string // substring of the error
	}{
		{
			name:    "single Ready node by default",
			target:  Target{Nodes: []NodeInfo{{Name: "svctrace-node", Ready: true}}},
			want:    []string{"svctrace-node"},
			wantWhy: "the cluster's only Ready node",
		},
		{
			name:    "one Ready node among NotReady ones is the only choice",
			target:  Target{Nodes: []NodeInfo{{Name: "a", Ready: false}, {Name: "b", Ready: true}}},
			want:    []string{"b"},
			wantWhy: "only Ready node",
		},
		{
			name:      "several nodes without a choice ask for one",
			target:    Target{Nodes: three, Dst: []string{"10.96.0.1:80"}},
			wantError: "the cluster has 2 Ready nodes and a Service's packets are rewritten on the node where they enter (the client pod's node, or the node that receives NodePort/LoadBalancer traffic): pick it with --node (a, b), trace every node with --all-nodes, or let the agent send a test connection with --probe",
		},
		{
			name:    "--node",
			target:  Target{Nodes: three},
			opts:    NodeOptions{Node: "b"},
			want:    []string{"b"},
			wantWhy: "(--node)",
		},
		{
			name:      "--node that is NotReady",
			target:    Target{Nodes: three},
			opts:      NodeOptions{Node: "c"},
			wantError: `node "c" is NotReady, so the agent pod cannot run there: fix the node or pick a Ready one with --node (a, b)`,
		},
		{
			name:      "--node that does not exist",
			target:    Target{Nodes: three},
			opts:      NodeOptions{Node: "zz"},
			wantError: "node \"zz\" not found: list nodes with `kubectl get nodes`",
		},
		{
			name:      "--node with --all-nodes",
			target:    Target{Nodes: three},
			opts:      NodeOptions{Node: "a", AllNodes: true},
			wantError: "cannot be used together",
		},
		{
			name:    "--all-nodes skips NotReady nodes",
			target:  Target{Nodes: three},
			opts:    NodeOptions{AllNodes: true},
			want:    []string{"a", "b"},
			wantWhy: "on all 2 Ready nodes (--all-nodes); skipping NotReady c",
		},
		{
			name:    "--probe prefers a Ready node with an endpoint",
			target:  Target{Nodes: three, Endpoints: epOnB},
			opts:    NodeOptions{Probe: true},
			want:    []string{"b"},
			wantWhy: "it hosts an endpoint",
		},
		{
			name:    "--probe without endpoints takes the first Ready node",
			target:  Target{Nodes: three},
			opts:    NodeOptions{Probe: true},
			want:    []string{"a"},
			wantWhy: "no Ready node hosts an endpoint",
		},
		{
			name:    "externalTrafficPolicy Local goes where the endpoints are",
			target:  Target{Nodes: three, Endpoints: epOnB, ExternalLocal: true, Dst: []string{"10.96.0.1:80"}},
			want:    []string{"b"},
			wantWhy: "externalTrafficPolicy is Local",
		},
		{
			name:    "--from traces on the pod's node",
			target:  Target{Nodes: three, Endpoints: epOnB},
			opts:    NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "a", IP: "10.244.0.9"}, Probe: true},
			want:    []string{"a"},
			wantWhy: "on node a, where pod default/client runs (--from)",
		},
		{
			name:    "--from with the pod's own --node",
			target:  Target{Nodes: three},
			opts:    NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "b"}, Node: "b"},
			want:    []string{"b"},
			wantWhy: "(--from)",
		},
		{
			name:      "--from with another --node",
			target:    Target{Nodes: three},
			opts:      NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "a"}, Node: "b"},
			wantError: "--node b, but pod default/client runs on node a: drop --node (--from traces on the pod's node)",
		},
		{
			name:      "--from with --all-nodes",
			target:    Target{Nodes: three},
			opts:      NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "a"}, AllNodes: true},
			wantError: "--from and --all-nodes cannot be used together",
		},
		{
			name:      "--from a pod on a NotReady node",
			target:    Target{Nodes: three},
			opts:      NodeOptions{From: &FromPod{Namespace: "default", Name: "client", Node: "c"}},
			wantError: "node c of pod default/client is NotReady",
		},
		{
			name:      "no Ready node",
			target:    Target{Nodes: []NodeInfo{{Name: "c"}}},
			wantError: "no node is Ready (NotReady: c)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChooseNodes(&tc.target, tc.opts)
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("ChooseNodes() error = %v, want it to contain %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("ChooseNodes() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, got.Nodes); diff != "" {
				t.Errorf("ChooseNodes() nodes mismatch (-want +got):\n%s", diff)
			}
			if !strings.Contains(got.Reason, tc.wantWhy) {
				t.Errorf("ChooseNodes() reason = %q, want it to contain %q", got.Reason, tc.wantWhy)
			}
		})
	}
}
