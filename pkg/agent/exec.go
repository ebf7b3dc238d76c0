//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// runner runs a host command and returns its stdout. It is the only way this
// package touches iptables/nft binaries, so tests can see every call.
type runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// execRunner runs commands with os/exec, looking binaries up in PATH and in
// the sbin directories (the agent image and Debian put iptables there).
type execRunner struct{}

// sbinDirs are searched after PATH: a root shell's PATH may lack them.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// lookBinary finds a host binary in PATH or the sbin directories.
func lookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		if p, err := exec.LookPath(d + "/" + name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s: the agent image must ship iptables (legacy and nft) and nft", name, strings.Join(sbinDirs, ", "))
}

// Run implements runner.
func (execRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	path, err := lookBinary(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &commandError{Cmd: name + " " + strings.Join(args, " "), Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}

// commandError is a failed host command with its stderr.
type commandError struct {
	Cmd    string
	Stderr string
	Err    error
}

// Error says which command failed, how, and what it printed.
func (e *commandError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("run %s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("run %s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

// Unwrap returns the exec error (an *exec.ExitError for a non-zero exit).
func (e *commandError) Unwrap() error { return e.Err }

// isNoSuchChain reports whether err is iptables saying a chain, table or
// rule does not exist.
func isNoSuchChain(err error) bool {
	var ce *commandError
	if !errors.As(err, &ce) {
		return false
	}
	for _, s := range []string{"No chain/target/match by that name", "does not exist", "No such file or directory", "Bad rule (does a matching rule exist in that chain?)", "Table does not exist"} {
		if strings.Contains(ce.Stderr, s) {
			return true
		}
	}
	return false
}

// isIncompatibleChain reports whether err is iptables-nft refusing to print
// a chain it cannot express ("is incompatible, use 'nft' tool"): a chain
// caught mid-rewrite by another program, or one written with nft alone.
func isIncompatibleChain(err error) bool {
	var ce *commandError
	return errors.As(err, &ce) && strings.Contains(ce.Stderr, "is incompatible")
}
