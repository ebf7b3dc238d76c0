package kube

import (
	"context"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream"
)

// PodIO is the agent pod's two streams. It is an interface so the session
// logic is tested without a kubelet.
type PodIO interface {
	// Output follows the agent container's output from its very first line
	// until the container exits.
	Output(ctx context.Context, namespace, pod string) (io.ReadCloser, error)
	// HoldStdin attaches to the container's stdin and copies stdin into it
	// until stdin returns EOF, then closes it. The agent (--stdin-watch)
	// stops when its stdin closes, which is also what happens when this
	// process dies and the API server drops the attach connection.
	HoldStdin(ctx context.Context, namespace, pod string, stdin io.Reader) error
}

// NewPodIO returns the PodIO that talks to the API server: pods/log
// (follow) for the output and pods/attach for stdin.
//
// Why the output comes from pods/log and not from the attach stream: an
// attach only sees output written after it is established, and the pod is
// reported Running up to a kubelet relist period (1 s) after the container
// started, by when the agent has usually sent its ready record. The log
// stream starts at the container's first line, so nothing is lost.
func NewPodIO(config *rest.Config, client kubernetes.Interface) PodIO {
	return &apiPodIO{config: config, client: client}
}

type apiPodIO struct {
	config *rest.Config
	client kubernetes.Interface
}

func (a *apiPodIO) Output(ctx context.Context, namespace, pod string) (io.ReadCloser, error) {
	rc, err := a.client.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{
		Container: AgentContainer,
		Follow:    true,
	}).Stream(ctx)
	if err != nil {
		return nil, apiError(err, "get", "pods/log", namespace)
	}
	return rc, nil
}

func (a *apiPodIO) HoldStdin(ctx context.Context, namespace, pod string, stdin io.Reader) error {
	req := a.client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(namespace).Name(pod).SubResource("attach").
		VersionedParams(&corev1.PodAttachOptions{Container: AgentContainer, Stdin: true}, scheme.ParameterCodec)
	// WebSocket first (the API server's preferred streaming protocol since
	// 1.30), SPDY when the server or a proxy in between cannot upgrade.
	ws, err := remotecommand.NewWebSocketExecutor(a.config, "GET", req.URL().String())
	if err != nil {
		return fmt.Errorf("attach to agent pod %s/%s: %w", namespace, pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(a.config, "POST", req.URL())
	if err != nil {
		return fmt.Errorf("attach to agent pod %s/%s: %w", namespace, pod, err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, fallBackToSPDY)
	if err != nil {
		return fmt.Errorf("attach to agent pod %s/%s: %w", namespace, pod, err)
	}
	// The stream logs its goroutines' errors to the context's logger. The
	// ones that matter end the stream and are returned; the others come
	// when the session closes the connection under them, as it does at
	// every end ("Waiting for server to close stdin failed: use of closed
	// network connection" on the terminal after the summary).
	ctx = klog.NewContext(ctx, logr.Discard())
	if err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin}); err != nil {
		return apiError(err, "create", "pods/attach", namespace)
	}
	return nil
}

// fallBackToSPDY tells whether the WebSocket attach failed in a way SPDY may
// not: the upgrade was refused, or a proxy in between cannot tunnel it. The
// error types are k8s.io/streaming's, which client-go's WebSocket transport
// returns (apimachinery's httpstream has look-alike types that never match).
func fallBackToSPDY(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}
