//go:build linux

package cmd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/svctrace/kubectl-svctrace/pkg/agent"
)

// AgentOptions are the flags of the hidden `agent` subcommand: the process
// that runs on the node inside the privileged agent pod.
type AgentOptions struct {
	genericiooptions.IOStreams

	Dsts          []string
	Endpoints     []string
	NodePorts     []uint
	Src           string
	Proto         string
	Duration      time.Duration
	MaxPackets    int
	AllPackets    bool
	Rate          string
	Source        string
	KernLog       string
	RulesSnapshot bool
	StdinWatch    bool
	LogStdout     bool
	ProbeWhenTold bool
	Probe         bool
	ProbeTo       []string
	ProbeFromIP   string
	Node          string
	Services      []string
	Cleanup       bool
	NetlinkRcvBuf int
	WatchInterval time.Duration

	// Set by Complete.
	config agent.Config
}

// NewAgentOptions returns the options with their defaults.
func NewAgentOptions(streams genericiooptions.IOStreams) *AgentOptions {
	d := agent.DefaultConfig()
	return &AgentOptions{
		IOStreams:     streams,
		Proto:         d.Proto,
		Duration:      d.Duration,
		Rate:          d.Rate.String(),
		Source:        d.Source,
		KernLog:       d.KernLogPath,
		RulesSnapshot: d.RulesSnapshot,
	}
}

// NewCmdAgent returns the hidden `agent` command.
func NewCmdAgent(streams genericiooptions.IOStreams) *cobra.Command {
	o := NewAgentOptions(streams)
	cmd := &cobra.Command{
		Use:    "agent --dst IP:PORT[,IP:PORT...] [--nodeport PORT]... | agent --cleanup",
		Short:  "Node side of svctrace: add TRACE rules, stream traced packets as NDJSON (runs in the agent pod)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			ctx := c.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return o.Run(ctx)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// AddFlags registers the agent's flags.
func (o *AgentOptions) AddFlags(f *pflag.FlagSet) {
	f.StringSliceVar(&o.Dsts, "dst", nil, "destinations to trace, IP:PORT ([IPv6]:PORT), comma-separated or repeated")
	f.UintSliceVar(&o.NodePorts, "nodeport", nil, "NodePort to trace on every local address (repeatable)")
	f.StringSliceVar(&o.Endpoints, "endpoint", nil, "endpoints on this node to trace packets arriving for, IP:PORT (the target port), comma-separated or repeated: packets DNATed on another node arrive addressed to them")
	f.StringVar(&o.Src, "src", "", "trace only packets from this CIDR")
	f.StringVar(&o.Proto, "proto", o.Proto, "protocol: tcp, udp or sctp")
	f.DurationVar(&o.Duration, "duration", o.Duration, "stop after this long (0: until a signal or stdin EOF)")
	f.IntVar(&o.MaxPackets, "max-packets", 0, "stop after this many packets (0: no limit)")
	f.BoolVar(&o.AllPackets, "all-packets", false, "trace every packet, not only connection-opening ones")
	f.StringVar(&o.Rate, "rate", o.Rate, "TRACE rate limit: N/s, N/m, N/h, N/d or unlimited")
	f.StringVar(&o.Source, "source", o.Source, "trace source: auto, kmsg, kern.log or nftrace")
	f.StringVar(&o.KernLog, "kern-log", o.KernLog, "syslog file with kernel messages, for --source kern.log")
	f.BoolVar(&o.RulesSnapshot, "rules-snapshot", o.RulesSnapshot, "snapshot the ruleset to annotate hops with rule text (--rules-snapshot=false: numbers and handles only)")
	f.BoolVar(&o.StdinWatch, "stdin-watch", false, "stop when stdin reaches EOF (the plugin is gone); answer the first line on stdin with an \"attached\" record")
	f.BoolVar(&o.LogStdout, "log-stdout", false, "write the log lines to stdout between the records, not to stderr (one stream: the container runtime splits long lines, and a stderr line would land inside a record)")
	f.BoolVar(&o.Probe, "probe", false, "once ready, open one connection to each traced address")
	f.BoolVar(&o.ProbeWhenTold, "probe-when-told", false, "with --probe and --stdin-watch: connect only once the line \"probe\" arrives on stdin (the plugin sends it when every node's agent is ready)")
	f.StringSliceVar(&o.ProbeTo, "probe-to", nil, "connect --probe to these IP:PORT addresses only (default: every --dst and every --nodeport on the node's address)")
	f.StringVar(&o.ProbeFromIP, "probe-from-ip", "", "open the --probe connections from inside the network namespace that has this address (a pod's IP); implies --probe")
	f.StringVar(&o.Node, "node", "", "node name to put in every record")
	f.StringArrayVar(&o.Services, "service", nil, "traced Service port, NS/NAME[:PORTNAME]/PROTO (repeatable)")
	f.BoolVar(&o.Cleanup, "cleanup", false, "remove every svctrace rule on this node and exit")
	// Tuning knobs for tests and odd nodes, not part of the interface the
	// plugin uses.
	f.IntVar(&o.NetlinkRcvBuf, "netlink-rcvbuf", 0, "nftables trace socket receive buffer in bytes (0: 32 MiB)")
	f.DurationVar(&o.WatchInterval, "watch-interval", 0, "how often to check the TRACE rules and the ruleset (0: 3s)")
	_ = f.MarkHidden("netlink-rcvbuf")
	_ = f.MarkHidden("watch-interval")
}

// Complete turns the flags into an agent.Config.
func (o *AgentOptions) Complete() error {
	if o.Cleanup {
		return nil
	}
	c := agent.DefaultConfig()
	var errs []error
	for _, d := range o.Dsts {
		aps, err := agent.ParseDsts(d)
		if err != nil {
			errs = append(errs, err)
		}
		c.Dsts = append(c.Dsts, aps...)
	}
	for _, e := range o.Endpoints {
		aps, err := agent.ParseDsts(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("--endpoint: %w", err))
		}
		c.Endpoints = append(c.Endpoints, aps...)
	}
	for _, p := range o.NodePorts {
		if p > 65535 {
			errs = append(errs, fmt.Errorf("invalid --nodeport %d: ports go up to 65535", p))
			continue
		}
		c.NodePorts = append(c.NodePorts, uint16(p))
	}
	if o.Src != "" {
		pfx, err := netip.ParsePrefix(o.Src)
		if err != nil {
			if a, aerr := netip.ParseAddr(o.Src); aerr == nil {
				pfx = netip.PrefixFrom(a, a.BitLen())
			} else {
				errs = append(errs, fmt.Errorf("invalid --src %q: want a CIDR such as 10.244.0.0/16: %w", o.Src, err))
			}
		}
		c.Src = pfx
	}
	rate, err := agent.ParseRate(o.Rate)
	if err != nil {
		errs = append(errs, err)
	}
	c.Rate = rate
	for _, s := range o.Services {
		ref, err := agent.ParseServiceRef(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.Services = append(c.Services, ref)
	}
	c.Proto = o.Proto
	c.Duration = o.Duration
	c.MaxPackets = o.MaxPackets
	c.AllPackets = o.AllPackets
	c.Source = o.Source
	c.KernLogPath = o.KernLog
	c.RulesSnapshot = o.RulesSnapshot
	c.StdinWatch = o.StdinWatch
	c.LogStdout = o.LogStdout
	c.Probe = o.Probe
	c.ProbeWhenTold = o.ProbeWhenTold
	for _, d := range o.ProbeTo {
		aps, err := agent.ParseDsts(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("--probe-to: %w", err))
		}
		c.ProbeTo = append(c.ProbeTo, aps...)
	}
	if o.ProbeFromIP != "" {
		a, err := netip.ParseAddr(o.ProbeFromIP)
		if err != nil {
			errs = append(errs, fmt.Errorf("invalid --probe-from-ip %q: give the pod's IP address: %w", o.ProbeFromIP, err))
		}
		c.ProbeFrom = a.Unmap()
		c.Probe = true
	}
	c.Node = o.Node
	c.NetlinkRcvBuf = o.NetlinkRcvBuf
	c.WatchInterval = o.WatchInterval
	o.config = c
	return errors.Join(errs...)
}

// Validate checks the options without touching the node.
func (o *AgentOptions) Validate() error {
	if o.Cleanup {
		if len(o.Dsts) > 0 || len(o.NodePorts) > 0 {
			return errors.New("--cleanup takes no --dst or --nodeport: it removes every svctrace rule on the node")
		}
		return nil
	}
	return o.config.Validate()
}

// Run traces (or cleans up) on this node.
func (o *AgentOptions) Run(ctx context.Context) error {
	streams := agent.IO{In: o.In, Out: o.Out, Err: o.ErrOut}
	if o.Cleanup {
		return agent.Cleanup(ctx, o.Node, streams)
	}
	return agent.Run(ctx, o.config, streams)
}
