package kube

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// CleanupConfig is one `kubectl svctrace cleanup` run.
type CleanupConfig struct {
	// Namespace is where the cleanup pods run, and where leftovers are
	// looked for when listing pods in all namespaces is not allowed.
	Namespace string
	// Node limits the cleanup to one node ("" = every Ready node).
	Node  string
	Image string
	// Timeout bounds each node's cleanup pod (image pull included).
	Timeout time.Duration
}

// CleanupResult is what a cleanup did.
type CleanupResult struct {
	// PodsDeleted are the leftover agent pods deleted, as "ns/name".
	PodsDeleted []string
	Nodes       []NodeCleanup
}

// NodeCleanup is one node's sweep of svctrace TRACE rules.
type NodeCleanup struct {
	Node         string
	RulesRemoved int
	Err          error
}

// Cleanup deletes leftover svctrace pods (also those of sessions still
// running: their agents remove their rules when stopped), then runs
// `agent --cleanup` in a short-lived pod on each node to remove every TRACE
// rule tagged svctrace that a killed agent may have left. progress gets one
// line per step.
func Cleanup(ctx context.Context, client kubernetes.Interface, pio PodIO, cfg CleanupConfig, progress io.Writer) (CleanupResult, error) {
	var res CleanupResult
	nodes, err := cleanupNodes(ctx, client, cfg.Node)
	if err != nil {
		return res, err
	}

	deleted, err := deleteLeftovers(ctx, client, cfg, progress)
	res.PodsDeleted = deleted
	if err != nil {
		return res, err
	}

	session := newSessionID()
	results := make([]NodeCleanup, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := cleanNode(ctx, client, pio, cfg, session, node)
			results[i] = NodeCleanup{Node: node, RulesRemoved: n, Err: err}
		}()
	}
	wg.Wait()
	res.Nodes = results
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return res, errors.Join(errs...)
}

// cleanupNodes returns the node given, or every Ready node.
func cleanupNodes(ctx context.Context, client kubernetes.Interface, only string) ([]string, error) {
	if only != "" {
		n, err := client.CoreV1().Nodes().Get(ctx, only, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("node %q not found: list nodes with `kubectl get nodes`", only)
		}
		if err != nil {
			return nil, apiError(err, "get", "nodes", "")
		}
		if !nodeReady(n) {
			return nil, fmt.Errorf("node %q is NotReady, so a cleanup pod cannot run there: retry when it is Ready (the rules do nothing without an agent reading them)", only)
		}
		return []string{only}, nil
	}
	list, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError(err, "list", "nodes", "")
	}
	var names []string
	for i := range list.Items {
		if nodeReady(&list.Items[i]) {
			names = append(names, list.Items[i].Name)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no node is Ready: nothing can run a cleanup pod; check `kubectl get nodes`")
	}
	return names, nil
}

// deleteLeftovers deletes every svctrace pod (on cfg.Node only, if set).
func deleteLeftovers(ctx context.Context, client kubernetes.Interface, cfg CleanupConfig, progress io.Writer) ([]string, error) {
	opts := metav1.ListOptions{LabelSelector: ManagedSelector}
	if cfg.Node != "" {
		opts.FieldSelector = "spec.nodeName=" + cfg.Node
	}
	list, err := client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
	if apierrors.IsForbidden(err) {
		fmt.Fprintf(progress, "Not allowed to list pods in all namespaces; looking for leftovers in namespace %s only\n", cfg.Namespace)
		list, err = client.CoreV1().Pods(cfg.Namespace).List(ctx, opts)
	}
	if err != nil {
		return nil, apiError(err, "list", "pods", cfg.Namespace)
	}
	byNS := map[string][]string{}
	var deleted []string
	for _, p := range list.Items {
		if cfg.Node != "" && p.Spec.NodeName != cfg.Node {
			continue // field selectors are advisory for some servers and fakes
		}
		byNS[p.Namespace] = append(byNS[p.Namespace], p.Name)
		deleted = append(deleted, p.Namespace+"/"+p.Name)
	}
	sort.Strings(deleted)
	if len(deleted) > 0 {
		fmt.Fprintf(progress, "Deleting %d leftover svctrace pod(s): %s\n", len(deleted), strings.Join(deleted, ", "))
	}
	var errs []error
	dctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	for ns, names := range byNS {
		if err := deleteAndWait(dctx, client, ns, names); err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}

// cleanNode runs `agent --cleanup` on node and returns how many rules it
// removed. The pod is deleted afterwards whatever happened.
func cleanNode(ctx context.Context, client kubernetes.Interface, pio PodIO, cfg CleanupConfig, session, node string) (removed int, err error) {
	pod := AgentPod(PodOptions{
		Namespace:      cfg.Namespace,
		Node:           node,
		Session:        session,
		Image:          cfg.Image,
		Purpose:        PurposeCleanup,
		Args:           []string{"agent", "--cleanup", "--node=" + node},
		Target:         "",
		ActiveDeadline: cfg.Timeout + deadlineMargin,
	})
	if _, err := client.CoreV1().Pods(cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return 0, createError(err, cfg.Namespace, node)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		if derr := deleteAndWait(dctx, client, cfg.Namespace, []string{pod.Name}); derr != nil {
			err = errors.Join(err, derr)
		}
	}()

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	phase, err := waitFinished(wctx, client, cfg.Namespace, pod.Name)
	if err != nil {
		return 0, fmt.Errorf("cleanup on node %s: %w", node, err)
	}
	out, err := pio.Output(wctx, cfg.Namespace, pod.Name)
	if err != nil {
		return 0, fmt.Errorf("cleanup on node %s: read its output: %w", node, err)
	}
	defer out.Close()
	bye, tail, err := readBye(out)
	if err != nil {
		return 0, fmt.Errorf("cleanup on node %s: read its output: %w", node, err)
	}
	switch {
	case bye == nil && phase == corev1.PodSucceeded:
		return 0, fmt.Errorf("cleanup on node %s finished without reporting what it removed (last output: %s): the agent image may be too old; pass a current one with --image", node, orText(tail, "none"))
	case bye == nil:
		return 0, fmt.Errorf("cleanup on node %s failed: %s", node, orText(tail, "no output"))
	case bye.Error != "":
		return bye.RulesRemoved, fmt.Errorf("cleanup on node %s: %s", node, bye.Error)
	}
	return bye.RulesRemoved, nil
}

// waitFinished polls a run-to-completion pod until it ends.
func waitFinished(ctx context.Context, client kubernetes.Interface, ns, name string) (corev1.PodPhase, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return "", fmt.Errorf("pod %s/%s did not finish in time: check it with `kubectl describe pod -n %s %s`", ns, name, ns, name)
			}
			return "", apiError(err, "get", "pods", ns)
		}
		switch pod.Status.Phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			return pod.Status.Phase, nil
		}
		// An image that cannot be pulled never finishes: say so now.
		if _, _, err := podStarted(pod); err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("pod %s/%s did not finish in time: check it with `kubectl describe pod -n %s %s`", ns, name, ns, name)
		case <-tick.C:
		}
	}
}

// readBye reads agent output to the end and returns its bye record and the
// last line that was not a record.
func readBye(r io.Reader) (*record.Bye, string, error) {
	var bye *record.Bye
	tail := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	for sc.Scan() {
		rec, ok, err := decodeRecord(sc.Bytes())
		if err != nil || !ok {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				tail = line
			}
			continue
		}
		if b, isBye := rec.(*record.Bye); isBye {
			bye = b
		}
	}
	return bye, tail, sc.Err()
}
