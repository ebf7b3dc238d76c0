//go:build !linux

package cmd

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewCmdAgent stands in for the agent command (pkg/cmd/agent.go, Linux
// only) in the macOS and Windows builds of the plugin: the agent runs on
// Linux nodes only, inside its pod, so here it just says so.
func NewCmdAgent(streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:                "agent",
		Short:              "Node side of svctrace (Linux only)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return fmt.Errorf("the svctrace agent runs only on Linux nodes, in the pod the plugin starts; this is the %s/%s build of the plugin", runtime.GOOS, runtime.GOARCH)
		},
	}
}
