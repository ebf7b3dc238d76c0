//go:build linux

package cmd

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/svctrace/kubectl-svctrace/pkg/agent"
)

func TestAgentOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    func(c *agent.Config)
		wantErr string
	}{
		{
			name: "the plugin's command line",
			args: []string{"--dst=10.96.173.227:80,[fd00::a]:80", "--nodeport=30080", "--proto=tcp", "--service=default/myapp/tcp", "--node=n1", "--duration=1m0s", "--stdin-watch", "--max-packets=1", "--probe"},
			want: func(c *agent.Config) {
				c.Dsts = []netip.AddrPort{netip.MustParseAddrPort("10.96.173.227:80"), netip.MustParseAddrPort("[fd00::a]:80")}
				c.NodePorts = []uint16{30080}
				c.Services = []agent.ServiceRef{{Namespace: "default", Name: "myapp", Proto: "tcp"}}
				c.Node = "n1"
				c.StdinWatch = true
				c.MaxPackets = 1
				c.Probe = true
			},
		},
		{
			name: "repeated --dst, source, rate, snapshot off",
			args: []string{"--dst=10.0.0.1:53", "--dst=10.0.0.2:53", "--proto=udp", "--rate=unlimited", "--source=nftrace", "--rules-snapshot=false", "--src=10.244.0.5", "--duration=0"},
			want: func(c *agent.Config) {
				c.Dsts = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"), netip.MustParseAddrPort("10.0.0.2:53")}
				c.Proto = "udp"
				c.Rate = agent.Rate{}
				c.Source = agent.SourceNftrace
				c.RulesSnapshot = false
				c.Src = netip.MustParsePrefix("10.244.0.5/32")
				c.Duration = 0
			},
		},
		{
			name: "--probe-from-ip implies --probe",
			args: []string{"--dst=10.96.0.10:80", "--probe-from-ip=10.244.0.7", "--src=10.244.0.7/32"},
			want: func(c *agent.Config) {
				c.Dsts = []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:80")}
				c.Probe = true
				c.ProbeFrom = netip.MustParseAddr("10.244.0.7")
				c.Src = netip.MustParsePrefix("10.244.0.7/32")
			},
		},
		{name: "bad --probe-from-ip", args: []string{"--dst=10.96.0.10:80", "--probe-from-ip=pod"}, wantErr: `invalid --probe-from-ip "pod": give the pod's IP address`},
		{name: "--probe-from-ip of another family", args: []string{"--dst=[fd00::a]:80", "--probe-from-ip=10.244.0.7"}, wantErr: "--probe-from-ip 10.244.0.7 is of another IP family than every --dst"},
		{name: "loopback --probe-from-ip", args: []string{"--dst=10.96.0.10:80", "--probe-from-ip=127.0.0.1"}, wantErr: "invalid --probe-from-ip 127.0.0.1: give the pod's IP"},
		{name: "cleanup", args: []string{"--cleanup", "--node=n1"}},
		{name: "cleanup with a destination", args: []string{"--cleanup", "--dst=10.0.0.1:80"}, wantErr: "--cleanup takes no --dst"},
		{name: "nothing to trace", args: []string{}, wantErr: "nothing to trace"},
		{name: "bad dst", args: []string{"--dst=10.0.0.1"}, wantErr: "invalid --dst"},
		{name: "bad nodeport", args: []string{"--nodeport=70000"}, wantErr: "ports go up to 65535"},
		{name: "bad src", args: []string{"--dst=10.0.0.1:80", "--src=banana"}, wantErr: "invalid --src"},
		{name: "bad rate", args: []string{"--dst=10.0.0.1:80", "--rate=fast"}, wantErr: "invalid rate"},
		{name: "bad service", args: []string{"--dst=10.0.0.1:80", "--service=myapp"}, wantErr: "invalid --service"},
		{name: "bad source", args: []string{"--dst=10.0.0.1:80", "--source=dmesg"}, wantErr: "invalid --source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewAgentOptions(genericiooptions.NewTestIOStreamsDiscard())
			fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("parse flags: %v", err)
			}
			err := o.Complete()
			if err == nil {
				err = o.Validate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Complete/Validate: %v", err)
			}
			if tt.want == nil {
				return
			}
			want := agent.DefaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(want, o.config, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b }), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}
