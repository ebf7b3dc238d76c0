package trace

import (
	"fmt"
	"strings"
)

// Format is the container a trace arrives in.
type Format int

const (
	// FormatAuto detects the format from the first recognisable line.
	FormatAuto Format = iota
	// FormatKmsg is /dev/kmsg: "PRI,SEQ,USEC,FLAGS[,caller=..];TRACE: ...".
	FormatKmsg
	// FormatDmesg is dmesg output: "[  12.345678] TRACE: ...".
	FormatDmesg
	// FormatKernLog is a syslog file (kern.log, messages):
	// "May  8 16:30:29 host kernel: [324781.838361] TRACE: ...".
	FormatKernLog
	// FormatBare is legacy TRACE lines with no container: "TRACE: ...".
	FormatBare
	// FormatXtablesMonitor is `xtables-monitor --trace` output (iptables-nft).
	FormatXtablesMonitor
	// FormatNftMonitor is `nft monitor trace` output.
	FormatNftMonitor
)

var formatNames = [...]string{
	FormatAuto:           "auto",
	FormatKmsg:           "kmsg",
	FormatDmesg:          "dmesg",
	FormatKernLog:        "kern.log",
	FormatBare:           "bare",
	FormatXtablesMonitor: "xtables-monitor",
	FormatNftMonitor:     "nft-monitor",
}

// FormatNames lists the names ParseFormat accepts, for flag help.
func FormatNames() []string {
	return append([]string(nil), formatNames[:]...)
}

// String returns the name ParseFormat accepts for f.
func (f Format) String() string {
	if f >= 0 && int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// ParseFormat turns a --format value into a Format.
func ParseFormat(s string) (Format, error) {
	for f, name := range formatNames {
		if strings.EqualFold(s, name) {
			return Format(f), nil
		}
	}
	return FormatAuto, fmt.Errorf("unknown trace format %q: use one of %s", s, strings.Join(formatNames[:], ", "))
}

// DetectFormat says which format line is in, or FormatAuto when the line
// says nothing (prose, blank lines, unrelated log lines of unknown shape).
// Kernel log containers are recognised from any record, TRACE or not, so
// that kmsg sequence numbers count from the first record.
func DetectFormat(line []byte) Format {
	line = trimEOL(line)
	switch {
	case hasPrefix(line, "trace id "):
		return FormatNftMonitor
	case hasPrefix(line, "PACKET: "):
		return FormatXtablesMonitor
	}
	if b := trimSpace(line); hasPrefix(b, "TRACE: ") {
		if isXtmonTrace(b[len("TRACE: "):]) {
			return FormatXtablesMonitor
		}
		if line[0] == 'T' && legacyIDOK(b[len("TRACE: "):]) {
			return FormatBare
		}
	}
	if _, _, _, ok := splitKmsg(line); ok {
		return FormatKmsg
	}
	if _, _, ok := splitDmesg(line); ok {
		return FormatDmesg
	}
	if _, _, ok := splitKernLog(line); ok {
		return FormatKernLog
	}
	return FormatAuto
}

// isXtmonTrace reports whether b (after "TRACE: ") starts with the
// xtables-monitor "FAMILY HEXID " pair rather than a legacy table:chain.
func isXtmonTrace(b []byte) bool {
	fam, i := nextField(b, 0)
	if _, ok := parseUint8(fam); !ok {
		return false
	}
	id, _ := nextField(b, i)
	_, ok := parseHex32(id)
	return ok && len(id) > 0
}

// legacyIDOK reports whether b (after "TRACE: ") starts with a plausible
// "table:chain:type:num" token.
func legacyIDOK(b []byte) bool {
	tok, _ := nextField(b, 0)
	_, _, _, _, ok := splitLegacyID(tok)
	return ok
}
