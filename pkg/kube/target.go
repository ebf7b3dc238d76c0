package kube

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// ResolveOptions names the Service to trace.
type ResolveOptions struct {
	Namespace string
	Name      string
	// Port selects one Service port by name or number; "" means all ports.
	Port string
}

// Target is everything the plugin and the agent need to know about the
// traced Service. The agent gets Dst, NodePorts, Proto and Services as
// flags; the maps name addresses in the packets that come back.
type Target struct {
	Namespace string
	Name      string
	Type      corev1.ServiceType
	// Headless Services have no virtual IP: their endpoint pod IPs are traced.
	Headless bool
	// ExternalLocal is externalTrafficPolicy: Local on a NodePort or
	// LoadBalancer Service: only nodes with endpoints serve external traffic.
	ExternalLocal bool
	// Proto is the traced protocol in lower case: "tcp", "udp" or "sctp".
	Proto string
	// Ports are the selected Service ports.
	Ports []Port
	// ClusterIPs are the Service's virtual IPs (two when dual-stack).
	ClusterIPs []string
	// LoadBalancerIPs are its status.loadBalancer.ingress IPs, ExternalIPs
	// its spec.externalIPs.
	LoadBalancerIPs []string
	ExternalIPs     []string
	// Dst is the agent's --dst list: "ip:port" (IPv6 as "[ip]:port") for every
	// ClusterIP, load-balancer ingress IP and external IP of every selected
	// port, or the endpoint addresses of a headless Service.
	Dst []string
	// NodePorts is the agent's --nodeport list.
	NodePorts []int32
	// Services is the agent's --service list: "NS/NAME[:PORTNAME]/PROTO".
	Services []string
	// Endpoints are the Service's endpoints from its EndpointSlices (all
	// ports' addresses, deduplicated by IP).
	Endpoints []Endpoint
	// PodByIP maps an endpoint IP to "ns/pod".
	PodByIP map[string]string
	// NodeByIP maps a node address to the node's name.
	NodeByIP map[string]string
	// ServiceByAddr maps a traced "ip:port" to "ns/name" or "ns/name:port".
	ServiceByAddr map[string]string
	// EndpointsByService maps "ns/name[:port]" to its ready endpoints'
	// "ip:port" addresses, the set kube-proxy balances over.
	EndpointsByService map[string][]string
	// Nodes are the cluster's nodes as listed while resolving.
	Nodes []NodeInfo
	// Notes are facts worth telling the user before tracing (stderr).
	Notes []string
}

// Port is one selected Service port.
type Port struct {
	Name       string
	Port       int32
	NodePort   int32
	TargetPort string
	Proto      string // lower case
}

// Endpoint is one endpoint address of the Service.
type Endpoint struct {
	IP    string
	Ready bool
	Node  string
	// Pod is "ns/name" when the endpoint is a pod.
	Pod string
}

// NodeInfo is what node selection needs to know about a node.
type NodeInfo struct {
	Name  string
	Ready bool
	// Unschedulable is spec.unschedulable (cordoned). The agent pod is
	// pinned with nodeName, so it still runs there; it only matters for
	// preferring nodes.
	Unschedulable bool
	Addresses     []string
}

// DisplayName is "ns/name" of the Service.
func (t *Target) DisplayName() string { return t.Namespace + "/" + t.Name }

// EndpointNodes returns the sorted names of nodes hosting a ready endpoint.
func (t *Target) EndpointNodes() []string {
	seen := map[string]bool{}
	var out []string
	for _, ep := range t.Endpoints {
		if ep.Ready && ep.Node != "" && !seen[ep.Node] {
			seen[ep.Node] = true
			out = append(out, ep.Node)
		}
	}
	sort.Strings(out)
	return out
}

// EndpointAddrsOn returns the sorted "ip:port" addresses (target ports) of
// the ready endpoints on node, for every selected Service port: what the
// packets DNATed elsewhere arrive for there. hostNetwork endpoints have the
// node's own address.
func (t *Target) EndpointAddrsOn(node string) []string {
	on := map[string]bool{}
	for _, ep := range t.Endpoints {
		if ep.Ready && ep.Node == node {
			on[ep.IP] = true
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, eps := range t.EndpointsByService {
		for _, a := range eps {
			if on[record.Host(a)] && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	sort.Strings(out)
	return out
}

// NodeOf names the node hosting an address: an endpoint's node, or the
// node that has it as its own address; "" when unknown.
func (t *Target) NodeOf(ip string) string {
	if n := t.NodeByIP[ip]; n != "" {
		return n
	}
	for _, ep := range t.Endpoints {
		if ep.IP == ip {
			return ep.Node
		}
	}
	return ""
}

// EndpointNodeByIP maps each endpoint IP to its node.
func (t *Target) EndpointNodeByIP() map[string]string {
	out := map[string]string{}
	for _, ep := range t.Endpoints {
		if ep.Node != "" {
			out[ep.IP] = ep.Node
		}
	}
	return out
}

// Resolve reads the Service, its EndpointSlices and the cluster's nodes and
// returns the Target to trace. Errors say what the user can do about them.
func Resolve(ctx context.Context, client kubernetes.Interface, o ResolveOptions) (*Target, error) {
	svc, err := client.CoreV1().Services(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, serviceNotFound(ctx, client, o.Namespace, o.Name)
		}
		return nil, apiError(err, "get", "services", o.Namespace)
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, fmt.Errorf("service %s/%s is of type ExternalName (a DNS alias for %q): kube-proxy writes no rules for it, so there is nothing to trace on a node; trace the Service behind that name instead",
			svc.Namespace, svc.Name, svc.Spec.ExternalName)
	}

	ports, err := selectPorts(svc, o.Port)
	if err != nil {
		return nil, err
	}

	slices, err := client.DiscoveryV1().EndpointSlices(svc.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name,
	})
	if err != nil {
		return nil, apiError(err, "list", "endpointslices.discovery.k8s.io", svc.Namespace)
	}
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, apiError(err, "list", "nodes", "")
	}
	return buildTarget(svc, ports, slices.Items, nodes.Items)
}

// buildTarget is the pure part of Resolve.
func buildTarget(svc *corev1.Service, ports []corev1.ServicePort, slices []discoveryv1.EndpointSlice, nodes []corev1.Node) (*Target, error) {
	t := &Target{
		Namespace:          svc.Namespace,
		Name:               svc.Name,
		Type:               svc.Spec.Type,
		Proto:              strings.ToLower(string(protocolOf(ports[0]))),
		PodByIP:            map[string]string{},
		NodeByIP:           map[string]string{},
		ServiceByAddr:      map[string]string{},
		EndpointsByService: map[string][]string{},
	}
	if t.Type == "" {
		t.Type = corev1.ServiceTypeClusterIP
	}
	t.ExternalLocal = (t.Type == corev1.ServiceTypeNodePort || t.Type == corev1.ServiceTypeLoadBalancer) &&
		svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal

	for _, n := range nodes {
		info := NodeInfo{Name: n.Name, Ready: nodeReady(&n), Unschedulable: n.Spec.Unschedulable}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
				info.Addresses = append(info.Addresses, a.Address)
				t.NodeByIP[a.Address] = n.Name
			}
		}
		t.Nodes = append(t.Nodes, info)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })

	for _, p := range ports {
		t.Ports = append(t.Ports, Port{
			Name:       p.Name,
			Port:       p.Port,
			NodePort:   p.NodePort,
			TargetPort: p.TargetPort.String(),
			Proto:      t.Proto,
		})
		t.Services = append(t.Services, servicePortName(svc, p.Name)+"/"+t.Proto)
		if p.NodePort != 0 {
			t.NodePorts = append(t.NodePorts, p.NodePort)
		}
	}

	// Endpoints, deduplicated by IP across slices (dual-stack Services have
	// one slice per family; big ones several per family).
	seenEP := map[string]int{}
	for _, s := range slices {
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		for _, e := range s.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			node := ""
			if e.NodeName != nil {
				node = *e.NodeName
			}
			pod := ""
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ns := e.TargetRef.Namespace
				if ns == "" {
					ns = svc.Namespace
				}
				pod = ns + "/" + e.TargetRef.Name
			}
			for _, ip := range e.Addresses {
				if i, ok := seenEP[ip]; ok {
					t.Endpoints[i].Ready = t.Endpoints[i].Ready || ready
					continue
				}
				seenEP[ip] = len(t.Endpoints)
				t.Endpoints = append(t.Endpoints, Endpoint{IP: ip, Ready: ready, Node: node, Pod: pod})
				if pod != "" {
					t.PodByIP[ip] = pod
				}
			}
		}
	}
	sort.Slice(t.Endpoints, func(i, j int) bool { return t.Endpoints[i].IP < t.Endpoints[j].IP })
	readyEPs := 0
	for _, e := range t.Endpoints {
		if e.Ready {
			readyEPs++
		}
	}
	for _, p := range ports {
		name := servicePortName(svc, p.Name)
		for _, e := range t.Endpoints {
			if !e.Ready {
				continue
			}
			if addr, ok := addrPort(e.IP, endpointPort(slices, e.IP, p)); ok {
				t.EndpointsByService[name] = append(t.EndpointsByService[name], addr)
			}
		}
	}

	clusterIPs := svc.Spec.ClusterIPs
	if len(clusterIPs) == 0 && svc.Spec.ClusterIP != "" {
		clusterIPs = []string{svc.Spec.ClusterIP}
	}
	t.Headless = len(clusterIPs) == 1 && clusterIPs[0] == corev1.ClusterIPNone

	selectorless := len(svc.Spec.Selector) == 0
	if len(t.Endpoints) == 0 && selectorless {
		return nil, fmt.Errorf("service %s has no selector and no EndpointSlices, so it has no endpoints and kube-proxy rejects all its traffic: create an EndpointSlice labelled %s=%s for it (or add a selector), then trace again",
			t.DisplayName(), discoveryv1.LabelServiceName, svc.Name)
	}

	if t.Headless {
		if len(t.Endpoints) == 0 {
			return nil, fmt.Errorf("headless service %s has no endpoints, so there is no address to trace: check that its selector %s matches running pods (kubectl get pods -n %s -l %s)",
				t.DisplayName(), selectorString(svc.Spec.Selector), svc.Namespace, selectorString(svc.Spec.Selector))
		}
		// A headless Service has no kube-proxy rules: clients resolve the pod
		// IPs from DNS and connect directly, so trace those.
		for _, p := range ports {
			for _, e := range t.Endpoints {
				port := endpointPort(slices, e.IP, p)
				if port == 0 {
					continue
				}
				addr, ok := addrPort(e.IP, port)
				if !ok {
					continue
				}
				t.addDst(addr, servicePortName(svc, p.Name))
			}
		}
		if len(t.Dst) == 0 {
			return nil, fmt.Errorf("headless service %s: no endpoint serves the selected port(s); check the pods' container ports (kubectl get endpointslices -n %s -l %s=%s -o yaml)",
				t.DisplayName(), svc.Namespace, discoveryv1.LabelServiceName, svc.Name)
		}
		t.Notes = append(t.Notes, fmt.Sprintf("service %s is headless: clients connect to its pods directly, so the %d endpoint address(es) are traced (kube-proxy has no rules for it)", t.DisplayName(), len(t.Dst)))
		return t, nil
	}

	t.ClusterIPs = append([]string(nil), clusterIPs...)
	var virtual []string
	virtual = append(virtual, clusterIPs...)
	virtual = append(virtual, svc.Spec.ExternalIPs...)
	t.ExternalIPs = append(t.ExternalIPs, svc.Spec.ExternalIPs...)
	hostnameOnly := false
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if in.IP != "" {
			virtual = append(virtual, in.IP)
			t.LoadBalancerIPs = append(t.LoadBalancerIPs, in.IP)
		} else if in.Hostname != "" {
			hostnameOnly = true
		}
	}
	for _, p := range ports {
		name := servicePortName(svc, p.Name)
		for _, ip := range virtual {
			if addr, ok := addrPort(ip, p.Port); ok {
				t.addDst(addr, name)
			}
		}
	}
	if hostnameOnly {
		t.Notes = append(t.Notes, fmt.Sprintf("service %s has a load balancer known only by hostname: its traffic reaches the nodes on NodePorts %s, which are traced", t.DisplayName(), joinInt32(t.NodePorts)))
	}
	if readyEPs == 0 {
		t.Notes = append(t.Notes, fmt.Sprintf("service %s has no ready endpoints: kube-proxy rejects its traffic, and the trace will show where (check its selector %s with kubectl get pods -n %s -l %s)",
			t.DisplayName(), selectorString(svc.Spec.Selector), svc.Namespace, selectorString(svc.Spec.Selector)))
	}
	if len(t.Dst) == 0 && len(t.NodePorts) == 0 {
		return nil, fmt.Errorf("service %s has no cluster IP, external IP, load-balancer IP or NodePort to trace", t.DisplayName())
	}
	return t, nil
}

// Where --probe connects (ProbeAddrs).
const (
	ProbeCluster  = "cluster"  // the cluster IP (a headless Service: its endpoints)
	ProbeNodePort = "nodeport" // the NodePort on the traced node's own address
	ProbeLB       = "lb"       // the load-balancer IPs, else the external IPs
)

// ProbeKinds are the values of --probe.
var ProbeKinds = []string{ProbeCluster, ProbeNodePort, ProbeLB}

// ProbeAddrs returns the "ip:port" addresses a probe of kind connects to
// from node, for every selected port, and says what they are. It is pure:
// the errors say what the Service lacks.
func (t *Target) ProbeAddrs(kind, node string) (addrs []string, what string, err error) {
	add := func(ip string, port int32) {
		if a, ok := addrPort(ip, port); ok && !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	switch kind {
	case ProbeCluster, "":
		if t.Headless {
			return t.Dst, "the endpoints of headless Service " + t.DisplayName(), nil
		}
		for _, p := range t.Ports {
			for _, ip := range t.ClusterIPs {
				add(ip, p.Port)
			}
		}
		return addrs, "the cluster IP", nil
	case ProbeNodePort:
		if len(t.NodePorts) == 0 {
			return nil, "", fmt.Errorf("--probe nodeport: service %s is of type %s and has no NodePort: use --probe (its cluster IP)", t.DisplayName(), t.Type)
		}
		var ips []string
		for _, n := range t.Nodes {
			if n.Name == node {
				ips = n.Addresses
			}
		}
		if len(ips) == 0 {
			return nil, "", fmt.Errorf("--probe nodeport: node %s has no InternalIP or ExternalIP address in its status to connect to", node)
		}
		for _, p := range t.Ports {
			if p.NodePort != 0 {
				add(ips[0], p.NodePort)
			}
		}
		return addrs, "the NodePort on node " + node, nil
	case ProbeLB:
		ips, what := t.LoadBalancerIPs, "the load-balancer IP"
		if len(ips) == 0 {
			ips, what = t.ExternalIPs, "the external IP"
		}
		if len(ips) == 0 {
			return nil, "", fmt.Errorf("--probe lb: service %s has no load-balancer IP (status.loadBalancer.ingress) or external IP (spec.externalIPs) yet: check kubectl get svc -n %s %s, or use --probe nodeport", t.DisplayName(), t.Namespace, t.Name)
		}
		for _, p := range t.Ports {
			for _, ip := range ips {
				add(ip, p.Port)
			}
		}
		return addrs, what, nil
	}
	return nil, "", fmt.Errorf("--probe %q: use %s", kind, strings.Join(ProbeKinds, ", "))
}

func (t *Target) addDst(addr, service string) {
	if _, dup := t.ServiceByAddr[addr]; dup {
		return
	}
	t.ServiceByAddr[addr] = service
	t.Dst = append(t.Dst, addr)
}

// selectPorts picks the Service ports named or numbered by sel ("" = all)
// and checks they share one protocol (the agent traces one at a time).
func selectPorts(svc *corev1.Service, sel string) ([]corev1.ServicePort, error) {
	if len(svc.Spec.Ports) == 0 {
		return nil, fmt.Errorf("service %s/%s has no ports to trace", svc.Namespace, svc.Name)
	}
	var ports []corev1.ServicePort
	if sel == "" {
		ports = svc.Spec.Ports
	} else {
		for _, p := range svc.Spec.Ports {
			if p.Name != "" && p.Name == sel {
				ports = append(ports, p)
			}
		}
		if len(ports) == 0 {
			if n, err := strconv.ParseInt(sel, 10, 32); err == nil {
				for _, p := range svc.Spec.Ports {
					if int64(p.Port) == n {
						ports = append(ports, p)
					}
				}
			}
		}
		if len(ports) == 0 {
			return nil, fmt.Errorf("service %s/%s has no port %q: use --port with one of %s", svc.Namespace, svc.Name, sel, describePorts(svc.Spec.Ports))
		}
	}
	protos := map[corev1.Protocol]bool{}
	for _, p := range ports {
		protos[protocolOf(p)] = true
	}
	if len(protos) > 1 {
		return nil, fmt.Errorf("service %s/%s mixes protocols (%s) and one trace follows one protocol: pick a port with --port", svc.Namespace, svc.Name, describePorts(ports))
	}
	return ports, nil
}

func protocolOf(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// describePorts renders ports the way kubectl get svc does: "http(80/TCP), 53/UDP".
func describePorts(ports []corev1.ServicePort) string {
	var b strings.Builder
	for i, p := range ports {
		if i > 0 {
			b.WriteString(", ")
		}
		if p.Name != "" {
			fmt.Fprintf(&b, "%s(%d/%s)", p.Name, p.Port, protocolOf(p))
		} else {
			fmt.Fprintf(&b, "%d/%s", p.Port, protocolOf(p))
		}
	}
	return b.String()
}

// servicePortName is kube-proxy's name for a Service port: "ns/name:port",
// or "ns/name" when the port is unnamed.
func servicePortName(svc *corev1.Service, port string) string {
	if port == "" {
		return svc.Namespace + "/" + svc.Name
	}
	return svc.Namespace + "/" + svc.Name + ":" + port
}

// endpointPort finds the port an EndpointSlice gives the endpoint ip for the
// Service port p (slices name their ports after the Service's ports).
func endpointPort(slices []discoveryv1.EndpointSlice, ip string, p corev1.ServicePort) int32 {
	for _, s := range slices {
		has := false
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				if a == ip {
					has = true
				}
			}
		}
		if !has {
			continue
		}
		for _, sp := range s.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			proto := corev1.ProtocolTCP
			if sp.Protocol != nil {
				proto = *sp.Protocol
			}
			if name == p.Name && proto == protocolOf(p) && sp.Port != nil {
				return *sp.Port
			}
		}
	}
	return 0
}

// addrPort formats ip:port with brackets for IPv6, as the agent parses it.
func addrPort(ip string, port int32) (string, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil || port <= 0 || port > 65535 {
		return "", false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)).String(), true
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func selectorString(sel map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + sel[k]
	}
	return strings.Join(parts, ",")
}

func joinInt32(v []int32) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(int(n))
	}
	return strings.Join(parts, ",")
}

// serviceNotFound tells a missing namespace apart from a missing Service.
func serviceNotFound(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	_, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q not found: list namespaces with `kubectl get namespaces` and pass one with -n", ns)
	}
	return fmt.Errorf("service %q not found in namespace %q: list Services with `kubectl get svc -n %s`", name, ns, ns)
}

// apiError turns an API error into one that says the fix: RBAC denials name
// the verb and resource to grant.
func apiError(err error, verb, resource, ns string) error {
	var where string
	if ns != "" {
		where = fmt.Sprintf(" in namespace %q", ns)
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("not allowed to %s %s%s: ask your cluster admin for RBAC permission to %q %q (see the README's minimal ClusterRole): %w",
			verb, resource, where, verb, resource, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server rejected your credentials while trying to %s %s: log in again or check --kubeconfig/--context: %w", verb, resource, err)
	}
	return fmt.Errorf("%s %s%s: %w", verb, resource, where, err)
}
