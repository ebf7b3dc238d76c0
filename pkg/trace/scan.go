package trace

import (
	"net/netip"
	"time"
)

// Hand-written scanners for the decoders' hot path: they work on byte slices
// in place and never allocate (strconv and netip.ParseAddr take strings).

// parseUint parses an unsigned decimal number; ok is false for an empty
// slice, a non-digit or an overflow.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	if len(b) < 20 {
		// Up to 19 digits cannot overflow: no per-digit check.
		for _, c := range b {
			d := uint64(c - '0')
			if d > 9 {
				return 0, false
			}
			n = n*10 + d
		}
		return n, true
	}
	for _, c := range b {
		d := uint64(c - '0')
		if d > 9 {
			return 0, false
		}
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func parseUint32(b []byte) (uint32, bool) {
	n, ok := parseUint(b)
	if !ok || n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

func parseUint16(b []byte) (uint16, bool) {
	n, ok := parseUint(b)
	if !ok || n > 1<<16-1 {
		return 0, false
	}
	return uint16(n), true
}

func parseUint8(b []byte) (uint8, bool) {
	n, ok := parseUint(b)
	if !ok || n > 1<<8-1 {
		return 0, false
	}
	return uint8(n), true
}

// hexVal returns the value of one hex digit, or 0xff.
func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10
	}
	return 0xff
}

// parseHex parses a hexadecimal number with an optional 0x prefix.
func parseHex(b []byte) (uint64, bool) {
	if len(b) > 2 && b[0] == '0' && (b[1] == 'x' || b[1] == 'X') {
		b = b[2:]
	}
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		v := hexVal(c)
		if v == 0xff {
			return 0, false
		}
		n = n<<4 | uint64(v)
	}
	return n, true
}

func parseHex32(b []byte) (uint32, bool) {
	n, ok := parseHex(b)
	if !ok || n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}

// parseIPv4 parses dotted-quad IPv4 ("10.0.0.1").
func parseIPv4(b []byte) (netip.Addr, bool) {
	var a [4]byte
	i := 0
	for k := 0; k < 4; k++ {
		if k > 0 {
			if i >= len(b) || b[i] != '.' {
				return netip.Addr{}, false
			}
			i++
		}
		start := i
		v := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' && i-start < 3 {
			v = v*10 + int(b[i]-'0')
			i++
		}
		if i == start || v > 255 {
			return netip.Addr{}, false
		}
		a[k] = byte(v)
	}
	if i != len(b) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(a), true
}

// parseIPv6 parses an IPv6 address: the kernel's uncompressed form
// ("2001:0db8:0000:...") and the compressed "::" forms. Forms with an
// embedded IPv4 suffix are rare enough to go through netip (which allocates).
func parseIPv6(b []byte) (netip.Addr, bool) {
	var a [16]byte
	ellipsis := -1 // byte offset in a where "::" was
	i, n := 0, 0   // i: offset in b, n: bytes filled in a
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis = 0
		i = 2
		if i == len(b) {
			return netip.AddrFrom16(a), true
		}
	}
	for i < len(b) {
		if n == 16 {
			return netip.Addr{}, false
		}
		start := i
		var v uint32
		for i < len(b) && i-start < 4 {
			h := hexVal(b[i])
			if h == 0xff {
				break
			}
			v = v<<4 | uint32(h)
			i++
		}
		if i == start {
			return netip.Addr{}, false
		}
		if i < len(b) && b[i] == '.' {
			p, err := netip.ParseAddr(string(b))
			if err != nil || !p.Is6() {
				return netip.Addr{}, false
			}
			return p, true
		}
		a[n], a[n+1] = byte(v>>8), byte(v)
		n += 2
		if i == len(b) {
			break
		}
		if b[i] != ':' {
			return netip.Addr{}, false
		}
		i++
		if i < len(b) && b[i] == ':' {
			if ellipsis >= 0 {
				return netip.Addr{}, false
			}
			ellipsis = n
			i++
			if i == len(b) {
				break
			}
		} else if i == len(b) {
			return netip.Addr{}, false
		}
	}
	if n < 16 {
		if ellipsis < 0 {
			return netip.Addr{}, false
		}
		gap := 16 - n
		copy(a[ellipsis+gap:], a[ellipsis:n])
		for k := ellipsis; k < ellipsis+gap; k++ {
			a[k] = 0
		}
	} else if ellipsis >= 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16(a), true
}

// parseAddr parses an IPv4 or IPv6 address.
func parseAddr(b []byte) (netip.Addr, bool) {
	for _, c := range b {
		if c == ':' {
			return parseIPv6(b)
		}
		if c == '.' {
			break
		}
	}
	return parseIPv4(b)
}

// parseSeconds parses "12345.678901" (seconds and a fraction of up to nine
// digits) into a Duration.
func parseSeconds(b []byte) (time.Duration, bool) {
	dot := -1
	for i, c := range b {
		if c == '.' {
			dot = i
			break
		}
	}
	whole := b
	var frac []byte
	if dot >= 0 {
		whole, frac = b[:dot], b[dot+1:]
	}
	s, ok := parseUint(whole)
	if !ok || s > uint64(1<<63-1)/uint64(time.Second) {
		return 0, false
	}
	if len(frac) > 9 {
		frac = frac[:9]
	}
	var ns uint64
	for _, c := range frac {
		d := uint64(c - '0')
		if d > 9 {
			return 0, false
		}
		ns = ns*10 + d
	}
	for k := len(frac); k < 9; k++ {
		ns *= 10
	}
	return time.Duration(s)*time.Second + time.Duration(ns), true
}

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// trimEOL drops a trailing "\n" or "\r\n".
func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

// nextField returns the next space-separated token of b starting at i and
// the offset just after it; tok is empty at the end of b.
func nextField(b []byte, i int) (tok []byte, next int) {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' {
		j++
	}
	return b[i:j], j
}
