//go:build linux

package kernel

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRouteString(t *testing.T) {
	tests := []struct {
		rt   Route
		want string
	}{
		{Route{Type: unix.RTN_LOCAL, Dst: netip.MustParseAddr("10.0.1.12"), Dev: "lo"}, "local 10.0.1.12 dev lo"},
		{Route{Type: unix.RTN_UNICAST, Dst: netip.MustParseAddr("10.244.0.5"), Dev: "cni0", PrefSrc: netip.MustParseAddr("10.244.0.1")}, "10.244.0.5 dev cni0 src 10.244.0.1"},
		{Route{Type: unix.RTN_UNICAST, Dst: netip.MustParseAddr("1.2.3.4"), Gateway: netip.MustParseAddr("10.0.0.1"), Dev: "eth0"}, "1.2.3.4 via 10.0.0.1 dev eth0"},
		{Route{Type: unix.RTN_BLACKHOLE, Dst: netip.MustParseAddr("10.151.51.9")}, "blackhole 10.151.51.9"},
	}
	for _, tt := range tests {
		if got := tt.rt.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
