package kube

import (
	"math"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilrand "k8s.io/apimachinery/pkg/util/rand"

	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

// Labels and annotations on everything svctrace creates, so leftovers can be
// found (kubectl svctrace cleanup) even if the client died.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "kubectl-svctrace"
	LabelName        = "app.kubernetes.io/name"
	NameValue        = "svctrace-agent"
	LabelSession     = "svctrace.io/session"
	LabelPurpose     = "svctrace.io/purpose"
	AnnotationTarget = "svctrace.io/service"
	AnnotationClient = "svctrace.io/client-version"

	// AgentContainer is the agent pod's only container.
	AgentContainer = "agent"
	// AgentBinary is the binary's path in the agent image (the same binary
	// as the plugin, run with its hidden agent subcommand).
	AgentBinary = "/kubectl-svctrace"
)

// Pod purposes (LabelPurpose).
const (
	PurposeTrace   = "trace"
	PurposeCleanup = "cleanup"
)

// ManagedSelector selects every pod svctrace created.
const ManagedSelector = LabelManagedBy + "=" + ManagedByValue

// newSessionID returns a fresh random session id. It is a variable so tests
// get stable pod names.
var newSessionID = func() string { return utilrand.String(5) }

// PodOptions describes one agent pod.
type PodOptions struct {
	Namespace string
	Node      string
	Session   string
	Image     string
	Purpose   string // PurposeTrace or PurposeCleanup
	// Args follow the binary: "agent", flags...
	Args []string
	// Target is "ns/name" of the traced Service (an annotation for humans).
	Target string
	// ActiveDeadline bounds the pod's life on the node even if nobody
	// deletes it (the client was killed and the API server unreachable).
	ActiveDeadline time.Duration
	// Stdin keeps the container's stdin open for one attach: the agent stops
	// when it reads EOF there (--stdin-watch), i.e. when the client is gone.
	Stdin bool
}

// PodName is the agent pod's name: svctrace-<session>-<node>, cut to 63
// characters (a DNS label) so that it stays valid for long node names.
func PodName(session, node string) string {
	name := "svctrace-" + session + "-" + strings.ToLower(node)
	if len(name) > 63 {
		name = name[:63]
	}
	return strings.TrimRight(name, "-.")
}

// AgentPod builds the agent pod for one node. It is pure: the same options
// always give the same pod (see testdata/*.golden.yaml).
//
// What the agent needs, and why:
//   - nodeName pinned and every taint tolerated: it must run on that node,
//     whatever its taints or schedulability;
//   - hostNetwork: TRACE rules and packets live in the node's network
//     namespace; hostPID: to reach other processes' namespaces later (--from);
//   - privileged: iptables/nftables writes and netlink trace events need
//     CAP_NET_ADMIN, reading /dev/kmsg needs CAP_SYSLOG;
//   - /dev/kmsg, /var/log (read-only): the legacy backend's trace output;
//   - /run/xtables.lock: the lock kube-proxy's iptables-restore takes, so
//     the agent's iptables calls wait for it instead of racing it;
//   - /lib/modules (read-only, not required to exist) for module loading.
func AgentPod(o PodOptions) *corev1.Pod {
	hostPath := func(name, path string, t corev1.HostPathType) corev1.Volume {
		typ := t
		return corev1.Volume{
			Name:         name,
			VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &typ}},
		}
	}
	deadline := int64(math.Ceil(o.ActiveDeadline.Seconds()))
	if deadline < 1 {
		deadline = 1
	}
	annotations := map[string]string{AnnotationClient: version.Version}
	if o.Target != "" {
		annotations[AnnotationTarget] = o.Target
	}
	grace := int64(10)
	privileged := true
	noToken := false
	noLinks := false

	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      PodName(o.Session, o.Node),
			Namespace: o.Namespace,
			Labels: map[string]string{
				LabelManagedBy: ManagedByValue,
				LabelName:      NameValue,
				LabelSession:   o.Session,
				LabelPurpose:   o.Purpose,
			},
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:                      o.Node,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			HostNetwork:                   true,
			HostPID:                       true,
			DNSPolicy:                     corev1.DNSClusterFirstWithHostNet,
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &noToken, // the agent never calls the API
			EnableServiceLinks:            &noLinks,
			Containers: []corev1.Container{{
				Name:            AgentContainer,
				Image:           o.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         append([]string{AgentBinary}, o.Args...),
				Stdin:           o.Stdin,
				StdinOnce:       o.Stdin,
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
				// The agent's stdout is the record stream; a termination
				// message from the log tail explains a crash.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{
					{Name: "kmsg", MountPath: "/dev/kmsg", ReadOnly: true},
					{Name: "varlog", MountPath: "/var/log", ReadOnly: true},
					{Name: "xtables-lock", MountPath: "/run/xtables.lock"},
					{Name: "modules", MountPath: "/lib/modules", ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{
				hostPath("kmsg", "/dev/kmsg", corev1.HostPathCharDev),
				hostPath("varlog", "/var/log", corev1.HostPathDirectory),
				hostPath("xtables-lock", "/run/xtables.lock", corev1.HostPathFileOrCreate),
				// Unset type: no check, so nodes without /lib/modules still run it.
				hostPath("modules", "/lib/modules", corev1.HostPathUnset),
			},
		},
	}
}

// AgentOptions are the trace settings passed through to every agent.
type AgentOptions struct {
	// Duration is how long the agent traces once ready (--duration).
	Duration time.Duration
	// MaxPackets stops the agent after that many packets (0: no limit).
	MaxPackets int
	Probe      bool
	// ProbeKind is where the probe connects (Probe* constants; "": the
	// cluster IP).
	ProbeKind  string
	AllPackets bool
	// Source is the agent's --source ("" or "auto": the agent decides).
	Source string
	// ProbeFromIP makes the probe connect from inside the pod with this IP
	// (--from), and limits the trace to packets from it.
	ProbeFromIP string
	// TraceEndpoints makes the agent also trace the packets arriving for
	// the Service's endpoints on its node (following the packet there).
	TraceEndpoints bool
	// ProbeWhenTold holds the probe until the plugin writes "probe" to the
	// agent's stdin, once every node's agent is ready to trace it.
	ProbeWhenTold bool
	// Src limits the trace to packets from this address without probing
	// from it (--from's pod, on the nodes the packet is followed to).
	Src string
}

// AgentArgs is the agent command line for tracing t on node. It is pure.
func AgentArgs(t *Target, node string, o AgentOptions) []string {
	args := []string{"agent"}
	if len(t.Dst) > 0 {
		args = append(args, "--dst="+strings.Join(t.Dst, ","))
	}
	for _, p := range t.NodePorts {
		args = append(args, "--nodeport="+strconv.Itoa(int(p)))
	}
	args = append(args, "--proto="+t.Proto)
	for _, s := range t.Services {
		args = append(args, "--service="+s)
	}
	if o.TraceEndpoints {
		if eps := t.EndpointAddrsOn(node); len(eps) > 0 {
			args = append(args, "--endpoint="+strings.Join(eps, ","))
		}
	}
	args = append(args, "--node="+node, "--duration="+o.Duration.String(), "--stdin-watch", "--log-stdout")
	if o.MaxPackets > 0 {
		args = append(args, "--max-packets="+strconv.Itoa(o.MaxPackets))
	}
	if o.Probe || o.ProbeFromIP != "" {
		args = append(args, "--probe")
		if o.ProbeWhenTold {
			args = append(args, "--probe-when-told")
		}
		if to, _, err := t.ProbeAddrs(o.ProbeKind, node); err == nil && len(to) > 0 {
			args = append(args, "--probe-to="+strings.Join(to, ","))
		}
	}
	switch {
	case o.ProbeFromIP != "":
		args = append(args, "--probe-from-ip="+o.ProbeFromIP, "--src="+o.ProbeFromIP)
	case o.Src != "":
		args = append(args, "--src="+o.Src)
	}
	if o.AllPackets {
		args = append(args, "--all-packets")
	}
	if o.Source != "" && o.Source != "auto" {
		args = append(args, "--source="+o.Source)
	}
	return args
}
