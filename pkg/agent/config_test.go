//go:build linux

package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      string
		want    Rate
		wantErr string
	}{
		{in: "20/s", want: Rate{20, "second"}},
		{in: "20/second", want: Rate{20, "second"}},
		{in: "100", want: Rate{100, "second"}},
		{in: "5/m", want: Rate{5, "minute"}},
		{in: "3/hour", want: Rate{3, "hour"}},
		{in: "1/d", want: Rate{1, "day"}},
		{in: "unlimited", want: Rate{}},
		{in: "0", want: Rate{}},
		{in: "10000/s", want: Rate{10000, "second"}},
		{in: "10001/s", wantErr: "above the kernel's 10000/s maximum"},
		{in: "-1/s", wantErr: "invalid rate"},
		{in: "x/s", wantErr: "invalid rate"},
		{in: "5/week", wantErr: "invalid rate unit"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRate(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRate(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRate(%q) (-want +got):\n%s", tt.in, diff)
			}
			if back, err := ParseRate(got.String()); err != nil || back != got {
				t.Errorf("ParseRate(%q.String()=%q) = %v, %v; want the same rate back", tt.in, got.String(), back, err)
			}
		})
	}
}

func TestParseServiceRef(t *testing.T) {
	tests := []struct {
		in      string
		want    ServiceRef
		wantErr bool
	}{
		{in: "default/myapp/tcp", want: ServiceRef{Namespace: "default", Name: "myapp", Proto: "tcp"}},
		{in: "kube-system/kube-dns:dns/UDP", want: ServiceRef{Namespace: "kube-system", Name: "kube-dns", Port: "dns", Proto: "udp"}},
		{in: "default/myapp", wantErr: true},
		{in: "/myapp/tcp", wantErr: true},
		{in: "default/myapp/icmp", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseServiceRef(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseServiceRef(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseServiceRef(%q) (-want +got):\n%s", tt.in, diff)
			}
			if err == nil && !strings.EqualFold(got.String(), tt.in) {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestParseDsts(t *testing.T) {
	got, err := ParseDsts("10.96.0.10:53, [fd00::a]:443,[::ffff:10.0.0.1]:80")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("10.96.0.10:53"),
		netip.MustParseAddrPort("[fd00::a]:443"),
		netip.MustParseAddrPort("10.0.0.1:80"), // v4-mapped is traced as IPv4
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("ParseDsts (-want +got):\n%s", diff)
	}
	if _, err := ParseDsts("10.96.0.10"); err == nil {
		t.Error("ParseDsts without a port: want an error")
	}
}

func TestConfigValidate(t *testing.T) {
	dst := netip.MustParseAddrPort("10.96.0.10:80")
	base := func() Config {
		c := DefaultConfig()
		c.Dsts = []netip.AddrPort{dst}
		return c
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{name: "ok", mod: func(*Config) {}},
		{name: "nodeport only", mod: func(c *Config) { c.Dsts = nil; c.NodePorts = []uint16{30080} }},
		{name: "nothing", mod: func(c *Config) { c.Dsts = nil }, wantErr: "nothing to trace"},
		{name: "proto", mod: func(c *Config) { c.Proto = "icmp" }, wantErr: "invalid --proto"},
		{name: "duplicate dst", mod: func(c *Config) { c.Dsts = append(c.Dsts, dst) }, wantErr: "given twice"},
		{name: "port 0", mod: func(c *Config) { c.Dsts = []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:0")} }, wantErr: "port 0"},
		{name: "unspecified", mod: func(c *Config) { c.Dsts = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:80")} }, wantErr: "must be a Service"},
		{name: "src family", mod: func(c *Config) { c.Src = netip.MustParsePrefix("fd00::/8") }, wantErr: "another IP family"},
		{name: "src ok", mod: func(c *Config) { c.Src = netip.MustParsePrefix("10.244.0.0/16") }},
		{name: "negative duration", mod: func(c *Config) { c.Duration = -time.Second }, wantErr: "--duration"},
		{name: "negative count", mod: func(c *Config) { c.MaxPackets = -1 }, wantErr: "--max-packets"},
		{name: "source", mod: func(c *Config) { c.Source = "dmesg" }, wantErr: "invalid --source"},
		{name: "probe from a pod", mod: func(c *Config) { c.Probe = true; c.ProbeFrom = netip.MustParseAddr("10.244.0.7") }},
		{name: "probe from a pod to a NodePort", mod: func(c *Config) {
			c.Dsts, c.NodePorts, c.Probe, c.ProbeFrom = nil, []uint16{30080}, true, netip.MustParseAddr("10.244.0.7")
		}},
		{name: "probe a NodePort on the node's address", mod: func(c *Config) {
			c.Probe, c.ProbeTo = true, []netip.AddrPort{netip.MustParseAddrPort("10.199.0.2:30080")}
		}},
		{name: "probe-to without probe", mod: func(c *Config) { c.ProbeTo = []netip.AddrPort{netip.MustParseAddrPort("10.199.0.2:30080")} }, wantErr: "--probe-to needs --probe"},
		{name: "probe-to port 0", mod: func(c *Config) { c.Probe, c.ProbeTo = true, []netip.AddrPort{netip.MustParseAddrPort("10.199.0.2:0")} }, wantErr: "invalid --probe-to 10.199.0.2:0"},
		{name: "probe from without probe", mod: func(c *Config) { c.ProbeFrom = netip.MustParseAddr("10.244.0.7") }, wantErr: "--probe-from-ip 10.244.0.7 needs --probe"},
		{name: "probe from another family", mod: func(c *Config) { c.Probe = true; c.ProbeFrom = netip.MustParseAddr("fd00::7") }, wantErr: "another IP family than every --dst"},
		{name: "probe from unspecified", mod: func(c *Config) { c.Probe = true; c.ProbeFrom = netip.MustParseAddr("0.0.0.0") }, wantErr: "give the pod's IP"},
		{name: "kern.log without path", mod: func(c *Config) { c.Source = SourceKernLog; c.KernLogPath = "" }, wantErr: "--kern-log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
