//go:build !linux

package tracetest

import "time"

// ThreadCPU returns 0: per-thread CPU time is read on Linux only.
func ThreadCPU() time.Duration { return 0 }
