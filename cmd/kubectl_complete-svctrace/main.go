// Command kubectl_complete-svctrace is kubectl's shell-completion helper for
// the svctrace plugin.
//
// kubectl (1.26+) completes `kubectl svctrace <TAB>` by running an executable
// named kubectl_complete-svctrace from $PATH with the words typed so far, and
// expects cobra's completion protocol on stdout. This helper forwards them to
// `kubectl-svctrace __complete`, which answers with the cluster's Services,
// ports, nodes and namespaces.
//
// Installing: put this binary on $PATH next to kubectl-svctrace. krew links
// only the plugin binary, so after `kubectl krew install svctrace` run
//
//	ln -s "$(dirname "$(readlink -f "$(command -v kubectl-svctrace)")")/kubectl_complete-svctrace" ~/.krew/bin/
//
// It is a Go program rather than a shell script so that it works on Windows too.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

func main() {
	plugin, err := findPlugin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubectl_complete-svctrace:", err)
		os.Exit(1)
	}
	cmd := exec.Command(plugin, append([]string{"__complete"}, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			os.Exit(exit.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "kubectl_complete-svctrace:", err)
		os.Exit(1)
	}
}

// findPlugin prefers the kubectl-svctrace installed next to this helper (the
// same release), then the one on $PATH.
func findPlugin() (string, error) {
	name := "kubectl-svctrace"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), name)
		if info, err := os.Stat(candidate); err == nil && !info.IsDir() {
			return candidate, nil
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("kubectl-svctrace not found next to this helper or on $PATH: install the plugin (kubectl krew install svctrace): %w", err)
	}
	return path, nil
}
