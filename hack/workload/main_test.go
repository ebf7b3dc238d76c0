package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// syncBuffer lets the test read what the server goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSpace(s.b.String()), "\n")
}

func TestHTTPLogsClientAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- serveHTTP(ctx, ln, "pod-a", &out) }()

	tests := []struct {
		name   string
		method string
		path   string
	}{
		{name: "root", method: "GET", path: "/"},
		{name: "nested path", method: "GET", path: "/x/y"},
		{name: "head", method: "HEAD", path: "/"},
	}
	var wantLog []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.0\r\nHost: test\r\n\r\n", tc.method, tc.path)
			resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: tc.method})
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			wantBody := "hello from pod-a\n"
			if tc.method == "HEAD" {
				wantBody = ""
			}
			if diff := cmp.Diff(wantBody, string(body)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200", resp.StatusCode)
			}
			wantLog = append(wantLog, fmt.Sprintf("http client=%s method=%s path=%s server=pod-a", conn.LocalAddr(), tc.method, tc.path))
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serveHTTP: %v", err)
	}
	want := append([]string{"http listening on " + ln.Addr().String()}, wantLog...)
	if diff := cmp.Diff(want, out.lines()); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}

func TestUDPEcho(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- serveUDPEcho(ctx, pc, &out) }()

	tests := []struct {
		name    string
		payload string
	}{
		{name: "short", payload: "ping"},
		{name: "longer", payload: strings.Repeat("svctrace", 100)},
	}
	var wantLog []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("udp", pc.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte(tc.payload)); err != nil {
				t.Fatal(err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.payload, string(buf[:n])); diff != "" {
				t.Errorf("echo (-want +got):\n%s", diff)
			}
			wantLog = append(wantLog, fmt.Sprintf("udp client=%s bytes=%d", conn.LocalAddr(), len(tc.payload)))
		})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serveUDPEcho: %v", err)
	}
	want := append([]string{"udp-echo listening on " + pc.LocalAddr().String()}, wantLog...)
	if diff := cmp.Diff(want, out.lines()); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}

func TestRunRejectsBadArguments(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no mode", args: nil, wantErr: usage},
		{name: "unknown mode", args: []string{"tcp-echo"}, wantErr: `unknown mode "tcp-echo": ` + usage},
		{name: "bad flag", args: []string{"http", "-port", "80"}, wantErr: "flag provided but not defined: -port"},
		{name: "bad address", args: []string{"http", "-addr", "127.0.0.1:99999"}, wantErr: "listen on tcp 127.0.0.1:99999: listen tcp: address 99999: invalid port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.args, io.Discard)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.wantErr, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}
