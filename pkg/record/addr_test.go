package record

import "testing"

func TestHost(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:80":         "10.0.0.1",
		"10.0.0.1":            "10.0.0.1",
		"[fd00::1]:443":       "fd00::1",
		"fd00::1":             "fd00::1",
		"[fd00::1]":           "fd00::1",
		"":                    "",
		"10.244.0.5:5353":     "10.244.0.5",
		"[2001:db8::5]:30080": "2001:db8::5",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
}
