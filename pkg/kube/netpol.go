package kube

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// PermissionNetworkPolicies is the optional permission the plugin needs to
// tell why a NetworkPolicy refused a packet.
const PermissionNetworkPolicies = "list networking.k8s.io/networkpolicies"

// Policies matches the NetworkPolicy checks of live packets (as the
// agent's rules found them) against the cluster's NetworkPolicy objects:
// which rule admitted a packet, and why none of a refusing policy's rules
// admitted its peer. It reads policies, pods and namespaces once each and
// caches them for the session; every read is optional (RBAC): without
// it the check says which permission to add.
type Policies struct {
	Client kubernetes.Interface
	Target *Target
	From   *FromPod
	// Timeout bounds each API request.
	Timeout time.Duration

	mu       sync.Mutex
	policies map[string]policyList // by namespace
	pods     map[string]*corev1.Pod
	byIP     map[string]*corev1.Pod
	nsLabels map[string]nsLabels
}

type policyList struct {
	items []networkingv1.NetworkPolicy
	err   error
}

type nsLabels struct {
	labels map[string]string
	known  bool
}

// NewPolicies returns a Policies for one session.
func NewPolicies(client kubernetes.Interface, t *Target, from *FromPod) *Policies {
	return &Policies{Client: client, Target: t, From: from, Timeout: 5 * time.Second}
}

// Explain adds the cluster's view to each NetworkPolicy check of p.
func (ps *Policies) Explain(p *record.Packet) {
	if p.Explain == nil || len(p.Explain.Policies) == 0 {
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i := range p.Explain.Policies {
		ps.explainCheck(p, i)
	}
}

func (ps *Policies) explainCheck(p *record.Packet, i int) {
	c := p.Explain.Policies[i]
	if c.Effect != record.PolicyRefused && c.Effect != record.PolicyAdmitted {
		return
	}
	pod := ps.selectedPod(p, &c)
	if pod == nil {
		return
	}
	if c.Pod == "" {
		if c.Iface != "" && rules.CalicoWorkloadIface(pod.Namespace, pod.Name) != c.Iface {
			return // not the pod on that interface
		}
		explain.WithPolicyPod(p, i, pod.Namespace+"/"+pod.Name)
	}
	list := ps.namespacePolicies(pod.Namespace)
	if list.err != nil {
		if apierrors.IsForbidden(list.err) {
			explain.WithPolicyMissing(p, i, PermissionNetworkPolicies+" in namespace "+pod.Namespace)
		}
		return
	}
	selecting := selectingPolicies(list.items, pod, c.Direction)
	if c.Effect == record.PolicyAdmitted && c.Name != "" && c.CNI == rules.CNIKubeRouter {
		if rule := kubeRouterRule(p, &c, selecting); rule > 0 {
			explain.WithPolicyRule(p, i, rule)
			return
		}
	}
	peer, peerPod := ps.peer(p, &c)
	var matches []explain.PolicyMatch
	for k := range selecting {
		matches = append(matches, matchPolicy(&selecting[k], c.Direction, pod, peerPod, peer))
	}
	explain.WithPolicyMatches(p, i, matches, peer)
}

// selectedPod is the pod the check's policies select.
func (ps *Policies) selectedPod(p *record.Packet, c *record.PolicyCheck) *corev1.Pod {
	if ns, name, ok := strings.Cut(c.Pod, "/"); ok {
		return ps.pod(ns, name)
	}
	// Calico names only the interface: the endpoint for ingress, the
	// client for egress.
	addr := record.Host(p.Endpoint)
	if c.Direction == rules.DirEgress {
		addr = record.Host(p.Src)
	}
	return ps.podByIP(addr)
}

func (ps *Policies) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), ps.Timeout)
}

func (ps *Policies) pod(ns, name string) *corev1.Pod {
	key := ns + "/" + name
	if pod, ok := ps.pods[key]; ok {
		return pod
	}
	ctx, cancel := ps.ctx()
	defer cancel()
	pod, err := ps.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		pod = nil
	}
	if ps.pods == nil {
		ps.pods = map[string]*corev1.Pod{}
	}
	ps.pods[key] = pod
	return pod
}

// podByIP finds the pod with address ip: the Service's endpoints and the
// --from pod are known; others are looked up cluster-wide (list pods), else
// in the traced Service's namespace.
func (ps *Policies) podByIP(ip string) *corev1.Pod {
	if ip == "" {
		return nil
	}
	if pod, ok := ps.byIP[ip]; ok {
		return pod
	}
	if ps.byIP == nil {
		ps.byIP = map[string]*corev1.Pod{}
	}
	var pod *corev1.Pod
	switch {
	case ps.Target != nil && ps.Target.PodByIP[ip] != "":
		ns, name, _ := strings.Cut(ps.Target.PodByIP[ip], "/")
		pod = ps.pod(ns, name)
	case ps.From != nil && ps.From.IP == ip:
		pod = ps.pod(ps.From.Namespace, ps.From.Name)
	case ps.Target != nil && ps.Target.NodeByIP[ip] != "":
		// A node's address: no pod (host-network pods share it, but
		// NetworkPolicy does not apply to them as peers by label).
	default:
		sel := fields.OneTermEqualSelector("status.podIP", ip).String()
		for _, ns := range ps.lookupNamespaces() {
			ctx, cancel := ps.ctx()
			l, err := ps.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
			cancel()
			if err != nil {
				continue
			}
			for k := range l.Items {
				if q := &l.Items[k]; !q.Spec.HostNetwork && q.Status.Phase == corev1.PodRunning && hasIP(q, ip) {
					pod = q
					break
				}
			}
			if pod != nil {
				break
			}
		}
	}
	ps.byIP[ip] = pod
	return pod
}

func hasIP(pod *corev1.Pod, ip string) bool {
	for _, a := range pod.Status.PodIPs {
		if a.IP == ip {
			return true
		}
	}
	return pod.Status.PodIP == ip
}

// lookupNamespaces: all namespaces first (needs list pods cluster-wide),
// then the traced Service's.
func (ps *Policies) lookupNamespaces() []string {
	out := []string{metav1.NamespaceAll}
	if ps.Target != nil {
		out = append(out, ps.Target.Namespace)
	}
	return out
}

func (ps *Policies) namespacePolicies(ns string) policyList {
	if l, ok := ps.policies[ns]; ok {
		return l
	}
	ctx, cancel := ps.ctx()
	defer cancel()
	res, err := ps.Client.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
	l := policyList{err: err}
	if err == nil {
		l.items = res.Items
		sort.Slice(l.items, func(i, j int) bool { return l.items[i].Name < l.items[j].Name })
	}
	if ps.policies == nil {
		ps.policies = map[string]policyList{}
	}
	ps.policies[ns] = l
	return l
}

func (ps *Policies) namespaceLabels(ns string) nsLabels {
	if l, ok := ps.nsLabels[ns]; ok {
		return l
	}
	ctx, cancel := ps.ctx()
	defer cancel()
	var l nsLabels
	if n, err := ps.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		l = nsLabels{labels: n.Labels, known: true}
	}
	if ps.nsLabels == nil {
		ps.nsLabels = map[string]nsLabels{}
	}
	ps.nsLabels[ns] = l
	return l
}

// peer is the other side of the check's packet: the source for ingress,
// the destination for egress, with the packet's destination port.
func (ps *Policies) peer(p *record.Packet, c *record.PolicyCheck) (explain.PolicyPeer, *corev1.Pod) {
	peer := explain.PolicyPeer{IP: c.Peer, Port: packetPort(p)}
	pod := ps.podByIP(c.Peer)
	if pod == nil {
		return peer, nil
	}
	peer.Pod = pod.Namespace + "/" + pod.Name
	peer.Labels = labels.Set(pod.Labels).String()
	nl := ps.namespaceLabels(pod.Namespace)
	peer.NamespaceLabels = labels.Set(nl.labels).String()
	peer.NamespaceLabelsUnknown = !nl.known
	return peer, pod
}

// packetPort is the destination port the policies see: after DNAT, the
// endpoint's.
func packetPort(p *record.Packet) string {
	addr := p.Endpoint
	if addr == "" {
		addr = p.Dst
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ""
	}
	return strconv.Itoa(int(ap.Port())) + "/" + strings.ToUpper(p.Proto)
}

// selectingPolicies returns the policies of pod's namespace that select
// it for direction (ingress or egress), as the API defines policyTypes.
func selectingPolicies(list []networkingv1.NetworkPolicy, pod *corev1.Pod, direction string) []networkingv1.NetworkPolicy {
	var out []networkingv1.NetworkPolicy
	for _, np := range list {
		if np.Namespace != pod.Namespace || !policyApplies(&np, direction) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, np)
	}
	return out
}

// policyApplies: without policyTypes a policy is an ingress policy, and
// also an egress one when it has egress rules.
func policyApplies(np *networkingv1.NetworkPolicy, direction string) bool {
	want := networkingv1.PolicyTypeIngress
	if direction == rules.DirEgress {
		want = networkingv1.PolicyTypeEgress
	}
	if len(np.Spec.PolicyTypes) == 0 {
		return want == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		if t == want {
			return true
		}
	}
	return false
}

// matchPolicy matches the packet's peer and port against one policy's
// rules in direction. selected is the pod the policy selects, peerPod the
// peer's pod (nil when the peer is no pod).
func matchPolicy(np *networkingv1.NetworkPolicy, direction string, selected, peerPod *corev1.Pod, peer explain.PolicyPeer) explain.PolicyMatch {
	m := explain.PolicyMatch{Policy: np.Namespace + "/" + np.Name}
	type rule struct {
		peers []networkingv1.NetworkPolicyPeer
		ports []networkingv1.NetworkPolicyPort
	}
	var rs []rule
	portPod := selected // named ports are the receiving pod's
	if direction == rules.DirEgress {
		portPod = peerPod
		for _, r := range np.Spec.Egress {
			rs = append(rs, rule{r.To, r.Ports})
		}
	} else {
		for _, r := range np.Spec.Ingress {
			rs = append(rs, rule{r.From, r.Ports})
		}
	}
	for _, r := range rs {
		rm := explain.RuleMatch{PortsMatch: len(r.ports) == 0}
		for _, pp := range r.ports {
			rm.Ports = append(rm.Ports, portText(pp))
			if portMatches(pp, peer.Port, portPod) {
				rm.PortsMatch = true
			}
		}
		anyPeer := len(r.peers) == 0
		for _, pe := range r.peers {
			pm := peerMatch(np.Namespace, pe, peerPod, peer)
			anyPeer = anyPeer || pm.Matches
			rm.Peers = append(rm.Peers, pm)
		}
		rm.Admits = anyPeer && rm.PortsMatch
		m.Rules = append(m.Rules, rm)
	}
	return m
}

// peerMatch matches one from/to entry.
func peerMatch(policyNS string, pe networkingv1.NetworkPolicyPeer, peerPod *corev1.Pod, peer explain.PolicyPeer) explain.PeerMatch {
	pm := explain.PeerMatch{}
	if pe.IPBlock != nil {
		pm.IPBlock, pm.Except = pe.IPBlock.CIDR, pe.IPBlock.Except
		pm.Matches = inCIDR(peer.IP, pe.IPBlock.CIDR)
		for _, ex := range pe.IPBlock.Except {
			if inCIDR(peer.IP, ex) {
				pm.Matches = false
			}
		}
		return pm
	}
	pm.PodSelector = selectorText(pe.PodSelector)
	pm.NamespaceSelector = selectorText(pe.NamespaceSelector)
	if peerPod == nil {
		return pm
	}
	podOK := true
	if pe.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(pe.PodSelector)
		podOK = err == nil && sel.Matches(labels.Set(peerPod.Labels))
	}
	nsOK := peerPod.Namespace == policyNS
	if pe.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(pe.NamespaceSelector)
		nsLabels, _ := labels.ConvertSelectorToLabelsMap(peer.NamespaceLabels)
		nsOK = err == nil && !peer.NamespaceLabelsUnknown && sel.Matches(nsLabels)
		if err == nil && sel.Empty() {
			nsOK = true
		}
	}
	pm.Matches = podOK && nsOK
	return pm
}

func selectorText(s *metav1.LabelSelector) string {
	if s == nil {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		return "(invalid selector)"
	}
	if sel.Empty() {
		return "<all>"
	}
	return sel.String()
}

func inCIDR(ip, cidr string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	p, err := netip.ParsePrefix(cidr)
	return err == nil && p.Contains(a.Unmap())
}

func portText(pp networkingv1.NetworkPolicyPort) string {
	proto := "TCP"
	if pp.Protocol != nil {
		proto = string(*pp.Protocol)
	}
	if pp.Port == nil {
		return "any/" + proto
	}
	s := pp.Port.String()
	if pp.EndPort != nil {
		s += fmt.Sprintf("-%d", *pp.EndPort)
	}
	return s + "/" + proto
}

// portMatches matches "80/TCP" against a policy port; a named port is
// looked up in pod's containers.
func portMatches(pp networkingv1.NetworkPolicyPort, port string, pod *corev1.Pod) bool {
	num, proto, ok := strings.Cut(port, "/")
	if !ok {
		return false
	}
	want := "TCP"
	if pp.Protocol != nil {
		want = string(*pp.Protocol)
	}
	if !strings.EqualFold(want, proto) {
		return false
	}
	if pp.Port == nil {
		return true
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return false
	}
	if pp.Port.Type == intstr.Int {
		lo := int(pp.Port.IntVal)
		hi := lo
		if pp.EndPort != nil {
			hi = int(*pp.EndPort)
		}
		return n >= lo && n <= hi
	}
	if pod == nil {
		return false
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == pp.Port.StrVal && int(cp.ContainerPort) == n {
				return true
			}
		}
	}
	return false
}

// kubeRouterRule reads which rule of the admitting policy matched from the
// ipsets of the admitting kube-router rule: kube-router names them by
// hashing the policy and the rule's index (rules.KubeRouterPolicySet).
func kubeRouterRule(p *record.Packet, c *record.PolicyCheck, selecting []networkingv1.NetworkPolicy) int {
	if c.Hop < 0 || c.Hop >= len(p.Hops) {
		return 0
	}
	h := &p.Hops[c.Hop]
	r := rules.ParseRuleText(h.Text)
	sets := rules.PolicyRuleFact(h.Chain, &r).Sets
	fam := rules.FamilyIPv4
	if p.Family == "ipv6" {
		fam = rules.FamilyIPv6
	}
	for _, np := range selecting {
		if np.Namespace != c.Namespace || np.Name != c.Name {
			continue
		}
		n := len(np.Spec.Ingress)
		if c.Direction == rules.DirEgress {
			n = len(np.Spec.Egress)
		}
		for idx := 0; idx < n; idx++ {
			for _, peer := range []string{rules.KubeRouterSetPods, rules.KubeRouterSetIPBlock} {
				set := rules.KubeRouterPolicySet(np.Namespace, np.Name, c.Direction, idx, peer, fam)
				for _, s := range sets {
					if s == set {
						return idx + 1
					}
				}
			}
		}
	}
	return 0
}
