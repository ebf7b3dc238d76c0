//go:build linux

package agent

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

const capturesDir = "../../test/testdata/captures/"

func readCapture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(capturesDir + name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// perServiceChainsIn lists the per-Service chains a save or nft text declares.
func perServiceChainsIn(data []byte, nft bool) []string {
	var out []string
	forEachLine(data, func(line string) {
		if nft {
			if name, ok := nftChainStart(strings.TrimSpace(line)); ok && rules.NewReach(rules.NftSyntax, rules.Traced{}).PerService(name) {
				out = append(out, name)
			}
			return
		}
		if strings.HasPrefix(line, ":") {
			if c := firstField(line[1:]); rules.NewReach(rules.IptablesSyntax, rules.Traced{}).PerService(c) {
				out = append(out, c)
			}
		}
	})
	sort.Strings(out)
	return out
}

func TestPruneIptablesSave(t *testing.T) {
	tests := []struct {
		name    string
		capture string
		traced  rules.Traced
		extra   []string
		want    []string // per-Service chains kept
		wantAll bool     // nothing pruned
	}{
		{
			name:    "ClusterIP keeps its service and endpoint chains only",
			capture: "node-to-svc.legacy.rules.txt",
			traced:  rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.173.227:80")}, Proto: "tcp"},
			want:    []string{"KUBE-SEP-4VYPMJP5OIECG6XZ", "KUBE-SEP-CDTZ4LIGVJRJUPAW", "KUBE-SEP-TJXBIUI2E22QKLD4", "KUBE-SVC-XJWXQFJLXSXKRMSG"},
		},
		{
			name:    "the kubernetes Service",
			capture: "node-to-svc.legacy.rules.txt",
			traced:  rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.1:443")}, Proto: "tcp"},
			want:    []string{"KUBE-SEP-4UC2PMYWTATREZAU", "KUBE-SVC-NPX46M4PTMTKRN6Y"},
		},
		{
			name:    "a wrong port leads nowhere: everything kept",
			capture: "node-to-svc.legacy.rules.txt",
			traced:  rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.173.227:81")}, Proto: "tcp"},
			wantAll: true,
		},
		{
			name:    "hash names of the traced Service are kept even if unreferenced",
			capture: "node-to-svc.legacy.rules.txt",
			traced:  rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.1:443")}, Proto: "tcp"},
			extra:   []string{"KUBE-SVC-XJWXQFJLXSXKRMSG"},
			want:    []string{"KUBE-SEP-4UC2PMYWTATREZAU", "KUBE-SEP-4VYPMJP5OIECG6XZ", "KUBE-SEP-CDTZ4LIGVJRJUPAW", "KUBE-SEP-TJXBIUI2E22QKLD4", "KUBE-SVC-NPX46M4PTMTKRN6Y", "KUBE-SVC-XJWXQFJLXSXKRMSG"},
		},
		{
			name:    "5,000 Services: one Service's chains and the NodePort's",
			capture: "../kube-proxy-5000-services.nft.rules.txt.gz",
			traced:  rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.127.188:124")}, NodePorts: []uint16{30080}, Proto: "tcp"},
			want: []string{
				"KUBE-EXT-Q3IGRLXQYQRXDATI",
				"KUBE-SEP-2764DSA4JKD32NBE", "KUBE-SEP-FKGVH5ALBRSXBUNG", "KUBE-SEP-GFH4B7XOSJ7O33TJ",
				"KUBE-SEP-IJK3Q37LOXUH7SCO", "KUBE-SEP-QGD65GNZYJWNXFTN", "KUBE-SEP-TADEUEPZSD2EGBGY",
				"KUBE-SVC-Q3IGRLXQYQRXDATI", "KUBE-SVC-ZLKK5SCXWDM3X43Z",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := readCapture(t, tt.capture)
			got := pruneIptablesSave(data, tt.traced, tt.extra)
			if tt.wantAll {
				if !bytes.Equal(got, data) {
					t.Errorf("pruned %d of %d bytes, want nothing pruned", len(data)-len(got), len(data))
				}
				return
			}
			if diff := cmp.Diff(tt.want, perServiceChainsIn(got, false)); diff != "" {
				t.Errorf("kept chains (-want +got):\n%s", diff)
			}
			// Every fixed chain and rule stays, in order: positions
			// inside kept chains must not move.
			var wantFixed, gotFixed []string
			keepFixed := func(dst *[]string) func(string) {
				return func(line string) {
					if strings.HasPrefix(line, "-A ") && !rules.NewReach(rules.IptablesSyntax, rules.Traced{}).PerService(firstField(line[3:])) {
						*dst = append(*dst, line)
					}
				}
			}
			forEachLine(data, keepFixed(&wantFixed))
			forEachLine(got, keepFixed(&gotFixed))
			if diff := cmp.Diff(wantFixed, gotFixed); diff != "" {
				t.Errorf("fixed chains changed (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPruneNftRuleset(t *testing.T) {
	data := readCapture(t, "node-to-svc.nftmode.ruleset.txt")
	rel := rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.173.227:80")}, NodePorts: []uint16{30080}, Proto: "tcp"}
	got := pruneNftRuleset(data, rel)
	want := []string{
		"external-BDXHFROF-default/myapp-np/tcp/",
		"service-6QYGQ5L4-default/myapp/tcp/",
		"service-BDXHFROF-default/myapp-np/tcp/",
	}
	if diff := cmp.Diff(want, perServiceChainsIn(got, true)); diff != "" {
		t.Errorf("kept chains (-want +got):\n%s", diff)
	}
	for _, fixed := range []string{"chain services {", "chain masquerading {", "chain nat-output {", "map service-ips {"} {
		if !bytes.Contains(got, []byte(fixed)) {
			t.Errorf("pruned output lost %q", fixed)
		}
	}
	if len(got)*2 > len(data) {
		t.Errorf("pruned output is %d of %d bytes: want most per-Service chains gone", len(got), len(data))
	}
	// Verdict map elements (and their comments) stay: explain names the
	// element a packet matched from them.
	ix := rules.NewIndex()
	if err := ix.AddNftRuleset(got); err != nil {
		t.Fatal(err)
	}
	if e, ok := ix.SetElement(rules.FamilyIPv4, rules.KubeProxyTable, rules.MapNoEndpointServices, "10.96.190.107", "tcp", "8080"); !ok || e.Comment != "default/noep:web" {
		t.Errorf("pruned output lost the no-endpoints element: %+v, %v", e, ok)
	}
	if _, ok := ix.SetElement(rules.FamilyIPv4, rules.KubeProxyTable, rules.MapServiceIPs, "10.96.4.7", "tcp", "80"); !ok {
		t.Error("pruned output lost a service-ips element of an untraced Service")
	}
}

func BenchmarkPruneIptablesSave5k(b *testing.B) {
	data := readCapture(b, "../kube-proxy-5000-services.nft.rules.txt.gz")
	rel := rules.Traced{Dsts: []netip.AddrPort{netip.MustParseAddrPort("10.96.127.188:124")}, Proto: "tcp"}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		pruneIptablesSave(data, rel, nil)
	}
}
