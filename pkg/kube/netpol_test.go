package kube

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svctrace/kubectl-svctrace/pkg/explain"
	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

func labeledPod(ns, name, ip string, lbl map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func ingressPolicy(ns, name string, sel map[string]string, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: sel},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

// refusedPacket is a packet the agent's rules found refused by kube-router
// at pod default/web-0 (ingress), source src.
func refusedPacket(src string) *record.Packet {
	p := &record.Packet{
		Family: "ipv4", Proto: "tcp", Src: src + ":41000", Dst: "10.96.0.50:80", Endpoint: "10.244.1.5:80",
		Verdict: record.VerdictReject, VerdictHop: 1,
		Hops: []record.Hop{{Table: "filter", Chain: "KUBE-ROUTER-FORWARD"}, {Table: "filter", Chain: "KUBE-POD-FW-W"}},
		Explain: &record.Explain{Policies: []record.PolicyCheck{{
			CNI: rules.CNIKubeRouter, Direction: rules.DirIngress, Pod: "default/web-0", Effect: record.PolicyRefused,
			Namespace: "default", Name: "allow-frontend", Policies: []string{"default/allow-frontend"}, Chain: "KUBE-POD-FW-W", Hop: 1, Peer: src,
		}}},
	}
	c := p.Explain.Policies[0]
	p.Explain.Policy = &c
	p.Explain.Reason = explain.PolicyReason(&c)
	return p
}

func TestPoliciesExplainRefusal(t *testing.T) {
	web := labeledPod("default", "web-0", "10.244.1.5", map[string]string{"app": "web"})
	client := labeledPod("default", "client", "10.244.1.7", map[string]string{"app": "client"})
	other := labeledPod("other", "front", "10.244.0.9", map[string]string{"role": "frontend"})
	fromFrontend := networkingv1.NetworkPolicyIngressRule{
		From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}}}},
		Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromString("http"))}},
	}
	fromBlock := networkingv1.NetworkPolicyIngressRule{
		From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}},
	}
	onlyPort8080 := networkingv1.NetworkPolicyIngressRule{
		Ports: []networkingv1.NetworkPolicyPort{{Port: ptr(intstr.FromInt32(8080))}},
	}
	allow := ingressPolicy("default", "allow-frontend", map[string]string{"app": "web"}, fromFrontend, fromBlock, onlyPort8080)
	deny := ingressPolicy("default", "deny-all", nil)
	unrelated := ingressPolicy("default", "db-only", map[string]string{"app": "db"})

	tests := []struct {
		name     string
		src      string
		objs     []runtime.Object
		wantPols []string
		wantWhy  []string
		wantPeer string
	}{
		{
			name: "pod without the label", src: "10.244.1.7",
			objs:     []runtime.Object{web, client, allow, unrelated, namespace("default")},
			wantPols: []string{"default/allow-frontend"},
			wantPeer: "default/client",
			wantWhy: []string{
				"default/allow-frontend ingress rule 1 admits pods with role=frontend in namespace default, and the source pod default/client does not match: its labels are app=client",
				"default/allow-frontend ingress rule 2 admits ipBlock 10.0.0.0/24, and the source 10.244.1.7 is not in it",
				"default/allow-frontend ingress rule 3 admits only port 8080/TCP, not 80/TCP",
			},
		},
		{
			name: "labelled pod of another namespace, and a default deny", src: "10.244.0.9",
			objs:     []runtime.Object{web, other, allow, deny, namespace("default")},
			wantPols: []string{"default/allow-frontend", "default/deny-all"},
			wantPeer: "other/front",
			wantWhy: []string{
				"default/allow-frontend ingress rule 1 admits pods with role=frontend in namespace default, and the source pod other/front does not match: it is in namespace other, its labels are role=frontend",
				"default/allow-frontend ingress rule 2 admits ipBlock 10.0.0.0/24, and the source 10.244.0.9 is not in it",
				"default/allow-frontend ingress rule 3 admits only port 8080/TCP, not 80/TCP",
				"default/deny-all has no ingress rules: it admits no ingress to the pods it selects (a default deny)",
			},
		},
		{
			name: "masqueraded source: no pod", src: "10.199.0.2",
			objs:     []runtime.Object{web, allow},
			wantPols: []string{"default/allow-frontend"},
			wantWhy: []string{
				"default/allow-frontend ingress rule 1 admits pods with role=frontend in namespace default, and the source 10.199.0.2 is no pod (a node's address, a masqueraded source or an outside client): only an ipBlock can admit it",
				"default/allow-frontend ingress rule 2 admits ipBlock 10.0.0.0/24, and the source 10.199.0.2 is not in it",
				"default/allow-frontend ingress rule 3 admits only port 8080/TCP, not 80/TCP",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset(tt.objs...)
			ps := NewPolicies(cs, &Target{Namespace: "default", PodByIP: map[string]string{"10.244.1.5": "default/web-0"}, NodeByIP: map[string]string{"10.199.0.2": "n1"}}, nil)
			p := refusedPacket(tt.src)
			ps.Explain(p)
			c := p.Explain.Policies[0]
			if diff := cmp.Diff(tt.wantPols, c.Policies); diff != "" {
				t.Errorf("policies (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantWhy, c.Why); diff != "" {
				t.Errorf("why (-want +got):\n%s", diff)
			}
			if c.PeerPod != tt.wantPeer {
				t.Errorf("peer pod %q, want %q", c.PeerPod, tt.wantPeer)
			}
			for _, w := range tt.wantWhy {
				if !strings.Contains(p.Explain.Reason, w) {
					t.Errorf("reason %q lacks %q", p.Explain.Reason, w)
				}
			}
			if p.Explain.Policy == nil || len(p.Explain.Policy.Why) != len(tt.wantWhy) {
				t.Errorf("explain.policy %+v not refreshed", p.Explain.Policy)
			}
		})
	}
}

func TestPoliciesExplainForbidden(t *testing.T) {
	cs := fake.NewClientset(labeledPod("default", "web-0", "10.244.1.5", map[string]string{"app": "web"}))
	cs.PrependReactor("list", "networkpolicies", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "networking.k8s.io", Resource: "networkpolicies"}, "", nil)
	})
	p := refusedPacket("10.244.1.7")
	NewPolicies(cs, &Target{Namespace: "default"}, nil).Explain(p)
	want := "list networking.k8s.io/networkpolicies in namespace default"
	if got := p.Explain.Policies[0].Missing; got != want {
		t.Errorf("missing permission %q, want %q", got, want)
	}
	if !strings.HasPrefix(p.Explain.Reason, "refused by NetworkPolicy default/allow-frontend (ingress to pod default/web-0)") ||
		!strings.HasSuffix(p.Explain.Reason, "svctrace needs permission to "+want) {
		t.Errorf("reason %q: want the policy named and the permission to add", p.Explain.Reason)
	}
}

func TestPoliciesAdmittedRuleFromIPSets(t *testing.T) {
	web := labeledPod("default", "web-0", "10.244.1.5", map[string]string{"app": "web"})
	allow := ingressPolicy("default", "allow-app", map[string]string{"app": "web"},
		networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}}},
		networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "frontend"}}}}},
	)
	set := rules.KubeRouterPolicySet("default", "allow-app", rules.DirIngress, 1, rules.KubeRouterSetPods, 4)
	p := &record.Packet{
		Family: "ipv4", Proto: "tcp", Src: "10.244.1.7:41000", Dst: "10.244.1.5:80", Verdict: record.VerdictAccept, VerdictHop: 0,
		Hops: []record.Hop{{Table: "filter", Chain: "KUBE-NWPLCY-AAAA", Kind: "rule",
			Text: `-A KUBE-NWPLCY-AAAA -m comment --comment "default/allow-app ingress pods" -m set --match-set ` + set + ` src -j MARK --set-xmark 0x10000/0x10000`}},
		Explain: &record.Explain{Policies: []record.PolicyCheck{{
			CNI: rules.CNIKubeRouter, Direction: rules.DirIngress, Pod: "default/web-0", Effect: record.PolicyAdmitted,
			Namespace: "default", Name: "allow-app", Match: "pods", Hop: 0, Peer: "10.244.1.7",
		}}},
	}
	NewPolicies(fake.NewClientset(web, allow), &Target{Namespace: "default"}, nil).Explain(p)
	if got := p.Explain.Policies[0].Rule; got != 2 {
		t.Errorf("rule %d, want 2 (the second ingress rule's ipset)", got)
	}
	want := "admitted by NetworkPolicy default/allow-app ingress rule 2 (selected pods) (ingress to pod default/web-0)"
	if diff := cmp.Diff([]string{want}, p.Explain.Notes); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
}

func TestPoliciesCalicoInterfaceNamesThePod(t *testing.T) {
	web := labeledPod("default", "web-0", "10.244.1.5", map[string]string{"app": "web"})
	allow := ingressPolicy("default", "allow-frontend", map[string]string{"app": "web"})
	for _, tc := range []struct {
		iface, want string
	}{
		{rules.CalicoWorkloadIface("default", "web-0"), "default/web-0"},
		{"cali0000000000a", ""}, // another pod's interface: not named
	} {
		p := refusedPacket("10.244.1.7")
		c := &p.Explain.Policies[0]
		c.CNI, c.Pod, c.Iface = rules.CNICalico, "", tc.iface
		NewPolicies(fake.NewClientset(web, allow), &Target{Namespace: "default", PodByIP: map[string]string{"10.244.1.5": "default/web-0"}}, nil).Explain(p)
		if got := p.Explain.Policies[0].Pod; got != tc.want {
			t.Errorf("iface %s: pod %q, want %q", tc.iface, got, tc.want)
		}
	}
}
