package cmd

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

	"github.com/svctrace/kubectl-svctrace/pkg/kube"
)

// Shell completion asks the cluster, so it needs the same cluster flags as
// the command. kubectl reaches it through the kubectl_complete-svctrace
// helper (cmd/kubectl_complete-svctrace), which runs `kubectl-svctrace
// __complete ARGS...`.

// completionTimeout keeps a slow or unreachable cluster from hanging the shell.
const completionTimeout = 5 * time.Second

// completionClient builds a client and the namespace from the flags parsed
// so far; ok is false when the kubeconfig is unusable.
func completionClient(f *genericclioptions.ConfigFlags) (kubernetes.Interface, string, bool) {
	cfg, err := f.ToRESTConfig()
	if err != nil {
		return nil, "", false
	}
	cfg.Timeout = completionTimeout
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", false
	}
	ns, _, err := f.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", false
	}
	return client, ns, true
}

func completionContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), completionTimeout)
}

// registerTraceCompletion completes the Service argument, --port (from the
// Service already typed), --node, --agent-namespace, -o and --source.
func registerTraceCompletion(cmd *cobra.Command, f *genericclioptions.ConfigFlags) {
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		client, ns, ok := completionClient(f)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext()
		defer cancel()
		return kube.CompleteServices(ctx, client, ns, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
	_ = cmd.RegisterFlagCompletionFunc("port", func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		client, ns, ok := completionClient(f)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext()
		defer cancel()
		return kube.CompletePorts(ctx, client, ns, args[0], toComplete), cobra.ShellCompDirectiveNoFileComp
	})
	registerNodeCompletion(cmd, "node", f)
	registerNamespaceCompletion(cmd, "agent-namespace", f)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"text", "wide", "json"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("source", cobra.FixedCompletions([]string{"auto", "kmsg", "kern.log", "nftrace"}, cobra.ShellCompDirectiveNoFileComp))
	// -n completes namespaces, as in kubectl.
	registerNamespaceCompletion(cmd, "namespace", f)
}

func registerNodeCompletion(cmd *cobra.Command, flag string, f *genericclioptions.ConfigFlags) {
	registerClusterCompletion(cmd, flag, f, kube.CompleteNodes)
}

func registerNamespaceCompletion(cmd *cobra.Command, flag string, f *genericclioptions.ConfigFlags) {
	registerClusterCompletion(cmd, flag, f, kube.CompleteNamespaces)
}

// registerClusterCompletion completes flag with names the cluster lists.
func registerClusterCompletion(cmd *cobra.Command, flag string, f *genericclioptions.ConfigFlags,
	names func(context.Context, kubernetes.Interface, string) []string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		client, _, ok := completionClient(f)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext()
		defer cancel()
		return names(ctx, client, toComplete), cobra.ShellCompDirectiveNoFileComp
	})
}
