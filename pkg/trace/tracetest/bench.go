package tracetest

import (
	"runtime"
	"testing"
	"time"
)

// TimeOnThread runs fn(0) ... fn(b.N-1) as the benchmark's timed loop,
// allocations reported, on one locked OS thread, and reports cpu-ns/op:
// the CPU time that thread used, which other load on a shared machine does
// not inflate. It returns that time (0 where it cannot be read).
func TimeOnThread(b *testing.B, fn func(i int)) time.Duration {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := ThreadCPU()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fn(i)
	}
	b.StopTimer()
	cpu := ThreadCPU() - cpu0
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
	return cpu
}
