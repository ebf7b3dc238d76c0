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
func watchPods(ctx context.Context, client kubernetes.Interface, ns, selector string, out chan<- podEvent) {
	send := func(ev podEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	known := map[string]bool{}
	for ctx.Err() == nil {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			if ctx.Err() != nil || !send(podEvent{err: apiError(err, "list", "pods", ns)}) {
				return
			}
			sleep(ctx, rewatchDelay)
			continue
		}
		present := map[string]bool{}
		for i := range list.Items {
			p := &list.Items[i]
			present[p.Name] = true
			known[p.Name] = true
			if !send(podEvent{pod: p, name: p.Name}) {
				return
			}
		}
		for name := range known {
			if !present[name] {
				delete(known, name)
				if !send(podEvent{name: name, deleted: true}) {
					return
				}
			}
		}
		w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion})
		if err != nil {
			if ctx.Err() != nil || !send(podEvent{err: apiError(err, "watch", "pods", ns)}) {
				return
			}
			sleep(ctx, rewatchDelay)
			continue
		}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue // a watch error status: list again
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				known[p.Name] = true
				if !send(podEvent{pod: p, name: p.Name}) {
					w.Stop()
					return
				}
			case watch.Deleted:
				delete(known, p.Name)
				if !send(podEvent{pod: p, name: p.Name, deleted: true}) {
					w.Stop()
					return
				}
			}
		}
		w.Stop()
		sleep(ctx, rewatchDelay)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
