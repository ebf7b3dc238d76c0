package record

import (
	"net/netip"
	"strings"
)

// Host returns the address part of a record address: "ip:port",
// "[ip6]:port" or a bare "ip".
func Host(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().String()
	}
	return strings.Trim(addr, "[]")
}
