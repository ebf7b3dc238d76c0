package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/templates"

	"github.com/svctrace/kubectl-svctrace/pkg/kube"
	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

var (
	cleanupLong = templates.LongDesc(`
		Remove everything svctrace may have left behind: delete every svctrace
		agent pod (this also stops traces that are still running), then run
		"agent --cleanup" in a short-lived privileged pod on each node, which
		removes every TRACE rule tagged svctrace from both iptables backends.

		Agents clean up after themselves, even when this command is killed;
		cleanup is for nodes where an agent itself was killed.`)

	cleanupExample = templates.Examples(`
		# Clean every Ready node
		%[1]s cleanup

		# Clean one node, running the cleanup pod in kube-system
		%[1]s cleanup --node worker-1 --agent-namespace kube-system`)
)

// CleanupOptions are the cleanup command's flags.
type CleanupOptions struct {
	configFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	Node           string
	AgentNamespace string
	Image          string
	Timeout        time.Duration
	Quiet          bool

	restConfig *rest.Config
	client     kubernetes.Interface
}

// NewCmdCleanup returns the cleanup command. It takes the root command's
// cluster flags (-n, --context, --kubeconfig, ...), bound to the same
// values.
func NewCmdCleanup(streams genericiooptions.IOStreams, configFlags *genericclioptions.ConfigFlags) *cobra.Command {
	o := &CleanupOptions{configFlags: configFlags, IOStreams: streams, Image: version.Image, Timeout: 2 * time.Minute}
	cmd := &cobra.Command{
		Use:     "cleanup [--node NODE]",
		Short:   "Delete leftover svctrace pods and TRACE rules",
		Long:    cleanupLong,
		Example: fmt.Sprintf(cleanupExample, "kubectl svctrace"),
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	f := cmd.Flags()
	configFlags.AddFlags(f)
	f.StringVar(&o.Node, "node", o.Node, "clean only this node")
	f.StringVar(&o.AgentNamespace, "agent-namespace", o.AgentNamespace, "namespace for the cleanup pods; it must allow privileged pods (default: the current namespace)")
	f.StringVar(&o.Image, "image", o.Image, "agent image to run on the nodes")
	f.DurationVar(&o.Timeout, "timeout", o.Timeout, "how long each node's cleanup pod may take (image pull included)")
	f.BoolVarP(&o.Quiet, "quiet", "q", o.Quiet, "print only the result")
	registerNodeCompletion(cmd, "node", configFlags)
	registerNamespaceCompletion(cmd, "agent-namespace", configFlags)
	return cmd
}

// Complete fills the namespace default and builds the clients.
func (o *CleanupOptions) Complete() error {
	ns, _, err := o.configFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return fmt.Errorf("read the namespace from your kubeconfig: %w", err)
	}
	if o.AgentNamespace == "" {
		o.AgentNamespace = ns
	}
	if o.restConfig, err = o.configFlags.ToRESTConfig(); err != nil {
		return fmt.Errorf("load the cluster configuration (check --kubeconfig, $KUBECONFIG or --context): %w", err)
	}
	if o.client, err = kubernetes.NewForConfig(o.restConfig); err != nil {
		return fmt.Errorf("create the Kubernetes client: %w", err)
	}
	return nil
}

// Validate checks the flags. It is pure.
func (o *CleanupOptions) Validate() error {
	if o.Timeout <= 0 {
		return fmt.Errorf("--timeout %s: use a duration above zero (e.g. 2m)", o.Timeout)
	}
	if o.Image == "" {
		return errors.New("--image is empty: give the agent image (see `kubectl svctrace version`)")
	}
	if o.AgentNamespace == "" {
		return errors.New("--agent-namespace is empty: give a namespace that allows privileged pods")
	}
	return nil
}

// Run cleans up and prints what was removed, per node.
func (o *CleanupOptions) Run(ctx context.Context) error {
	progress := o.ErrOut
	if o.Quiet {
		progress = io.Discard
	}
	res, err := kube.Cleanup(ctx, o.client, kube.NewPodIO(o.restConfig, o.client), kube.CleanupConfig{
		Namespace: o.AgentNamespace,
		Node:      o.Node,
		Image:     o.Image,
		Timeout:   o.Timeout,
	}, progress)
	fmt.Fprintf(o.Out, "Deleted %d svctrace pod(s)\n", len(res.PodsDeleted))
	for _, n := range res.Nodes {
		if n.Err == nil {
			fmt.Fprintf(o.Out, "node %s: removed %d svctrace rule(s)\n", n.Node, n.RulesRemoved)
		} else {
			fmt.Fprintf(o.Out, "node %s: failed (see below)\n", n.Node)
		}
	}
	return err
}
