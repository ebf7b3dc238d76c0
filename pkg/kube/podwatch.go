package kube

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// podEvent is one change the session's pod watch saw.
type podEvent struct {
	pod     *corev1.Pod // the pod as it is now (deleted: as last seen)
	name    string
	deleted bool
	err     error // the watch broke (it is re-established)
}

// rewatchDelay is how long a broken watch waits before it lists again; a
// variable so tests can shorten it.
var rewatchDelay = time.Second

// watchPods follows every pod of a session with ONE list and ONE watch on
// the session's label, however many nodes the session runs on: pod
// start-up, deaths and deletion are events, never polled per pod. When the
// API server ends the watch (it does after a while) it lists again, says
// which pods went away meanwhile and watches from there. It sends on out
// until ctx ends.
//
// It never makes the watch wait for the session: events queue here while
// the session is busy (creating or deleting hundreds of pods).
func watchPods(ctx context.Context, client kubernetes.Interface, ns, selector string, out chan<- podEvent) {
	var queue []podEvent
	// pump sends the queue while waiting for the next watch event (or
	// the delay); alive is false once ctx ended.
	pump := func(more <-chan watch.Event, wait <-chan time.Time) (watch.Event, bool, bool) {
		for {
			var send chan<- podEvent
			var next podEvent
			if len(queue) > 0 {
				send, next = out, queue[0]
			}
			select {
			case send <- next:
				queue = queue[1:]
			case ev, ok := <-more:
				return ev, ok, true
			case <-wait:
				return watch.Event{}, false, true
			case <-ctx.Done():
				return watch.Event{}, false, false
			}
		}
	}
	pause := func() bool {
		_, _, alive := pump(nil, time.After(rewatchDelay))
		return alive
	}
	known := map[string]bool{}
	for ctx.Err() == nil {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			queue = append(queue, podEvent{err: apiError(err, "list", "pods", ns)})
			if !pause() {
				return
			}
			continue
		}
		present := map[string]bool{}
		for i := range list.Items {
			p := &list.Items[i]
			present[p.Name] = true
			known[p.Name] = true
			queue = append(queue, podEvent{pod: p, name: p.Name})
		}
		for name := range known {
			if !present[name] {
				delete(known, name)
				queue = append(queue, podEvent{name: name, deleted: true})
			}
		}
		w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			queue = append(queue, podEvent{err: apiError(err, "watch", "pods", ns)})
			if !pause() {
				return
			}
			continue
		}
		for {
			ev, ok, alive := pump(w.ResultChan(), nil)
			if !alive {
				w.Stop()
				return
			}
			if !ok {
				break
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue // a watch error status: the watch ends, list again
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				known[p.Name] = true
				queue = append(queue, podEvent{pod: p, name: p.Name})
			case watch.Deleted:
				delete(known, p.Name)
				queue = append(queue, podEvent{pod: p, name: p.Name, deleted: true})
			}
		}
		w.Stop()
		if !pause() {
			return
		}
	}
}
