//go:build linux

package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Source names accepted by --source.
const (
	SourceAuto    = "auto"
	SourceKmsg    = "kmsg"
	SourceKernLog = "kern.log"
	SourceNftrace = "nftrace"
)

// defaultKernLogPath is where Debian-like syslog daemons write kernel messages.
const defaultKernLogPath = "/var/log/kern.log"

// Rate is a TRACE rule rate limit: at most N packets per Per ("second",
// "minute", "hour" or "day"), with a burst of N. The zero Rate is unlimited.
type Rate struct {
	N   int
	Per string
}

// defaultRate keeps a busy Service from flooding the kernel log: 20 new
// connections per second are plenty to see the path.
var defaultRate = Rate{N: 20, Per: "second"}

// Unlimited reports whether r sets no limit.
func (r Rate) Unlimited() bool { return r.N == 0 }

// String returns the form ParseRate accepts ("20/second", "unlimited").
func (r Rate) String() string {
	if r.Unlimited() {
		return "unlimited"
	}
	return strconv.Itoa(r.N) + "/" + r.Per
}

// ParseRate parses "20/s", "100/second", "5/m", "unlimited".
func ParseRate(s string) (Rate, error) {
	if s == "unlimited" || s == "0" {
		return Rate{}, nil
	}
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		unit = "second"
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("invalid rate %q: want N/s, N/m, N/h, N/d or unlimited", s)
	}
	var per string
	switch unit {
	case "s", "sec", "second":
		per = "second"
	case "m", "min", "minute":
		per = "minute"
	case "h", "hour":
		per = "hour"
	case "d", "day":
		per = "day"
	default:
		return Rate{}, fmt.Errorf("invalid rate unit in %q: use s, m, h or d (or unlimited)", s)
	}
	// The kernel's limit match cannot express more than 10000 per second
	// (XT_LIMIT_SCALE); above that, no limit is the honest setting.
	if per == "second" && n > 10000 {
		return Rate{}, fmt.Errorf("rate %q is above the kernel's 10000/s maximum: use --rate unlimited", s)
	}
	return Rate{N: n, Per: per}, nil
}

// ServiceRef names one Service port the plugin traces: NS/NAME[:PORTNAME]/PROTO.
// It lets the agent map kube-proxy chains to Services by their name hashes
// even when kube-proxy dropped the rule comments (more than 1000 endpoints).
type ServiceRef struct {
	Namespace, Name string
	Port            string // port name, "" for an unnamed port
	Proto           string // tcp | udp | sctp
}

// String returns the NS/NAME[:PORTNAME]/PROTO form.
func (s ServiceRef) String() string {
	n := s.Namespace + "/" + s.Name
	if s.Port != "" {
		n += ":" + s.Port
	}
	return n + "/" + s.Proto
}

// ParseServiceRef parses NS/NAME[:PORTNAME]/PROTO.
func ParseServiceRef(s string) (ServiceRef, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return ServiceRef{}, fmt.Errorf("invalid --service %q: want NAMESPACE/NAME[:PORTNAME]/PROTO", s)
	}
	name, port, _ := strings.Cut(parts[1], ":")
	proto := strings.ToLower(parts[2])
	if !validProto(proto) {
		return ServiceRef{}, fmt.Errorf("invalid protocol in --service %q: use tcp, udp or sctp", s)
	}
	return ServiceRef{Namespace: parts[0], Name: name, Port: port, Proto: proto}, nil
}

func validProto(p string) bool { return p == "tcp" || p == "udp" || p == "sctp" }

// ParseDsts parses a comma-separated IP:PORT list ("10.96.0.10:53,[fd00::a]:53").
func ParseDsts(s string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(f)
		if err != nil {
			return nil, fmt.Errorf("invalid --dst %q: want IP:PORT (IPv6 as [IP]:PORT): %w", f, err)
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return out, nil
}

// Config is everything one agent session needs; the agent command fills it
// from flags.
type Config struct {
	// Dsts are the Service addresses to trace (ClusterIPs, LB IPs, external
	// IPs, or endpoint IPs for headless Services).
	Dsts []netip.AddrPort
	// NodePorts are traced on every local address of the node.
	NodePorts []uint16
	// Endpoints are the Service's endpoints on this node (IP and target
	// port): packets arriving for them are traced in PREROUTING, where a
	// packet DNATed on another node (or sent to the pod directly) enters.
	Endpoints []netip.AddrPort
	// Src limits tracing to packets from this prefix (zero: any source).
	Src netip.Prefix
	// Proto is tcp, udp or sctp.
	Proto string
	// Duration ends the session (0: until a signal, stdin EOF or MaxPackets).
	Duration time.Duration
	// MaxPackets ends the session after that many packet records (0: no limit).
	MaxPackets int
	// AllPackets traces every packet, not only connection-opening ones.
	AllPackets bool
	// Rate limits TRACE matches (the zero Rate is unlimited).
	Rate Rate
	// Source is auto, kmsg, kern.log or nftrace.
	Source string
	// KernLogPath is the syslog file for Source kern.log.
	KernLogPath string
	// RulesSnapshot annotates hops with rule text from a ruleset snapshot.
	RulesSnapshot bool
	// StdinWatch ends the session when stdin reaches EOF (the plugin is
	// gone), and answers the first line on stdin with an Attached record.
	StdinWatch bool
	// LogStdout writes the log lines to stdout between the records, not to
	// stderr. The plugin reads pods/log, where the runtime merges both
	// streams: it splits a record longer than its line limit (16 KiB in
	// containerd), and a stderr line written meanwhile lands inside it.
	LogStdout bool
	// Probe opens one connection to each traced address once ready (to
	// each of ProbeTo when given).
	Probe bool
	// ProbeWhenTold holds the probe back until the line "probe" arrives
	// on stdin: the plugin sends it once the agents of every node the
	// packet is followed to are ready, so they trace it too.
	ProbeWhenTold bool
	// ProbeTo are the addresses Probe connects to: the plugin picks the
	// Service's cluster IP, a NodePort on this node's address or a
	// load-balancer IP. Empty: every Dst and every NodePort.
	ProbeTo []netip.AddrPort
	// ProbeFrom, when valid, makes Probe connect from inside the network
	// namespace (found among the node's processes) that has this address:
	// a pod's IP.
	ProbeFrom netip.Addr
	// Node is the node name put in every record.
	Node string
	// Services are the Service ports being traced (chain-hash mapping).
	Services []ServiceRef
	// Quiet is the grouper's quiet window (0: 100ms).
	Quiet time.Duration
	// WatchInterval is how often the ruleset and the TRACE rules are checked
	// (0: 3s).
	WatchInterval time.Duration
	// NetlinkRcvBuf is the nftables trace socket's receive buffer in bytes
	// (0: 32 MiB).
	NetlinkRcvBuf int
}

// DefaultConfig returns a Config with the command's defaults.
func DefaultConfig() Config {
	return Config{
		Proto:         "tcp",
		Duration:      60 * time.Second,
		Rate:          defaultRate,
		Source:        SourceAuto,
		KernLogPath:   defaultKernLogPath,
		RulesSnapshot: true,
	}
}

// Validate checks a Config without touching the host.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Dsts) == 0 && len(c.NodePorts) == 0 {
		errs = append(errs, errors.New("nothing to trace: give --dst IP:PORT and/or --nodeport PORT"))
	}
	if !validProto(c.Proto) {
		errs = append(errs, fmt.Errorf("invalid --proto %q: use tcp, udp or sctp", c.Proto))
	}
	seen := map[netip.AddrPort]bool{}
	for _, d := range c.Dsts {
		switch {
		case !d.Addr().IsValid() || d.Addr().IsUnspecified():
			errs = append(errs, fmt.Errorf("invalid --dst %s: the address must be a Service or endpoint IP", d))
		case d.Port() == 0:
			errs = append(errs, fmt.Errorf("invalid --dst %s: port 0 cannot be traced", d))
		case seen[d]:
			errs = append(errs, fmt.Errorf("--dst %s given twice", d))
		}
		seen[d] = true
	}
	for _, p := range c.NodePorts {
		if p == 0 {
			errs = append(errs, errors.New("invalid --nodeport 0"))
		}
	}
	errs = append(errs, c.validateEndpoints()...)
	if c.Src.IsValid() {
		ok := len(c.NodePorts) > 0 && c.Src.Addr().Is4()
		for _, d := range c.Dsts {
			if d.Addr().Is4() == c.Src.Addr().Is4() {
				ok = true
			}
		}
		if !ok {
			errs = append(errs, fmt.Errorf("--src %s is of another IP family than every --dst: nothing would match", c.Src))
		}
	}
	if c.ProbeFrom.IsValid() {
		a := c.ProbeFrom.Unmap()
		ok := len(c.NodePorts) > 0 && a.Is4()
		for _, d := range c.Dsts {
			if d.Addr().Is4() == a.Is4() {
				ok = true
			}
		}
		switch {
		case !c.Probe:
			errs = append(errs, fmt.Errorf("--probe-from-ip %s needs --probe", a))
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast():
			errs = append(errs, fmt.Errorf("invalid --probe-from-ip %s: give the pod's IP", a))
		case !ok:
			errs = append(errs, fmt.Errorf("--probe-from-ip %s is of another IP family than every --dst: it could connect to none of them", a))
		}
	}
	if c.ProbeWhenTold && (!c.Probe || !c.StdinWatch) {
		errs = append(errs, errors.New("--probe-when-told needs --probe and --stdin-watch"))
	}
	if len(c.ProbeTo) > 0 && !c.Probe {
		errs = append(errs, errors.New("--probe-to needs --probe"))
	}
	for _, d := range c.ProbeTo {
		if !d.Addr().IsValid() || d.Addr().IsUnspecified() || d.Port() == 0 {
			errs = append(errs, fmt.Errorf("invalid --probe-to %s: give the IP:PORT to connect to", d))
		}
	}
	if c.Duration < 0 {
		errs = append(errs, fmt.Errorf("invalid --duration %s: must not be negative", c.Duration))
	}
	if c.NetlinkRcvBuf < 0 {
		errs = append(errs, fmt.Errorf("invalid --netlink-rcvbuf %d: must not be negative", c.NetlinkRcvBuf))
	}
	if c.WatchInterval < 0 {
		errs = append(errs, fmt.Errorf("invalid --watch-interval %s: must not be negative", c.WatchInterval))
	}
	if c.MaxPackets < 0 {
		errs = append(errs, fmt.Errorf("invalid --max-packets %d: must not be negative", c.MaxPackets))
	}
	switch c.Source {
	case SourceAuto, SourceKmsg, SourceNftrace:
	case SourceKernLog:
		if c.KernLogPath == "" {
			errs = append(errs, errors.New("--source kern.log needs --kern-log PATH"))
		}
	default:
		errs = append(errs, fmt.Errorf("invalid --source %q: use auto, kmsg, kern.log or nftrace", c.Source))
	}
	for _, s := range c.Services {
		if !validProto(s.Proto) {
			errs = append(errs, fmt.Errorf("invalid protocol in --service %s", s))
		}
	}
	return errors.Join(errs...)
}

// families returns the IP families (4, 6) of the traced destinations.
func (c *Config) families() (v4, v6 bool) {
	for _, d := range c.Dsts {
		if d.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	if len(c.NodePorts) > 0 {
		v4 = true
	}
	return v4, v6
}
