package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "workload: %v\n", err)
		os.Exit(1)
	}
}

const usage = "usage: workload http|udp-echo [-addr HOST:PORT]"

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	mode := args[0]
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address (default :80 for http, :5353 for udp-echo)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	name, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("read host name: %w", err)
	}
	switch mode {
	case "http":
		if *addr == "" {
			*addr = ":80"
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return fmt.Errorf("listen on tcp %s: %w", *addr, err)
		}
		return serveHTTP(ctx, ln, name, out)
	case "udp-echo":
		if *addr == "" {
			*addr = ":5353"
		}
		conn, err := net.ListenPacket("udp", *addr)
		if err != nil {
			return fmt.Errorf("listen on udp %s: %w", *addr, err)
		}
		return serveUDPEcho(ctx, conn, out)
	default:
		return fmt.Errorf("unknown mode %q: %s", mode, usage)
	}
}

// logWriter serialises log lines: handlers run on many goroutines.
type logWriter struct {
	mu  sync.Mutex
	out io.Writer
}

func (w *logWriter) printf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.out, format+"\n", args...)
}

// httpHandler answers with the server's name and logs the peer address exactly
// as the kernel delivered it (no X-Forwarded-For: the point is the packet's source).
func httpHandler(name string, log func(string, ...any)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log("http client=%s method=%s path=%s server=%s", r.RemoteAddr, r.Method, r.URL.Path, name)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello from %s\n", name)
	})
}

func serveHTTP(ctx context.Context, ln net.Listener, name string, out io.Writer) error {
	lw := &logWriter{out: out}
	srv := &http.Server{Handler: httpHandler(name, lw.printf), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx) // best effort: the process is exiting anyway
	}()
	lw.printf("http listening on %s", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

func serveUDPEcho(ctx context.Context, conn net.PacketConn, out io.Writer) error {
	lw := &logWriter{out: out}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	lw.printf("udp-echo listening on %s", conn.LocalAddr())
	buf := make([]byte, 65535)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read udp: %w", err)
		}
		lw.printf("udp client=%s bytes=%d", peer, n)
		if _, err := conn.WriteTo(buf[:n], peer); err != nil {
			lw.printf("udp reply to %s failed: %v", peer, err)
		}
	}
}
