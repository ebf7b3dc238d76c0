package intern

import (
	"strconv"
	"testing"
	"unsafe"
)

// TestBounded: past its cap the Table stops remembering, so hostile input
// cannot grow it without bound; strings stay correct.
func TestBounded(t *testing.T) {
	in := New(4)
	for i := 0; i < 100; i++ {
		s := "chain-" + strconv.Itoa(i)
		if got := in.Get([]byte(s)); got != s {
			t.Fatalf("Get(%q) = %q", s, got)
		}
	}
	if in.Len() != 4 {
		t.Errorf("Table holds %d strings, want its cap 4", in.Len())
	}
}

// TestShared: the same bytes give the same string, not a copy.
func TestShared(t *testing.T) {
	in := New(8)
	a := in.Get([]byte("KUBE-SERVICES"))
	b := in.Get([]byte("KUBE-SERVICES"))
	if a != b || unsafe.StringData(a) != unsafe.StringData(b) || in.Len() != 1 {
		t.Fatalf("Get twice: %q %q, %d remembered", a, b, in.Len())
	}
	if in.Get(nil) != "" {
		t.Error("Get(nil) is not empty")
	}
}
