// Command kubectl-svctrace is the svctrace kubectl plugin, and on nodes its
// agent (hidden subcommand "agent").
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/svctrace/kubectl-svctrace/pkg/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	root := cmd.NewCmdSvctrace(streams)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		// The one place errors are printed.
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		var exit cmd.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.Code)
		}
		os.Exit(1)
	}
}
