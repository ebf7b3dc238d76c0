package kube

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// requestCounter counts the API requests of a fake clientset (and of the
// pod streams), split into before and after every agent was ready.
type requestCounter struct {
	mu     sync.Mutex
	ready  atomic.Bool
	before map[string]int
	after  map[string]int
}

func (c *requestCounter) add(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.before
	if c.ready.Load() {
		m = c.after
	}
	m[what]++
}

func (c *requestCounter) total(m map[string]int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func (c *requestCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, m := range []map[string]int{c.before, c.after} {
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s=%d", k, m[k]))
		}
		parts = append(parts, strings.Join(kv, " "))
	}
	return "before ready: " + parts[0] + "; after: " + parts[1]
}

// countingStreams counts the pod streams opened on top of a fakeIO: each
// is one long-lived request (pods/log follow, pods/attach).
type countingStreams struct {
	*fakeIO
	c *requestCounter
}

func (f *countingStreams) Output(ctx context.Context, ns, pod string) (io.ReadCloser, error) {
	f.c.add("get pods/log")
	return f.fakeIO.Output(ctx, ns, pod)
}

func (f *countingStreams) HoldStdin(ctx context.Context, ns, pod string, stdin io.Reader) error {
	f.c.add("create pods/attach")
	return f.fakeIO.HoldStdin(ctx, ns, pod, stdin)
}

// TestTracerRequestsDoNotGrowWithNodes runs a session on 2 and on 200
// nodes against a fake API server that counts every request: each node
// costs its pod's create and delete and its two streams; the whole
// session one list and one watch; and while tracing, nothing at all, so
// requests per second do not grow with the nodes (or with time).
func TestTracerRequestsDoNotGrowWithNodes(t *testing.T) {
	for _, n := range []int{2, 200} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			setup(t)
			c := &requestCounter{before: map[string]int{}, after: map[string]int{}}
			client := fake.NewClientset(namespace("default"))
			// Reactors run last-prepended first: count, then the
			// kubelet's status, then the watch feed.
			bigWatch(client, 8*n+100)
			kubelet(client, running)
			client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
				what := a.GetVerb() + " " + a.GetResource().Resource
				if a.GetSubresource() != "" {
					what += "/" + a.GetSubresource()
				}
				c.add(what)
				return false, nil, nil
			})
			client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
				c.add("watch " + a.GetResource().Resource)
				return false, nil, nil
			})
			var nodes []string
			scripts := map[string]script{}
			gate := make(chan struct{})
			for i := range n {
				node := fmt.Sprintf("node-%03d", i)
				nodes = append(nodes, node)
				scripts[PodName("test1", node)] = script{before: []string{readyLine(node, "v0.1.0")}, gate: gate, after: []string{byeLine("duration", "")}}
			}
			pio := &countingStreams{fakeIO: newFakeIO(scripts), c: c}
			stderr := &syncBuffer{when: "Tracing ", notify: make(chan struct{})}
			ready := stderr.notify
			tr := &Tracer{Client: client, IO: pio, Out: &fakeSink{}, ErrOut: stderr}
			cfg := traceConfig(nodes...)
			cfg.StartTimeout = 30 * time.Second
			done := make(chan error, 1)
			go func() { done <- tr.Run(context.Background(), cfg) }()
			select {
			case <-ready:
			case err := <-done:
				t.Fatalf("Run() ended before the agents were ready: %v", err)
			}
			c.ready.Store(true)
			// Let the streams that start with each agent open, then trace
			// for a while: four of the old per-pod poll periods, which
			// cost a GET per pod each.
			time.Sleep(200 * time.Millisecond)
			settled := c.total(c.after)
			time.Sleep(time.Second)
			steady := c.total(c.after) - settled
			close(gate)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			t.Logf("%d nodes: %s", n, c)
			if steady != 0 {
				t.Errorf("%d API requests while tracing, want none: %s", steady, c)
			}
			c.mu.Lock()
			got := map[string]int{}
			for _, m := range []map[string]int{c.before, c.after} {
				for k, v := range m {
					got[k] += v
				}
			}
			c.mu.Unlock()
			want := map[string]int{
				"create pods": n, "delete pods": n, "list pods": 1, "watch pods": 1,
				"get pods/log": n, "create pods/attach": n,
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: %d requests, want %d (%s)", k, got[k], v, c)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected requests %s: %d (%s)", k, got[k], c)
				}
			}
			if left := remainingPods(t, client); len(left) > 0 {
				t.Errorf("%d pods left behind", len(left))
			}
		})
	}
}

// bigWatch makes the fake API server's pod watches buffer size events: the
// fake's own watchers hold 100 and panic beyond, where a real API server
// buffers for a slow reader.
func bigWatch(client *fake.Clientset, size int) {
	var mu sync.Mutex
	var watchers []*watch.FakeWatcher
	client.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		defer mu.Unlock()
		w := watch.NewFakeWithChanSize(size, false)
		watchers = append(watchers, w)
		return true, w, nil
	})
	react := k8stesting.ObjectReaction(client.Tracker())
	for _, verb := range []string{"create", "update", "delete"} {
		client.PrependReactor(verb, "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			var old runtime.Object
			if d, ok := a.(k8stesting.DeleteAction); ok {
				old, _ = client.Tracker().Get(a.GetResource(), a.GetNamespace(), d.GetName())
			}
			handled, obj, err := react(a)
			if err != nil {
				return handled, obj, err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, w := range watchers {
				switch verb {
				case "create":
					w.Add(obj)
				case "update":
					w.Modify(obj)
				case "delete":
					w.Delete(old)
				}
			}
			return true, obj, nil
		})
	}
}
