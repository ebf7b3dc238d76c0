package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/svctrace/kubectl-svctrace/pkg/cmd"
	"github.com/svctrace/kubectl-svctrace/pkg/trace/tracetest"
)

const captures = "../../test/testdata/captures/"

// legacyRecords is the number of kmsg records the whole-command benchmark
// reads: the pod-to-svc capture (57 records, 7 packets) 9,000 times.
const legacyRecords = 513000

// corpusFile is where TestWriteCorpus writes the benchmark's corpus, to
// measure the built binary on it (time, peak memory).
var corpusFile = flag.String("corpus", "", "TestWriteCorpus: write the whole-command benchmark's corpus to this file")

// writeCorpus writes n legacy kmsg TRACE records to a file in a temporary
// directory (see writeCorpusTo) and returns its path.
func writeCorpus(tb testing.TB, n int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "corpus.kmsg")
	if err := writeCorpusTo(path, n); err != nil {
		tb.Fatal(err)
	}
	return path
}

// writeCorpusTo writes n legacy kmsg TRACE records to path: the pod-to-svc
// capture repeated with fresh kmsg sequence numbers, timestamps 200 ms
// apart per copy, IPv4 IDs and TCP sequence numbers, so every copy forms
// new packets.
func writeCorpusTo(path string, n int) error {
	data, err := os.ReadFile(captures + "pod-to-svc.legacy.kmsg.txt")
	if err != nil {
		return err
	}
	var base []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, ";TRACE: ") {
			base = append(base, l)
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	seq := uint64(1000)
	for c := 0; seq-1000 < uint64(n); c++ {
		for _, l := range base {
			if seq-1000 == uint64(n) {
				break
			}
			w.WriteString(tracetest.KmsgCopy(l, c, seq) + "\n")
			seq++
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestWriteCorpus writes the whole-command benchmark's corpus to the file
// -corpus names, if any:
//
//	go test -run TestWriteCorpus ./hack/regexp-reader/ -corpus=/tmp/corpus.kmsg
func TestWriteCorpus(t *testing.T) {
	if *corpusFile == "" {
		t.Skip("no -corpus FILE")
	}
	if err := writeCorpusTo(*corpusFile, legacyRecords); err != nil {
		t.Fatal(err)
	}
}

func TestRegexpReaderGroupsLikeAnalyze(t *testing.T) {
	corpus := writeCorpus(t, 57*3)
	var re bytes.Buffer
	if err := run([]string{corpus}, &re); err != nil {
		t.Fatal(err)
	}
	out := analyze(t, corpus)
	if got, want := strings.Count(re.String(), "\n"), strings.Count(out, "\n"); got != want || got != 21 {
		t.Errorf("regexp reader wrote %d packets, analyze %d; want 21 each (7 per copy)", got, want)
	}
}

// analyze runs `kubectl svctrace analyze -o json` on corpus, in process.
func analyze(tb testing.TB, corpus string) string {
	tb.Helper()
	var out bytes.Buffer
	root := cmd.NewCmdSvctrace(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: io.Discard})
	root.SetArgs([]string{"analyze", "-o", "json", "--rules", captures + "pod-to-svc.legacy.rules.txt", corpus})
	if err := root.Execute(); err != nil {
		tb.Fatal(err)
	}
	return out.String()
}

// BenchmarkAnalyzeVsRegexp runs, in every iteration and side by side on the
// same 513k-record file, `wc -l`, the regexp reader and the whole analyze
// -o json command (in process, output discarded), and reports each one's
// time per run and the ratios analyze/regexp and analyze/wc, in wall time
// and (the machine may be shared) in CPU time used by this process.
func BenchmarkAnalyzeVsRegexp(b *testing.B) {
	corpus := writeCorpus(b, legacyRecords)
	wc, err := exec.LookPath("wc")
	if err != nil {
		b.Skip("no wc on PATH")
	}
	var tWC, tRE, tAnalyze, cRE, cAnalyze time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := exec.Command(wc, "-l", corpus).Run(); err != nil {
			b.Fatal(err)
		}
		t1, c1 := time.Now(), processCPU()
		if err := run([]string{corpus}, io.Discard); err != nil {
			b.Fatal(err)
		}
		t2, c2 := time.Now(), processCPU()
		root := cmd.NewCmdSvctrace(genericiooptions.IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
		root.SetArgs([]string{"analyze", "-o", "json", "--rules", captures + "pod-to-svc.legacy.rules.txt", corpus})
		if err := root.Execute(); err != nil {
			b.Fatal(err)
		}
		t3, c3 := time.Now(), processCPU()
		tWC, tRE, tAnalyze = tWC+t1.Sub(t0), tRE+t2.Sub(t1), tAnalyze+t3.Sub(t2)
		cRE, cAnalyze = cRE+c2-c1, cAnalyze+c3-c2
	}
	n := float64(b.N)
	b.ReportMetric(tWC.Seconds()/n, "wc-s/op")
	b.ReportMetric(tRE.Seconds()/n, "regexp-s/op")
	b.ReportMetric(tAnalyze.Seconds()/n, "analyze-s/op")
	b.ReportMetric(float64(tAnalyze)/float64(tRE), "analyze/regexp")
	b.ReportMetric(float64(tAnalyze)/float64(tWC), "analyze/wc")
	if cRE > 0 {
		b.ReportMetric(float64(cAnalyze)/float64(cRE), "analyze-cpu/regexp-cpu")
	}
}

// BenchmarkAnalyze runs only the whole analyze -o json command of
// BenchmarkAnalyzeVsRegexp on its 513k-record file, for profiles of it
// alone.
func BenchmarkAnalyze(b *testing.B) {
	corpus := writeCorpus(b, legacyRecords)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		root := cmd.NewCmdSvctrace(genericiooptions.IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
		root.SetArgs([]string{"analyze", "-o", "json", "--rules", captures + "pod-to-svc.legacy.rules.txt", corpus})
		if err := root.Execute(); err != nil {
			b.Fatal(err)
		}
	}
}
