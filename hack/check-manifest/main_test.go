package main

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"
)

// rendered is the repository's .krew.yaml rendered for v0.1.0.
func rendered(t *testing.T) *Plugin {
	t.Helper()
	tmpl, err := os.ReadFile("../../.krew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data, err := Render(tmpl, "v0.1.0", placeholderSHA)
	if err != nil {
		t.Fatal(err)
	}
	var p Plugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Plugin)
		file   string
		want   []string // the errors, in order
	}{
		{name: "the template renders to a valid manifest", mutate: func(*Plugin) {}},
		{
			name:   "wrong file name",
			mutate: func(*Plugin) {},
			file:   "trace",
			want:   []string{`file name "trace" does not match metadata.name "svctrace" (krew-index wants NAME.yaml)`},
		},
		{
			name:   "version without v",
			mutate: func(p *Plugin) { p.Spec.Version = "0.1.0" },
			// The URIs still contain "0.1.0": the version is the only error.
			want: []string{`spec.version "0.1.0" is not a semantic version with a leading v (e.g. v0.1.0)`},
		},
		{
			name: "missing platform and duplicate selector",
			mutate: func(p *Plugin) {
				p.Spec.Platforms[1].Selector.MatchLabels["arch"] = "amd64"
				p.Spec.Platforms[1].URI = strings.Replace(p.Spec.Platforms[1].URI, "arm64", "amd64", 1)
			},
			want: []string{
				"spec.platforms[1]: selector linux/amd64 already used by spec.platforms[0]",
				"spec.platforms: no archive for linux/arm64",
			},
		},
		{
			name: "bad uri, sha256 and bin",
			mutate: func(p *Plugin) {
				p.Spec.Platforms[4].URI = "http://example.com/kubectl-svctrace_v0.1.0_windows_amd64.tar.gz"
				p.Spec.Platforms[4].Sha256 = "ABC"
				p.Spec.Platforms[4].Bin = "kubectl-svctrace"
			},
			want: []string{
				`spec.platforms[4]: uri "http://example.com/kubectl-svctrace_v0.1.0_windows_amd64.tar.gz" is not an https URL`,
				`spec.platforms[4]: sha256 "ABC" is not 64 lower-case hex digits`,
				`spec.platforms[4]: bin is "kubectl-svctrace", want "kubectl-svctrace.exe"`,
				`spec.platforms[4]: files does not install "kubectl-svctrace"`,
			},
		},
		{
			name: "uri of another version and platform",
			mutate: func(p *Plugin) {
				p.Spec.Platforms[0].URI = "https://example.com/kubectl-svctrace_v0.0.9_linux_arm64.tar.gz"
			},
			want: []string{`spec.platforms[0]: uri "https://example.com/kubectl-svctrace_v0.0.9_linux_arm64.tar.gz" does not name version v0.1.0 and platform linux_amd64`},
		},
		{
			name:   "archive without LICENSE",
			mutate: func(p *Plugin) { p.Spec.Platforms[2].Files = p.Spec.Platforms[2].Files[:2] },
			want:   []string{`spec.platforms[2]: files does not install "LICENSE"`},
		},
		{
			name:   "no selector",
			mutate: func(p *Plugin) { p.Spec.Platforms[3].Selector = nil },
			want: []string{
				"spec.platforms[3]: selector.matchLabels with os and arch is missing",
				"spec.platforms: no archive for darwin/arm64",
			},
		},
		{
			name:   "caveats that do not warn",
			mutate: func(p *Plugin) { p.Spec.Caveats = "Have fun." },
			want: []string{
				`spec.caveats must say that svctrace runs a privileged pod and changes iptables rules on the node ("privileged" is missing)`,
				`spec.caveats must say that svctrace runs a privileged pod and changes iptables rules on the node ("iptables" is missing)`,
			},
		},
		{
			name: "header fields",
			mutate: func(p *Plugin) {
				p.APIVersion, p.Kind, p.Spec.Homepage = "v1", "Pod", ""
				p.Spec.ShortDescription = strings.Repeat("x", 51)
			},
			want: []string{
				`apiVersion is "v1", want "krew.googlecontainertools.github.com/v1alpha2"`,
				`kind is "Pod", want Plugin`,
				`spec.homepage "" is not an https URL`,
				"spec.shortDescription is 51 characters: krew lists it in one line, keep it to 50",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := rendered(t)
			tc.mutate(p)
			file := tc.file
			if file == "" {
				file = "svctrace"
			}
			var got []string
			for _, err := range Validate(p, file) {
				got = append(got, err.Error())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Validate() errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderRejectsUnknownActions(t *testing.T) {
	_, err := Render([]byte("spec:\n  version: {{ .TagName }}\n  x: {{ .Foo }}\n"), "v1.0.0", placeholderSHA)
	if err == nil || !strings.Contains(err.Error(), "line 3: template action this renderer does not know") {
		t.Fatalf("Render() error = %v, want a line-3 unknown action error", err)
	}
}

func TestStrictDecoding(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "svctrace.yaml")
	if err := os.WriteFile(file, []byte("apiVersion: x\nkind: Plugin\nspec:\n  plaforms: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs := check(file, false, "", "")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `unknown field "plaforms"`) {
		t.Fatalf("check() = %v, want an unknown field error", errs)
	}
}

func writeTarGz(t *testing.T, file string, names ...string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckArchives(t *testing.T) {
	dir := t.TempDir()
	tmpl, err := os.ReadFile("../../.krew.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, plat := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"} {
		writeTarGz(t, filepath.Join(dir, "kubectl-svctrace_v0.1.0_"+plat+".tar.gz"), "kubectl-svctrace", "kubectl_complete-svctrace", "LICENSE")
	}
	// windows/amd64 lacks LICENSE; windows/arm64 is missing altogether.
	writeTarGz(t, filepath.Join(dir, "kubectl-svctrace_v0.1.0_windows_amd64.tar.gz"), "kubectl-svctrace.exe")

	// Rendering with the real archives fails on the missing one...
	if _, err := Render(tmpl, "v0.1.0", archiveSHA(dir)); err == nil || !strings.Contains(err.Error(), "kubectl-svctrace_v0.1.0_windows_arm64.tar.gz") {
		t.Fatalf("Render() error = %v, want the missing windows/arm64 archive named", err)
	}
	writeTarGz(t, filepath.Join(dir, "kubectl-svctrace_v0.1.0_windows_arm64.tar.gz"), "kubectl-svctrace.exe", "LICENSE")
	data, err := Render(tmpl, "v0.1.0", archiveSHA(dir))
	if err != nil {
		t.Fatal(err)
	}
	var p Plugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatal(err)
	}
	// ...then the hashes match, and only the missing LICENSE is reported.
	var got []string
	for _, e := range CheckArchives(&p, dir) {
		got = append(got, e.Error())
	}
	want := []string{"spec.platforms[4]: " + filepath.Join(dir, "kubectl-svctrace_v0.1.0_windows_amd64.tar.gz") + " does not contain LICENSE (it has kubectl-svctrace.exe)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CheckArchives() mismatch (-want +got):\n%s", diff)
	}
	// A rebuilt archive no longer matches the manifest.
	writeTarGz(t, filepath.Join(dir, "kubectl-svctrace_v0.1.0_linux_amd64.tar.gz"), "kubectl-svctrace", "LICENSE", "extra")
	errs := CheckArchives(&p, dir)
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "spec.platforms[0]: sha256") || !strings.Contains(errs[0].Error(), "does not match") {
		t.Errorf("CheckArchives() after a rebuild = %v, want a sha256 mismatch for spec.platforms[0] first", errs)
	}
}
