package kube

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// resolved is the part of a Target a test states by hand.
type resolved struct {
	Type               corev1.ServiceType
	Headless           bool
	ExternalLocal      bool
	Proto              string
	Dst                []string
	NodePorts          []int32
	Services           []string
	EndpointsByService map[string][]string
	PodByIP            map[string]string
	ServiceByAddr      map[string]string
}

func project(t *Target) resolved {
	return resolved{
		Type: t.Type, Headless: t.Headless, ExternalLocal: t.ExternalLocal, Proto: t.Proto,
		Dst: t.Dst, NodePorts: t.NodePorts, Services: t.Services,
		EndpointsByService: t.EndpointsByService, PodByIP: t.PodByIP, ServiceByAddr: t.ServiceByAddr,
	}
}

var myappPods = map[string]string{
	"10.244.0.23": "default/myapp-a",
	"10.244.0.24": "default/myapp-b",
	"10.244.0.25": "default/myapp-c",
}

func TestResolve(t *testing.T) {
	httpPort := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), NodePort: 30080, Protocol: corev1.ProtocolTCP}
	cluster := []runtime.Object{namespace("default"), node("svctrace-node", "10.199.0.2", true)}

	tests := []struct {
		name     string
		objs     []runtime.Object
		opts     ResolveOptions
		want     resolved
		wantNote string // a substring of the notes ("" = no notes)
		wantErr  string // a substring of the error
	}{
		{
			name: "ClusterIP Service, unnamed port, three endpoints",
			objs: []runtime.Object{
				service("default", "myapp"),
				slice("default", "myapp", "myapp-x1", discoveryv1.AddressTypeIPv4, "", 80, corev1.ProtocolTCP, myappEndpoints...),
			},
			opts: ResolveOptions{Namespace: "default", Name: "myapp"},
			want: resolved{
				Type: corev1.ServiceTypeClusterIP, Proto: "tcp",
				Dst:      []string{"10.96.173.227:80"},
				Services: []string{"default/myapp/tcp"},
				EndpointsByService: map[string][]string{
					"default/myapp": {"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"},
				},
				PodByIP:       myappPods,
				ServiceByAddr: map[string]string{"10.96.173.227:80": "default/myapp"},
			},
		},
		{
			name: "NodePort Service, port chosen by name",
			objs: []runtime.Object{
				service("default", "myapp-nodeport", withType(corev1.ServiceTypeNodePort), withClusterIPs("10.96.0.50"),
					withSelector(map[string]string{"app": "myapp"}),
					withPorts(httpPort, corev1.ServicePort{Name: "metrics", Port: 9090, NodePort: 30090})),
				slice("default", "myapp-nodeport", "np-1", discoveryv1.AddressTypeIPv4, "http", 80, corev1.ProtocolTCP, myappEndpoints...),
			},
			opts: ResolveOptions{Namespace: "default", Name: "myapp-nodeport", Port: "http"},
			want: resolved{
				Type: corev1.ServiceTypeNodePort, Proto: "tcp",
				Dst:       []string{"10.96.0.50:80"},
				NodePorts: []int32{30080},
				Services:  []string{"default/myapp-nodeport:http/tcp"},
				EndpointsByService: map[string][]string{
					"default/myapp-nodeport:http": {"10.244.0.23:80", "10.244.0.24:80", "10.244.0.25:80"},
				},
				PodByIP:       myappPods,
				ServiceByAddr: map[string]string{"10.96.0.50:80": "default/myapp-nodeport:http"},
			},
		},
		{
			name: "port chosen by number",
			objs: []runtime.Object{
				service("default", "myapp-nodeport", withType(corev1.ServiceTypeNodePort), withClusterIPs("10.96.0.50"),
					withPorts(httpPort, corev1.ServicePort{Name: "metrics", Port: 9090, NodePort: 30090})),
			},
			opts: ResolveOptions{Namespace: "default", Name: "myapp-nodeport", Port: "9090"},
			want: resolved{
				Type: corev1.ServiceTypeNodePort, Proto: "tcp",
				Dst:                []string{"10.96.0.50:9090"},
				NodePorts:          []int32{30090},
				Services:           []string{"default/myapp-nodeport:metrics/tcp"},
				EndpointsByService: map[string][]string{},
				PodByIP:            map[string]string{},
				ServiceByAddr:      map[string]string{"10.96.0.50:9090": "default/myapp-nodeport:metrics"},
			},
			wantNote: "no ready endpoints",
		},
		{
			name: "dual-stack ClusterIPs, UDP",
			objs: []runtime.Object{
				service("default", "dns", withClusterIPs("10.96.0.10", "fd00:10:96::a"),
					withPorts(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})),
				slice("default", "dns", "dns-v4", discoveryv1.AddressTypeIPv4, "dns", 5353, corev1.ProtocolUDP,
					ep{ip: "10.244.0.30", node: "svctrace-node", pod: "dns-a", ready: true}),
				slice("default", "dns", "dns-v6", discoveryv1.AddressTypeIPv6, "dns", 5353, corev1.ProtocolUDP,
					ep{ip: "fd00:10:244::30", node: "svctrace-node", pod: "dns-a", ready: true}),
			},
			opts: ResolveOptions{Namespace: "default", Name: "dns"},
			want: resolved{
				Type: corev1.ServiceTypeClusterIP, Proto: "udp",
				Dst:      []string{"10.96.0.10:53", "[fd00:10:96::a]:53"},
				Services: []string{"default/dns:dns/udp"},
				EndpointsByService: map[string][]string{
					"default/dns:dns": {"10.244.0.30:5353", "[fd00:10:244::30]:5353"},
				},
				PodByIP:       map[string]string{"10.244.0.30": "default/dns-a", "fd00:10:244::30": "default/dns-a"},
				ServiceByAddr: map[string]string{"10.96.0.10:53": "default/dns:dns", "[fd00:10:96::a]:53": "default/dns:dns"},
			},
		},
		{
			name: "LoadBalancer with ingress IP, external IP and Local policy",
			objs: []runtime.Object{
				func() *corev1.Service {
					s := service("default", "web", withType(corev1.ServiceTypeLoadBalancer), withClusterIPs("10.96.0.80"),
						withPorts(corev1.ServicePort{Name: "https", Port: 443, NodePort: 31443, Protocol: corev1.ProtocolTCP}))
					s.Spec.ExternalIPs = []string{"192.0.2.10"}
					s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
					s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}}
					return s
				}(),
				slice("default", "web", "web-1", discoveryv1.AddressTypeIPv4, "https", 8443, corev1.ProtocolTCP,
					ep{ip: "10.244.0.40", node: "svctrace-node", pod: "web-a", ready: true},
					ep{ip: "10.244.0.41", node: "svctrace-node", pod: "web-b", ready: false}),
			},
			opts: ResolveOptions{Namespace: "default", Name: "web"},
			want: resolved{
				Type: corev1.ServiceTypeLoadBalancer, ExternalLocal: true, Proto: "tcp",
				Dst:       []string{"10.96.0.80:443", "192.0.2.10:443", "198.51.100.7:443"},
				NodePorts: []int32{31443},
				Services:  []string{"default/web:https/tcp"},
				EndpointsByService: map[string][]string{
					"default/web:https": {"10.244.0.40:8443"},
				},
				PodByIP: map[string]string{"10.244.0.40": "default/web-a", "10.244.0.41": "default/web-b"},
				ServiceByAddr: map[string]string{
					"10.96.0.80:443": "default/web:https", "192.0.2.10:443": "default/web:https", "198.51.100.7:443": "default/web:https",
				},
			},
		},
		{
			name: "headless Service traces its endpoint pods",
			objs: []runtime.Object{
				service("default", "db", withClusterIPs("None"),
					withPorts(corev1.ServicePort{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP})),
				slice("default", "db", "db-1", discoveryv1.AddressTypeIPv4, "pg", 5432, corev1.ProtocolTCP,
					ep{ip: "10.244.0.50", node: "svctrace-node", pod: "db-0", ready: true},
					ep{ip: "10.244.0.51", node: "svctrace-node", pod: "db-1", ready: true}),
			},
			opts: ResolveOptions{Namespace: "default", Name: "db"},
			want: resolved{
				Type: corev1.ServiceTypeClusterIP, Headless: true, Proto: "tcp",
				Dst:      []string{"10.244.0.50:5432", "10.244.0.51:5432"},
				Services: []string{"default/db:pg/tcp"},
				EndpointsByService: map[string][]string{
					"default/db:pg": {"10.244.0.50:5432", "10.244.0.51:5432"},
				},
				PodByIP:       map[string]string{"10.244.0.50": "default/db-0", "10.244.0.51": "default/db-1"},
				ServiceByAddr: map[string]string{"10.244.0.50:5432": "default/db:pg", "10.244.0.51:5432": "default/db:pg"},
			},
			wantNote: "is headless",
		},
		{
			name: "Service whose selector matches nothing is traced (kube-proxy REJECTs)",
			objs: []runtime.Object{service("default", "noendpoints", withClusterIPs("10.96.0.99"))},
			opts: ResolveOptions{Namespace: "default", Name: "noendpoints"},
			want: resolved{
				Type: corev1.ServiceTypeClusterIP, Proto: "tcp",
				Dst:                []string{"10.96.0.99:80"},
				Services:           []string{"default/noendpoints/tcp"},
				EndpointsByService: map[string][]string{},
				PodByIP:            map[string]string{},
				ServiceByAddr:      map[string]string{"10.96.0.99:80": "default/noendpoints"},
			},
			wantNote: "no ready endpoints: kube-proxy rejects its traffic",
		},
		{
			name:    "unknown port",
			objs:    []runtime.Object{service("default", "myapp", withPorts(httpPort))},
			opts:    ResolveOptions{Namespace: "default", Name: "myapp", Port: "grpc"},
			wantErr: `service default/myapp has no port "grpc": use --port with one of http(80/TCP)`,
		},
		{
			name: "mixed protocols need --port",
			objs: []runtime.Object{service("kube-system", "kube-dns", withPorts(
				corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}))},
			opts:    ResolveOptions{Namespace: "kube-system", Name: "kube-dns"},
			wantErr: "mixes protocols (dns(53/UDP), dns-tcp(53/TCP)) and one trace follows one protocol: pick a port with --port",
		},
		{
			name:    "a port number shared by two protocols is ambiguous too",
			objs:    []runtime.Object{service("kube-system", "kube-dns", withPorts(corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}))},
			opts:    ResolveOptions{Namespace: "kube-system", Name: "kube-dns", Port: "53"},
			wantErr: "pick a port with --port",
		},
		{
			name: "ExternalName is explained",
			objs: []runtime.Object{func() *corev1.Service {
				s := service("default", "ext", withType(corev1.ServiceTypeExternalName), withClusterIPs(""))
				s.Spec.ExternalName = "db.example.com"
				return s
			}()},
			opts:    ResolveOptions{Namespace: "default", Name: "ext"},
			wantErr: `service default/ext is of type ExternalName (a DNS alias for "db.example.com"): kube-proxy writes no rules for it`,
		},
		{
			name:    "selector-less Service without EndpointSlices is explained",
			objs:    []runtime.Object{service("default", "manual", withSelector(nil))},
			opts:    ResolveOptions{Namespace: "default", Name: "manual"},
			wantErr: "has no selector and no EndpointSlices, so it has no endpoints and kube-proxy rejects all its traffic: create an EndpointSlice labelled kubernetes.io/service-name=manual",
		},
		{
			name:    "headless Service without endpoints has nothing to trace",
			objs:    []runtime.Object{service("default", "db", withClusterIPs("None"))},
			opts:    ResolveOptions{Namespace: "default", Name: "db"},
			wantErr: "headless service default/db has no endpoints, so there is no address to trace: check that its selector app=db matches running pods",
		},
		{
			name:    "unknown Service",
			opts:    ResolveOptions{Namespace: "default", Name: "nope"},
			wantErr: "service \"nope\" not found in namespace \"default\": list Services with `kubectl get svc -n default`",
		},
		{
			name:    "unknown namespace",
			opts:    ResolveOptions{Namespace: "nowhere", Name: "myapp"},
			wantErr: "namespace \"nowhere\" not found: list namespaces with `kubectl get namespaces`",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(append(append([]runtime.Object{}, cluster...), tc.objs...)...)
			got, err := Resolve(context.Background(), client, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Resolve() error = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve() error = %v", err)
			}
			if diff := cmp.Diff(tc.want, project(got)); diff != "" {
				t.Errorf("Resolve() mismatch (-want +got):\n%s", diff)
			}
			notes := strings.Join(got.Notes, "\n")
			if (tc.wantNote == "") != (notes == "") || !strings.Contains(notes, tc.wantNote) {
				t.Errorf("Resolve() notes = %q, want them to contain %q", notes, tc.wantNote)
			}
		})
	}
}

func TestResolveForbidden(t *testing.T) {
	client := fake.NewClientset(namespace("default"))
	client.PrependReactor("get", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "services"}, "myapp", nil)
	})
	_, err := Resolve(context.Background(), client, ResolveOptions{Namespace: "default", Name: "myapp"})
	want := `not allowed to get services in namespace "default": ask your cluster admin for RBAC permission to "get" "services"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Resolve() error = %v, want it to contain %q", err, want)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("Resolve() error does not wrap the Forbidden status: %v", err)
	}
}

func TestResolveNodesAndEndpointNodes(t *testing.T) {
	client := fake.NewClientset(
		node("b", "10.0.0.2", false), node("a", "10.0.0.1", true),
		service("default", "myapp"),
		slice("default", "myapp", "s1", discoveryv1.AddressTypeIPv4, "", 80, corev1.ProtocolTCP,
			ep{ip: "10.244.1.2", node: "b", pod: "p2", ready: true},
			ep{ip: "10.244.0.2", node: "a", pod: "p1", ready: true},
			ep{ip: "10.244.0.3", node: "a", pod: "p3", ready: false}),
	)
	got, err := Resolve(context.Background(), client, ResolveOptions{Namespace: "default", Name: "myapp"})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := []NodeInfo{
		{Name: "a", Ready: true, Addresses: []string{"10.0.0.1"}},
		{Name: "b", Ready: false, Addresses: []string{"10.0.0.2"}},
	}
	if diff := cmp.Diff(wantNodes, got.Nodes); diff != "" {
		t.Errorf("Nodes mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"10.0.0.1": "a", "10.0.0.2": "b"}, got.NodeByIP); diff != "" {
		t.Errorf("NodeByIP mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "b"}, got.EndpointNodes()); diff != "" {
		t.Errorf("EndpointNodes mismatch (-want +got):\n%s", diff)
	}
}

func TestProbeAddrs(t *testing.T) {
	lb := &Target{
		Namespace: "default", Name: "web", Type: corev1.ServiceTypeLoadBalancer, Proto: "tcp",
		Ports:           []Port{{Name: "http", Port: 80, NodePort: 30084}, {Name: "metrics", Port: 9090}},
		ClusterIPs:      []string{"10.96.0.80", "fd00::80"},
		LoadBalancerIPs: []string{"10.199.0.200"},
		ExternalIPs:     []string{"192.0.2.9"},
		NodePorts:       []int32{30084},
		Nodes:           []NodeInfo{{Name: "n1", Addresses: []string{"10.199.0.2"}}, {Name: "n2", Addresses: []string{"10.199.0.3"}}},
	}
	external := *lb
	external.LoadBalancerIPs = nil
	clusterIP := &Target{Namespace: "default", Name: "myapp", Type: corev1.ServiceTypeClusterIP, Proto: "tcp",
		Ports: []Port{{Port: 80}}, ClusterIPs: []string{"10.96.0.5"}}
	headless := &Target{Namespace: "default", Name: "db", Headless: true, Dst: []string{"10.244.0.4:5432", "10.244.1.4:5432"}}
	tests := []struct {
		name, kind, node string
		t                *Target
		want             []string
		wantWhat         string
		wantErr          string
	}{
		{name: "default: the cluster IPs", t: lb, node: "n1", want: []string{"10.96.0.80:80", "[fd00::80]:80", "10.96.0.80:9090", "[fd00::80]:9090"}, wantWhat: "the cluster IP"},
		{name: "nodeport on the chosen node", t: lb, kind: ProbeNodePort, node: "n2", want: []string{"10.199.0.3:30084"}, wantWhat: "the NodePort on node n2"},
		{name: "lb: the ingress IP", t: lb, kind: ProbeLB, node: "n1", want: []string{"10.199.0.200:80", "10.199.0.200:9090"}, wantWhat: "the load-balancer IP"},
		{name: "lb without ingress: the external IP", t: &external, kind: ProbeLB, node: "n1", want: []string{"192.0.2.9:80", "192.0.2.9:9090"}, wantWhat: "the external IP"},
		{name: "headless: the endpoints", t: headless, kind: ProbeCluster, want: headless.Dst, wantWhat: "the endpoints of headless Service default/db"},
		{name: "nodeport of a ClusterIP Service", t: clusterIP, kind: ProbeNodePort, node: "n1", wantErr: "service default/myapp is of type ClusterIP and has no NodePort"},
		{name: "lb of a ClusterIP Service", t: clusterIP, kind: ProbeLB, node: "n1", wantErr: "has no load-balancer IP"},
		{name: "node without address", t: lb, kind: ProbeNodePort, node: "n9", wantErr: "node n9 has no InternalIP"},
		{name: "unknown kind", t: lb, kind: "pod", node: "n1", wantErr: `--probe "pod": use cluster, nodeport, lb`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, what, err := tt.t.ProbeAddrs(tt.kind, tt.node)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" || what != tt.wantWhat {
				t.Errorf("what %q, want %q; addrs (-want +got):\n%s", what, tt.wantWhat, diff)
			}
		})
	}
}
