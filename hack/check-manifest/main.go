// Command check-manifest validates svctrace's krew plugin manifests
// (plugins/svctrace.yaml, and the krew-release-bot template .krew.yaml) and
// renders the template for a release. hack/check-manifest.sh runs it;
// hack/dist.sh renders the release manifest with it.
//
//	check-manifest [--archives DIR] MANIFEST...      validate (and check sha256s against DIR)
//	check-manifest --template [--version V] TEMPLATE  render with placeholder hashes, then validate
//	check-manifest --template --render --version V --archives DIR TEMPLATE
//	                                                  print the release manifest
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Plugin is the part of krew's Plugin manifest (v1alpha2) svctrace uses.
// Decoding is strict, so a misspelt field is an error.
type Plugin struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata is the manifest's metadata.
type Metadata struct {
	Name string `json:"name"`
}

// Spec is the plugin description and its platforms.
type Spec struct {
	Version          string     `json:"version"`
	Homepage         string     `json:"homepage"`
	ShortDescription string     `json:"shortDescription"`
	Description      string     `json:"description"`
	Caveats          string     `json:"caveats"`
	Platforms        []Platform `json:"platforms"`
}

// Platform is one downloadable archive and the selector that picks it.
type Platform struct {
	Selector *Selector `json:"selector"`
	URI      string    `json:"uri"`
	Sha256   string    `json:"sha256"`
	Files    []File    `json:"files,omitempty"`
	Bin      string    `json:"bin"`
}

// Selector picks a platform by os and arch labels.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// File copies a path of the archive into the installation.
type File struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Platforms the release must cover.
var (
	wantOS   = []string{"darwin", "linux", "windows"}
	wantArch = []string{"amd64", "arm64"}
)

const (
	apiVersion = "krew.googlecontainertools.github.com/v1alpha2"
	pluginName = "svctrace"
	binName    = "kubectl-svctrace"
)

var (
	semverRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$`)
	shaRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// {{addURIAndSha "URL" .TagName }}, as krew-release-bot writes it.
	addURIAndShaRE = regexp.MustCompile(`^(\s*)\{\{\s*addURIAndSha\s+"([^"]+)"\s+\.TagName\s*\}\}\s*$`)
	tagNameRE      = regexp.MustCompile(`\{\{\s*\.TagName\s*\}\}`)
)

func main() {
	template := flag.Bool("template", false, "the files are krew-release-bot templates (.krew.yaml): render them first")
	version := flag.String("version", "v0.0.0", "with --template: the release tag to render")
	archives := flag.String("archives", "", "directory holding the release archives: check (or, rendering a template, compute) each platform's sha256 and contents")
	render := flag.Bool("render", false, "with --template: print the rendered manifest instead of only validating it")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: check-manifest [--template [--render] [--version V]] [--archives DIR] FILE...")
		os.Exit(2)
	}
	failed := false
	for _, file := range flag.Args() {
		out, errs := check(file, *template, *version, *archives)
		if *render && len(errs) == 0 {
			os.Stdout.Write(out)
		}
		for _, err := range errs {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			failed = true
		}
		if len(errs) == 0 && !*render {
			fmt.Fprintf(os.Stderr, "%s: ok\n", file)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// check validates one manifest (or template) and returns the manifest text
// that was validated.
func check(file string, template bool, version, archives string) ([]byte, []error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []error{err}
	}
	name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	if template {
		name = pluginName // .krew.yaml has no plugin name in its file name
		sha := placeholderSHA
		if archives != "" {
			sha = archiveSHA(archives)
		}
		data, err = Render(data, version, sha)
		if err != nil {
			return nil, []error{err}
		}
	}
	var p Plugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		return nil, []error{fmt.Errorf("not a valid plugin manifest: %w", err)}
	}
	errs := Validate(&p, name)
	if archives != "" {
		errs = append(errs, CheckArchives(&p, archives)...)
	}
	return data, errs
}

// Render turns a krew-release-bot template into a manifest: {{ .TagName }}
// becomes version, each {{addURIAndSha "URL" .TagName }} line becomes uri
// and sha256 lines, the hash coming from sha(url), and top-level comment
// lines are dropped.
func Render(tmpl []byte, version string, sha func(uri string) (string, error)) ([]byte, error) {
	var out bytes.Buffer
	for i, line := range strings.Split(string(tmpl), "\n") {
		if strings.HasPrefix(line, "#") {
			continue // the template's own comments describe the template
		}
		if m := addURIAndShaRE.FindStringSubmatch(line); m != nil {
			uri := tagNameRE.ReplaceAllString(m[2], version)
			sum, err := sha(uri)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			// Quoted: an all-digit hash would otherwise read as a YAML number.
			fmt.Fprintf(&out, "%suri: %s\n%ssha256: \"%s\"\n", m[1], uri, m[1], sum)
			continue
		}
		if strings.Contains(line, "{{") && !tagNameRE.MatchString(line) {
			return nil, fmt.Errorf("line %d: template action this renderer does not know: %s", i+1, strings.TrimSpace(line))
		}
		out.WriteString(tagNameRE.ReplaceAllString(line, version))
		out.WriteByte('\n')
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

func placeholderSHA(string) (string, error) { return strings.Repeat("0", 64), nil }

// archiveSHA hashes the local archive named like the URI's last element.
func archiveSHA(dir string) func(string) (string, error) {
	return func(uri string) (string, error) {
		return fileSHA(filepath.Join(dir, path.Base(uri)))
	}
}

func fileSHA(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("hash archive: %w (build it with make dist)", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Validate checks the manifest's fields; fileName is the manifest's file
// name without extension (krew-index requires it to be the plugin name).
func Validate(p *Plugin, fileName string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if p.APIVersion != apiVersion {
		bad("apiVersion is %q, want %q", p.APIVersion, apiVersion)
	}
	if p.Kind != "Plugin" {
		bad("kind is %q, want Plugin", p.Kind)
	}
	if p.Metadata.Name != pluginName {
		bad("metadata.name is %q, want %q", p.Metadata.Name, pluginName)
	}
	if fileName != p.Metadata.Name {
		bad("file name %q does not match metadata.name %q (krew-index wants NAME.yaml)", fileName, p.Metadata.Name)
	}
	s := &p.Spec
	if !semverRE.MatchString(s.Version) {
		bad("spec.version %q is not a semantic version with a leading v (e.g. v0.1.0)", s.Version)
	}
	if u, err := url.Parse(s.Homepage); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("spec.homepage %q is not an https URL", s.Homepage)
	}
	switch n := len(s.ShortDescription); {
	case n == 0:
		bad("spec.shortDescription is empty")
	case n > 50:
		bad("spec.shortDescription is %d characters: krew lists it in one line, keep it to 50", n)
	}
	if strings.TrimSpace(s.Description) == "" {
		bad("spec.description is empty")
	}
	// Users must know before installing what the plugin does to a node.
	for _, word := range []string{"privileged", "iptables"} {
		if !strings.Contains(strings.ToLower(s.Caveats), word) {
			bad("spec.caveats must say that svctrace runs a privileged pod and changes iptables rules on the node (%q is missing)", word)
		}
	}
	if len(s.Platforms) == 0 {
		bad("spec.platforms is empty")
	}

	seen := map[string]int{}
	for i, pl := range s.Platforms {
		where := fmt.Sprintf("spec.platforms[%d]", i)
		if pl.Selector == nil || len(pl.Selector.MatchLabels) == 0 {
			bad("%s: selector.matchLabels with os and arch is missing", where)
			continue
		}
		osName, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		if !contains(wantOS, osName) {
			bad("%s: selector os %q is not one of %s", where, osName, strings.Join(wantOS, ", "))
		}
		if !contains(wantArch, arch) {
			bad("%s: selector arch %q is not one of %s", where, arch, strings.Join(wantArch, ", "))
		}
		for k := range pl.Selector.MatchLabels {
			if k != "os" && k != "arch" {
				bad("%s: selector label %q: only os and arch are used", where, k)
			}
		}
		key := osName + "/" + arch
		if j, dup := seen[key]; dup {
			bad("%s: selector %s already used by spec.platforms[%d]", where, key, j)
		}
		seen[key] = i

		u, err := url.Parse(pl.URI)
		switch {
		case pl.URI == "":
			bad("%s: uri is missing", where)
		case err != nil || u.Scheme != "https" || u.Host == "":
			bad("%s: uri %q is not an https URL", where, pl.URI)
		case !strings.HasSuffix(pl.URI, ".tar.gz") && !strings.HasSuffix(pl.URI, ".zip"):
			bad("%s: uri %q is not a .tar.gz or .zip archive", where, pl.URI)
		default:
			base := path.Base(u.Path)
			if !strings.Contains(base, s.Version) || !strings.Contains(base, osName+"_"+arch) {
				bad("%s: uri %q does not name version %s and platform %s_%s", where, pl.URI, s.Version, osName, arch)
			}
		}
		if !shaRE.MatchString(pl.Sha256) {
			bad("%s: sha256 %q is not 64 lower-case hex digits", where, pl.Sha256)
		}
		wantBin := binName
		if osName == "windows" {
			wantBin += ".exe"
		}
		if pl.Bin != wantBin {
			bad("%s: bin is %q, want %q", where, pl.Bin, wantBin)
		}
		if len(pl.Files) > 0 {
			from := map[string]bool{}
			for _, f := range pl.Files {
				from[f.From] = true
				if f.From == "" || f.To == "" {
					bad("%s: files entry %+v needs from and to", where, f)
				}
			}
			for _, need := range []string{pl.Bin, "LICENSE"} {
				if need != "" && !from[need] {
					bad("%s: files does not install %q", where, need)
				}
			}
		}
	}
	for _, o := range wantOS {
		for _, a := range wantArch {
			if _, ok := seen[o+"/"+a]; !ok {
				bad("spec.platforms: no archive for %s/%s", o, a)
			}
		}
	}
	return errs
}

// CheckArchives checks each platform's archive in dir: its sha256 and that
// it holds the binary and LICENSE.
func CheckArchives(p *Plugin, dir string) []error {
	var errs []error
	for i, pl := range p.Spec.Platforms {
		if pl.URI == "" {
			continue
		}
		file := filepath.Join(dir, path.Base(pl.URI))
		sum, err := fileSHA(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.platforms[%d]: %w", i, err))
			continue
		}
		if sum != pl.Sha256 {
			errs = append(errs, fmt.Errorf("spec.platforms[%d]: sha256 %s does not match %s (%s): rebuild with make dist and render the manifest again", i, pl.Sha256, file, sum))
		}
		if !strings.HasSuffix(file, ".tar.gz") {
			continue
		}
		names, err := tarNames(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("spec.platforms[%d]: read %s: %w", i, file, err))
			continue
		}
		for _, need := range []string{pl.Bin, "LICENSE"} {
			if !names[need] {
				errs = append(errs, fmt.Errorf("spec.platforms[%d]: %s does not contain %s (it has %s)", i, file, need, strings.Join(sortedKeys(names), ", ")))
			}
		}
	}
	return errs
}

func tarNames(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names[strings.TrimPrefix(h.Name, "./")] = true
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
