package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/kube"
	"github.com/svctrace/kubectl-svctrace/pkg/render"
	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

var (
	traceLong = templates.LongDesc(`
		Show the exact path a Service's packets take through a node's netfilter
		rules: which kube-proxy chains they cross, which endpoint they are
		DNATed to, whether they are masqueraded, and the verdict.

		svctrace starts a short-lived privileged agent pod on the node (host
		network), which adds raw-table TRACE rules matching only the Service's
		addresses, streams each traced packet back, and removes its rules and
		itself when the trace ends, on Ctrl-C, or when this command dies.

		A packet DNATed to an endpoint on another node is followed there: the
		nodes hosting the Service's endpoints get an agent too (at most
		--max-nodes, default 10; --no-follow turns this off), which also traces
		the packets arriving for its endpoints, and each packet is shown once,
		its hops in order across the nodes.`)

	traceExample = templates.Examples(`
		# Trace new connections to a Service until Ctrl-C
		%[1]s svc/myapp

		# Let the agent open one test connection and show its path
		%[1]s svc/myapp --probe --count 1

		# Probe the NodePort on the node's own address, or the load-balancer IP
		%[1]s svc/myapp-nodeport --probe nodeport --count 1
		%[1]s svc/myapp-lb --probe lb --count 1

		# One named port of a Service in another namespace, on a chosen node
		%[1]s svc/kube-dns -n kube-system --port dns --node worker-1

		# Every node at once, as NDJSON
		%[1]s svc/myapp --all-nodes -o json

		# Only the node the traffic enters, not the endpoints' nodes
		%[1]s svc/myapp --node worker-1 --no-follow

		# The path of a connection from a pod (its image needs no tools)
		%[1]s svc/myapp --from pod/client --count 1

		# Which pod served how many new connections over a minute
		%[1]s svc/myapp --timeout 1m --summary

		# Run the agent in a namespace that allows privileged pods
		%[1]s svc/myapp --agent-namespace kube-system`)
)

// TraceOptions are the flags and inputs of `kubectl svctrace [svc/]NAME`.
type TraceOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Port     string
	Node     string
	AllNodes bool
	// Probe is where --probe connects (kube.Probe*), "" without --probe.
	Probe             string
	Count             int
	Timeout           time.Duration
	PodRunningTimeout time.Duration
	AllPackets        bool
	Output            string
	Image             string
	AgentNamespace    string
	Source            string
	Quiet             bool
	AgentLog          bool
	Wait              bool
	Summary           bool
	From              string
	NoFollow          bool
	MaxNodes          int

	// Set by Complete.
	arg        string
	service    string
	fromPod    string
	namespace  string
	restConfig *rest.Config
	client     kubernetes.Interface
}

// NewTraceOptions returns the options with their defaults.
func NewTraceOptions(streams genericiooptions.IOStreams) *TraceOptions {
	return &TraceOptions{
		configFlags:       genericclioptions.NewConfigFlags(true),
		IOStreams:         streams,
		Timeout:           60 * time.Second,
		PodRunningTimeout: 2 * time.Minute,
		Output:            "text",
		Image:             version.Image,
		Source:            "auto",
		MaxNodes:          kube.DefaultMaxNodes,
	}
}

// NewCmdSvctrace returns the root command: it traces a Service, and holds
// the analyze, cleanup, version and (hidden) agent subcommands.
func NewCmdSvctrace(streams genericiooptions.IOStreams) *cobra.Command {
	o := NewTraceOptions(streams)
	cmd := &cobra.Command{
		Use:     "svctrace [svc/]NAME [flags]",
		Short:   "Show the path a Service's packets take through a node's iptables/nftables rules",
		Long:    traceLong,
		Example: fmt.Sprintf(traceExample, "kubectl svctrace"),
		// Two with a bare --probe: "--probe nodeport" (see probeKindArg).
		Args: cobra.MaximumNArgs(2),
		// main prints errors, once.
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl svctrace",
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	// Not persistent: cleanup adds the same cluster flags itself, analyze
	// and version use none.
	o.configFlags.AddFlags(cmd.Flags())

	f := cmd.Flags()
	f.StringVar(&o.Port, "port", o.Port, "trace only this Service port, by name or number (default: all ports)")
	f.StringVar(&o.Node, "node", o.Node, "trace on this node")
	f.BoolVar(&o.AllNodes, "all-nodes", o.AllNodes, "trace on every Ready node (one agent per node)")
	f.StringVar(&o.Probe, "probe", o.Probe, "have the agent open one test connection once it is ready: to the cluster IP (--probe), the NodePort on the traced node's address (--probe nodeport) or the load-balancer / external IP (--probe lb)")
	f.Lookup("probe").NoOptDefVal = kube.ProbeCluster
	f.BoolVar(&o.NoFollow, "no-follow", o.NoFollow, "trace only the chosen node: do not follow the packets to the nodes hosting the Service's endpoints")
	f.IntVar(&o.MaxNodes, "max-nodes", o.MaxNodes, "the most nodes to start agents on: each costs a privileged pod and two API streams, and endpoints on more nodes seldom add to one packet's story; endpoint nodes beyond it are not followed, and --all-nodes beyond it fails")
	f.IntVar(&o.Count, "count", o.Count, "stop after this many packets (0: no limit)")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long to trace once the agents are ready")
	f.DurationVar(&o.PodRunningTimeout, "pod-running-timeout", o.PodRunningTimeout, "how long to wait for the agent pods to start (image pull included)")
	f.BoolVar(&o.AllPackets, "all-packets", o.AllPackets, "trace every packet, not only connection-opening ones")
	f.StringVarP(&o.Output, "output", "o", o.Output, "output format: text, wide or json (NDJSON records)")
	f.StringVar(&o.Image, "image", o.Image, "agent image to run on the node")
	f.StringVar(&o.AgentNamespace, "agent-namespace", o.AgentNamespace, "namespace for the agent pods; it must allow privileged pods (default: the Service's namespace)")
	f.StringVar(&o.Source, "source", o.Source, "where the agent reads trace events: auto, kmsg, kern.log or nftrace")
	f.BoolVarP(&o.Quiet, "quiet", "q", o.Quiet, "no progress or informational messages on stderr")
	f.BoolVar(&o.AgentLog, "agent-log", o.AgentLog, "also print the agents' own log lines on stderr (what each agent read, re-read and probed), prefixed with the node")
	f.BoolVar(&o.Wait, "wait", o.Wait, "on the way out, wait until the agent pods are gone (default: until every agent confirmed its TRACE rules removed and the pods' deletion was accepted; the pods of agents that did not confirm are always waited for)")
	f.BoolVar(&o.Summary, "summary", o.Summary, "print only the session summary: packets, new connections per endpoint pod vs. expected share, source NAT, drops by reason, lost records (with -o json: one summary record)")
	f.StringVar(&o.From, "from", o.From, "open the test connection from inside this pod's network namespace (pod/NAME, in the Service's namespace): traces on the pod's node, only the pod's packets; the pod's image needs no tools")

	registerTraceCompletion(cmd, o.configFlags)

	cmd.AddCommand(
		NewCmdAnalyze(streams),
		NewCmdCleanup(streams, o.configFlags),
		NewCmdVersion(streams),
		NewCmdAgent(streams),
	)
	return cmd
}

// Complete reads the argument and builds the clients. No API calls.
func (o *TraceOptions) Complete(args []string) error {
	args = o.probeKindArg(args)
	switch len(args) {
	case 0:
	case 1:
		o.arg = args[0]
	default:
		return fmt.Errorf("give one Service, not %q: kubectl svctrace svc/NAME", strings.Join(args, " "))
	}
	ns, _, err := o.configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return fmt.Errorf("read the namespace from your kubeconfig: %w", err)
	}
	o.namespace = ns
	if o.AgentNamespace == "" {
		o.AgentNamespace = ns
	}
	o.restConfig, err = o.configFlags.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("load the cluster configuration (check --kubeconfig, $KUBECONFIG or --context): %w", err)
	}
	o.client, err = kubernetes.NewForConfig(o.restConfig)
	if err != nil {
		return fmt.Errorf("create the Kubernetes client: %w", err)
	}
	return nil
}

// probeKindArg takes the probe kind out of the arguments when --probe came
// without "=": pflag cannot give an optional value after a space, so
// "--probe nodeport svc/x" leaves "nodeport" among the arguments.
func (o *TraceOptions) probeKindArg(args []string) []string {
	if o.Probe != kube.ProbeCluster || len(args) != 2 {
		return args
	}
	for _, i := range []int{1, 0} {
		if slices.Contains(kube.ProbeKinds, args[i]) {
			o.Probe = args[i]
			return append(append([]string(nil), args[:i]...), args[i+1:]...)
		}
	}
	return args
}

// Validate checks the flags. It is pure.
func (o *TraceOptions) Validate() error {
	if o.arg == "" {
		return errors.New("give the Service to trace: kubectl svctrace svc/NAME (list them with `kubectl get svc`)")
	}
	name, err := kube.ParseServiceArg(o.arg)
	if err != nil {
		return err
	}
	o.service = name
	switch o.Output {
	case "text", "wide", "json":
	default:
		return fmt.Errorf("--output %q: use text, wide or json", o.Output)
	}
	switch o.Source {
	case "auto", "kmsg", "kern.log", "nftrace":
	default:
		return fmt.Errorf("--source %q: use auto, kmsg, kern.log or nftrace", o.Source)
	}
	if o.Node != "" && o.AllNodes {
		return errors.New("--node and --all-nodes cannot be used together: pick one")
	}
	if o.From != "" {
		pod, err := kube.ParsePodArg(o.From)
		if err != nil {
			return err
		}
		if o.AllNodes {
			return errors.New("--from and --all-nodes cannot be used together: --from traces on the pod's node")
		}
		o.fromPod = pod
	}
	if o.Probe != "" && !slices.Contains(kube.ProbeKinds, o.Probe) {
		return fmt.Errorf("--probe %q: use --probe (the cluster IP), --probe nodeport or --probe lb", o.Probe)
	}
	if o.MaxNodes < 1 {
		return fmt.Errorf("--max-nodes %d: use 1 or more", o.MaxNodes)
	}
	if o.Count < 0 {
		return fmt.Errorf("--count %d: use 0 (no limit) or more", o.Count)
	}
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: a trace needs a time limit above zero (e.g. 60s, 10m)", o.Timeout)
	}
	if o.PodRunningTimeout <= 0 {
		return fmt.Errorf("--pod-running-timeout %s: use a duration above zero (e.g. 2m)", o.PodRunningTimeout)
	}
	if o.Image == "" {
		return errors.New("--image is empty: give the agent image (see `kubectl svctrace version`)")
	}
	if o.AgentNamespace == "" {
		return errors.New("--agent-namespace is empty: give a namespace that allows privileged pods")
	}
	return nil
}

// Run resolves the Service, picks the nodes and runs the trace.
func (o *TraceOptions) Run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	target, err := kube.Resolve(ctx, o.client, kube.ResolveOptions{Namespace: o.namespace, Name: o.service, Port: o.Port})
	if err != nil {
		return err
	}
	var from *kube.FromPod
	if o.fromPod != "" {
		if from, err = kube.ResolveFromPod(ctx, o.client, o.namespace, o.fromPod, target); err != nil {
			return err
		}
	}
	probe := o.Probe != "" || from != nil
	choice, err := kube.ChooseNodes(target, kube.NodeOptions{
		Node: o.Node, AllNodes: o.AllNodes, Probe: probe, From: from,
		Follow: !o.NoFollow, MaxNodes: o.MaxNodes,
	})
	if err != nil {
		return err
	}
	info := o.ErrOut
	if o.Quiet {
		info = io.Discard
	}
	if probe {
		source := "from the node itself (the kernel picks the node's address on the route as the source)"
		if from != nil {
			source = fmt.Sprintf("from pod %s (source %s)", from.DisplayName(), from.IP)
		}
		for _, n := range choice.Nodes {
			if !choice.Probes(n) {
				continue
			}
			to, what, err := target.ProbeAddrs(o.Probe, n)
			if err != nil {
				return err
			}
			fmt.Fprintf(info, "Probe: %s connection to %s (%s), %s\n", strings.ToUpper(target.Proto), strings.Join(to, ", "), what, source)
		}
	}
	for _, n := range target.Notes {
		fmt.Fprintln(info, "Note: "+n)
	}
	fmt.Fprintf(info, "Starting the svctrace agent for %s %s\n", target.DisplayName(), choice.Reason)
	if len(choice.Nodes) > 1 {
		fmt.Fprintf(info, "Nodes: %s\n", choice.Describe())
	}

	var out kube.Sink
	if o.Output == "json" {
		out = render.NewJSON(o.Out)
	} else {
		out = render.NewText(o.Out, render.TextOptions{Color: render.IsTerminal(o.Out), Wide: o.Output == "wide"})
	}
	tr := &kube.Tracer{
		Client:   o.client,
		IO:       kube.NewPodIO(o.restConfig, o.client),
		Out:      out,
		ErrOut:   o.ErrOut,
		Quiet:    o.Quiet,
		Terminal: isTerminal(o.ErrOut),
		// Every session ends with its summary: text and JSON alike.
		Summarizer:  explain.NewSummarizer(""),
		SummaryOnly: o.Summary,
		Policies:    kube.NewPolicies(o.client, target, from),
	}
	agentOpts := kube.AgentOptions{
		Duration:   o.Timeout,
		MaxPackets: o.Count,
		Probe:      probe,
		ProbeKind:  o.Probe,
		AllPackets: o.AllPackets,
		Source:     o.Source,
	}
	if from != nil {
		agentOpts.ProbeFromIP = from.IP
	}
	return tr.Run(ctx, kube.TraceConfig{
		Target:       target,
		Nodes:        choice.Nodes,
		Namespace:    o.AgentNamespace,
		Image:        o.Image,
		Agent:        agentOpts,
		Count:        o.Count,
		StartTimeout: o.PodRunningTimeout,
		From:         from,
		Roles:        choice.Roles,
		AgentLog:     o.AgentLog,
		WaitPods:     o.Wait,
	})
}

// isTerminal reports whether w is a terminal (for the status line).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb"
}
