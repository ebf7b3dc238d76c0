package kube

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/streaming/pkg/httpstream"
)

func TestFallBackToSPDY(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"upgrade refused", &httpstream.UpgradeFailureError{Cause: errors.New("bad handshake")}, true},
		{"upgrade refused, wrapped", fmt.Errorf("attach: %w", &httpstream.UpgradeFailureError{Cause: errors.New("403")}), true},
		{"https proxy", errors.New("proxy: unknown scheme: https"), true},
		{"other error", errors.New("connection refused"), false},
		{"no error", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fallBackToSPDY(tt.err); got != tt.want {
				t.Errorf("fallBackToSPDY(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
