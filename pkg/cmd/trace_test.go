package cmd

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

func TestTraceValidate(t *testing.T) {
	valid := func() *TraceOptions {
		o := NewTraceOptions(genericiooptions.NewTestIOStreamsDiscard())
		o.arg, o.AgentNamespace = "svc/myapp", "default"
		return o
	}
	tests := []struct {
		name     string
		mutate   func(*TraceOptions)
		wantSvc  string
		wantFrom string
		wantErr  string
	}{
		{name: "svc/NAME", mutate: func(*TraceOptions) {}, wantSvc: "myapp"},
		{name: "bare NAME", mutate: func(o *TraceOptions) { o.arg = "myapp" }, wantSvc: "myapp"},
		{name: "no Service", mutate: func(o *TraceOptions) { o.arg = "" }, wantErr: "give the Service to trace: kubectl svctrace svc/NAME"},
		{name: "not a Service", mutate: func(o *TraceOptions) { o.arg = "pod/x" }, wantErr: `"pod/x" is not a Service`},
		{name: "bad output", mutate: func(o *TraceOptions) { o.Output = "yaml" }, wantErr: `--output "yaml": use text, wide or json`},
		{name: "bad source", mutate: func(o *TraceOptions) { o.Source = "dmesg" }, wantErr: `--source "dmesg": use auto, kmsg, kern.log or nftrace`},
		{name: "node and all nodes", mutate: func(o *TraceOptions) { o.Node, o.AllNodes = "n1", true }, wantErr: "--node and --all-nodes cannot be used together"},
		{name: "negative count", mutate: func(o *TraceOptions) { o.Count = -1 }, wantErr: "--count -1: use 0 (no limit) or more"},
		{name: "zero timeout", mutate: func(o *TraceOptions) { o.Timeout = 0 }, wantErr: "--timeout 0s: a trace needs a time limit above zero"},
		{name: "zero start timeout", mutate: func(o *TraceOptions) { o.PodRunningTimeout = 0 }, wantErr: "--pod-running-timeout 0s"},
		{name: "empty image", mutate: func(o *TraceOptions) { o.Image = "" }, wantErr: "--image is empty"},
		{name: "wide and json outputs", mutate: func(o *TraceOptions) { o.Output = "wide"; o.Timeout = time.Hour }, wantSvc: "myapp"},
		{name: "--from a pod", mutate: func(o *TraceOptions) { o.From = "pod/client" }, wantSvc: "myapp", wantFrom: "client"},
		{name: "--from a deployment", mutate: func(o *TraceOptions) { o.From = "deploy/client" }, wantErr: `--from "deploy/client": give the pod to connect from as pod/NAME`},
		{name: "--from with --all-nodes", mutate: func(o *TraceOptions) { o.From, o.AllNodes = "pod/client", true }, wantErr: "--from and --all-nodes cannot be used together"},
		{name: "--summary", mutate: func(o *TraceOptions) { o.Summary = true }, wantSvc: "myapp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.mutate(o)
			err := o.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() error = %v", err)
			}
			if o.service != tc.wantSvc || o.fromPod != tc.wantFrom {
				t.Errorf("service, from pod = %q, %q; want %q, %q", o.service, o.fromPod, tc.wantSvc, tc.wantFrom)
			}
		})
	}
}

func TestRootCommand(t *testing.T) {
	root := NewCmdSvctrace(genericiooptions.NewTestIOStreamsDiscard())
	var got []string
	for _, c := range root.Commands() {
		got = append(got, c.Name())
	}
	if diff := cmp.Diff([]string{"agent", "analyze", "cleanup", "version"}, got); diff != "" {
		t.Errorf("subcommands mismatch (-want +got):\n%s", diff)
	}
	sub := map[string]*cobra.Command{}
	for _, c := range root.Commands() {
		sub[c.Name()] = c
	}
	for _, flag := range []string{"namespace", "context", "kubeconfig", "as", "token"} {
		for _, c := range []*cobra.Command{root, sub["cleanup"]} {
			if c.Flags().Lookup(flag) == nil {
				t.Errorf("%s: kubectl flag --%s is missing", c.Name(), flag)
			}
		}
		// Offline commands show (and take) only the flags they use.
		for _, c := range []*cobra.Command{sub["analyze"], sub["version"]} {
			if c.Flags().Lookup(flag) != nil || c.InheritedFlags().Lookup(flag) != nil {
				t.Errorf("%s takes the cluster flag --%s it does not use", c.Name(), flag)
			}
		}
	}
	var help bytes.Buffer
	root.SetOut(&help)
	root.SetArgs([]string{"analyze", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, unused := range []string{"--as", "--token", "--kubeconfig", "--server"} {
		if strings.Contains(help.String(), unused) {
			t.Errorf("analyze --help lists %s:\n%s", unused, help.String())
		}
	}
	if root.Annotations["cobra_annotation_command_display_name"] != "kubectl svctrace" {
		t.Errorf("display name annotation = %q", root.Annotations["cobra_annotation_command_display_name"])
	}
}

func TestVersion(t *testing.T) {
	old, oldImage := version.Version, version.Image
	version.Version, version.Image = "v0.1.0", "example/svctrace-agent:v0.1.0"
	t.Cleanup(func() { version.Version, version.Image = old, oldImage })
	platform := runtime.GOOS + "/" + runtime.GOARCH

	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"version"}, want: "kubectl-svctrace v0.1.0 (" + platform + ", " + runtime.Version() + ")\nagent image: example/svctrace-agent:v0.1.0\n"},
		{args: []string{"version", "-o", "json"}, want: mustJSON(t, VersionInfo{Version: "v0.1.0", Image: "example/svctrace-agent:v0.1.0", GoVersion: runtime.Version(), Platform: platform})},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			streams, _, out, _ := genericiooptions.NewTestIOStreams()
			root := NewCmdSvctrace(streams)
			root.SetArgs(tc.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out.String()); diff != "" {
				t.Errorf("output mismatch (-want +got):\n%s", diff)
			}
		})
	}
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	root := NewCmdSvctrace(streams)
	root.SetArgs([]string{"version", "-o", "yaml"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), `--output "yaml": use text or json`) {
		t.Errorf("version -o yaml error = %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestProbeFlag(t *testing.T) {
	tests := []struct {
		args      []string
		wantProbe string
		wantArgs  []string
		wantErr   string
	}{
		{args: []string{"svc/myapp"}, wantProbe: "", wantArgs: []string{"svc/myapp"}},
		{args: []string{"svc/myapp", "--probe"}, wantProbe: "cluster", wantArgs: []string{"svc/myapp"}},
		{args: []string{"svc/myapp", "--probe", "--count", "1"}, wantProbe: "cluster", wantArgs: []string{"svc/myapp"}},
		{args: []string{"svc/myapp", "--probe", "nodeport"}, wantProbe: "nodeport", wantArgs: []string{"svc/myapp"}},
		{args: []string{"--probe", "lb", "svc/myapp"}, wantProbe: "lb", wantArgs: []string{"svc/myapp"}},
		{args: []string{"svc/myapp", "--probe=lb"}, wantProbe: "lb", wantArgs: []string{"svc/myapp"}},
		{args: []string{"lb", "--probe"}, wantProbe: "cluster", wantArgs: []string{"lb"}},
		{args: []string{"svc/myapp", "--probe=pod"}, wantProbe: "pod", wantArgs: []string{"svc/myapp"}, wantErr: `--probe "pod": use --probe (the cluster IP), --probe nodeport or --probe lb`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := NewTraceOptions(genericiooptions.NewTestIOStreamsDiscard())
			cmd := &cobra.Command{}
			cmd.Flags().StringVar(&o.Probe, "probe", "", "")
			cmd.Flags().Lookup("probe").NoOptDefVal = "cluster"
			cmd.Flags().Int("count", 0, "")
			if err := cmd.Flags().Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			args := o.probeKindArg(cmd.Flags().Args())
			if o.Probe != tc.wantProbe {
				t.Errorf("probe %q, want %q", o.Probe, tc.wantProbe)
			}
			if diff := cmp.Diff(tc.wantArgs, args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
			o.arg, o.AgentNamespace = args[0], "default"
			err := o.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Errorf("Validate: %v, want %q", err, tc.wantErr)
			}
		})
	}
}
