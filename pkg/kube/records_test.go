package kube

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

func TestDecodeRecord(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    any
		wantOK  bool
		wantErr string
	}{
		{
			name:   "ready",
			line:   `{"type":"ready","node":"n1","session":"s1","version":"v0.1.0","backend":"nft","mode":"iptables","source":"nftrace","rules":["-A PREROUTING ..."]}`,
			want:   &record.Ready{Type: "ready", Node: "n1", Session: "s1", Version: "v0.1.0", Backend: "nft", Mode: "iptables", Source: "nftrace", Rules: []string{"-A PREROUTING ..."}},
			wantOK: true,
		},
		{
			name: "packet",
			line: `{"type":"packet","family":"ipv4","proto":"tcp","src":"10.199.0.2:40000","dst":"10.96.173.227:80","hops":[{"table":"nat","chain":"KUBE-SERVICES","kind":"rule","rule":1}],"nat":[],"verdict":"ACCEPT","verdict_hop":-1,"endpoint":"10.244.0.23:80"}`,
			want: &record.Packet{Type: "packet", Family: "ipv4", Proto: "tcp", Src: "10.199.0.2:40000", Dst: "10.96.173.227:80",
				Hops: []record.Hop{{Table: "nat", Chain: "KUBE-SERVICES", Kind: "rule", Rule: 1}}, NAT: []record.NAT{},
				Verdict: "ACCEPT", VerdictHop: -1, Endpoint: "10.244.0.23:80"},
			wantOK: true,
		},
		{
			name:   "lost",
			line:   `{"type":"lost","count":12,"where":"kmsg"}`,
			want:   &record.Lost{Type: "lost", Count: 12, Where: "kmsg"},
			wantOK: true,
		},
		{
			name:   "warning with surrounding spaces",
			line:   "  {\"type\":\"warning\",\"message\":\"rules moved\"}\r",
			want:   &record.Warning{Type: "warning", Message: "rules moved"},
			wantOK: true,
		},
		{
			name:   "bye",
			line:   `{"type":"bye","packets":2,"lost":0,"rules_removed":2,"reason":"stdin"}`,
			want:   &record.Bye{Type: "bye", Packets: 2, RulesRemoved: 2, Reason: "stdin"},
			wantOK: true,
		},
		{name: "agent log line", line: "svctrace agent: backend nft (kube-proxy iptables)"},
		{name: "empty line", line: ""},
		{name: "unknown record type from a newer agent", line: `{"type":"hello","x":1}`},
		{name: "truncated JSON", line: `{"type":"packet","src":`, wantErr: "garbled agent record"},
		{name: "wrong field type", line: `{"type":"lost","count":"many"}`, wantErr: "garbled lost record"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := decodeRecord([]byte(tc.line))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("decodeRecord() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeRecord() error = %v", err)
			}
			if ok != tc.wantOK {
				t.Fatalf("decodeRecord() ok = %v, want %v", ok, tc.wantOK)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decodeRecord() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAnnotate(t *testing.T) {
	target := &Target{
		PodByIP:       map[string]string{"10.244.0.23": "default/myapp-a", "fd00::23": "default/myapp-a", "10.244.1.5": "default/myapp-b"},
		ServiceByAddr: map[string]string{"10.96.173.227:80": "default/myapp"},
		Endpoints:     []Endpoint{{IP: "10.244.0.23", Node: "n1"}, {IP: "fd00::23", Node: "n1"}, {IP: "10.244.1.5", Node: "n2"}},
	}
	tests := []struct {
		name string
		in   record.Packet
		want record.Packet
	}{
		{
			name: "fills node, endpoint pod and service",
			in:   record.Packet{Dst: "10.96.173.227:80", Endpoint: "10.244.0.23:80"},
			want: record.Packet{Node: "n1", Dst: "10.96.173.227:80", Endpoint: "10.244.0.23:80", EndpointPod: "default/myapp-a", EndpointNode: "n1", Service: "default/myapp"},
		},
		{
			name: "caught arriving for an endpoint: the one it was addressed to",
			in:   record.Packet{Dst: "10.244.1.5:80", TracedBy: record.TracedEndpoint},
			want: record.Packet{Node: "n1", Dst: "10.244.1.5:80", TracedBy: record.TracedEndpoint, EndpointPod: "default/myapp-b", EndpointNode: "n2"},
		},
		{
			name: "keeps what the agent said",
			in:   record.Packet{Node: "other", Dst: "10.96.173.227:80", Service: "default/myapp:http", Endpoint: "10.244.0.23:80", EndpointPod: "x/y"},
			want: record.Packet{Node: "other", Dst: "10.96.173.227:80", Service: "default/myapp:http", Endpoint: "10.244.0.23:80", EndpointPod: "x/y", EndpointNode: "n1"},
		},
		{
			name: "IPv6 endpoint",
			in:   record.Packet{Dst: "[fd00::1]:80", Endpoint: "[fd00::23]:80"},
			want: record.Packet{Node: "n1", Dst: "[fd00::1]:80", Endpoint: "[fd00::23]:80", EndpointPod: "default/myapp-a", EndpointNode: "n1"},
		},
		{
			name: "unknown addresses stay unnamed",
			in:   record.Packet{Dst: "10.0.0.1:80", Endpoint: "10.9.9.9:80"},
			want: record.Packet{Node: "n1", Dst: "10.0.0.1:80", Endpoint: "10.9.9.9:80"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in
			annotate(&got, target, "n1")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("annotate() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckVersion(t *testing.T) {
	tests := []struct {
		client, agent string
		wantWarn      string
		wantErr       string
	}{
		{client: "v0.1.0", agent: "v0.1.0"},
		{client: "dev", agent: "dev"},
		{client: "v0.1.0", agent: "v0.2.0", wantWarn: "runs svctrace v0.2.0 but this plugin is v0.1.0"},
		{client: "v0.1.0", agent: "dev", wantWarn: "runs svctrace dev but this plugin is v0.1.0"},
		{client: "v0.1.0", agent: "", wantWarn: "did not report its version"},
		{client: "v1.0.0", agent: "v0.9.0", wantErr: "runs svctrace v0.9.0 but this plugin is v1.0.0: their record formats differ; pass a matching image with --image"},
	}
	for _, tc := range tests {
		t.Run(tc.client+"/"+tc.agent, func(t *testing.T) {
			stampVersion(t, tc.client, "img")
			warn, err := checkVersion(tc.agent, "img")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("checkVersion() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("checkVersion() error = %v", err)
			}
			if (tc.wantWarn == "") != (warn == "") || !strings.Contains(warn, tc.wantWarn) {
				t.Errorf("checkVersion() warning = %q, want %q", warn, tc.wantWarn)
			}
		})
	}
}
