//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// TestKubeProxyCases traces what kube-proxy does beyond plain DNAT, in
// iptables mode and in nftables mode alike, with the same assertions: the
// explanation must not depend on which mode programmed the rules.
func TestKubeProxyCases(t *testing.T) {
	env.RequireExec(t)
	if len(env.ExecExternal) == 0 {
		t.Skip("SVCTRACE_EXEC_EXTERNAL is not set: no client outside the cluster")
	}
	if res := env.TryKubectl(t, "get", "node", node2Name); res.ExitCode != 0 {
		t.Skipf("these tests need the 2-node local cluster (up --nodes 2):\n%s", res)
	}
	applyKubeProxyCases(t)

	t.Run("NodePort with externalTrafficPolicy Local on a node without endpoints", func(t *testing.T) {
		// myapp-local's one pod runs on svctrace-node: svctrace-node2 drops its NodePort.
		res := traceWithTraffic(t, func(t *testing.T) {
			if res := env.External(t, "curl", "-sS", "-m", "3", "http://10.199.0.3:30081/svctrace-e2e-nolocal"); res.ExitCode == 0 {
				t.Errorf("the NodePort of svctrace-node2 answered, want its SYN dropped:\n%s", res)
			}
		}, "svc/myapp-local", "--node", node2Name, "--count", "1", "--timeout", "60s", "-o", "json")
		p := firstPacket(t, res)
		wantDrop(t, p, "Service default/myapp-local:http has no endpoint on this node (externalTrafficPolicy: Local): dropped")
	})

	t.Run("load-balancer IP from outside loadBalancerSourceRanges", func(t *testing.T) {
		res := traceWithTraffic(t, func(t *testing.T) {
			if res := env.External(t, "curl", "-sS", "-m", "3", "http://"+lbsrIP+"/svctrace-e2e-lbsr"); res.ExitCode == 0 {
				t.Errorf("the load-balancer IP answered a client outside its source ranges:\n%s", res)
			}
		}, "svc/"+lbsrService, "--node", nodeName, "--count", "1", "--timeout", "60s", "-o", "json")
		p := firstPacket(t, res)
		wantDrop(t, p, "source not in the Service's loadBalancerSourceRanges: dropped")
		if p.Service != "default/"+lbsrService+":http" {
			t.Errorf("service %q, want default/%s:http", p.Service, lbsrService)
		}
	})

	t.Run("hairpin: the endpoint calls its own Service", func(t *testing.T) {
		pods := env.ListPods(t, "app=myapp-local")
		if len(pods) != 1 {
			t.Fatalf("%d myapp-local pods, want 1", len(pods))
		}
		pod := pods[0]
		res := env.Plugin(t, "svc/myapp-local", "--from", "pod/"+pod.Metadata.Name, "--count", "1", "--timeout", "60s", "-o", "json")
		p := onePacket(t, res)
		dump, _ := json.MarshalIndent(p, "", "  ")
		if p.Verdict != record.VerdictAccept || p.Endpoint != pod.Status.PodIP+":80" {
			t.Errorf("verdict %s endpoint %s, want ACCEPT to the pod itself %s:80\n%s", p.Verdict, p.Endpoint, pod.Status.PodIP, dump)
		}
		if p.Explain == nil || !strings.Contains(p.Explain.Summary, "source masqueraded at POSTROUTING (hairpin: the endpoint calls its own Service)") {
			t.Errorf("summary does not say the hairpin connection is masqueraded:\n%s", dump)
		}
		if p.Explain != nil && p.Explain.SourceSeenByEndpoint == pod.Status.PodIP {
			t.Errorf("the endpoint is said to see its own address %s: a hairpin connection is masqueraded\n%s", pod.Status.PodIP, dump)
		}
	})

	t.Run("sessionAffinity ClientIP", func(t *testing.T) {
		svcIP := env.GetService(t, affinityService).Spec.ClusterIP
		res := traceWithTraffic(t, func(t *testing.T) {
			for i := 0; i < 2; i++ {
				if res := env.TryKubectl(t, "exec", "-n", "default", "client", "--", "timeout", "10", "wget", "-q", "-O", "/dev/null", "http://"+svcIP+"/svctrace-e2e-affinity"); res.ExitCode != 0 {
					t.Errorf("wget from the client pod failed:\n%s", res)
				}
			}
		}, "svc/"+affinityService, "--node", nodeName, "--count", "2", "--timeout", "60s", "-o", "json")
		if res.ExitCode != 0 {
			t.Fatalf("trace failed:\n%s", res)
		}
		packets, _ := records(t, res.Stdout)
		if len(packets) != 2 {
			t.Fatalf("%d packets, want 2:\n%s", len(packets), res)
		}
		if packets[0].Endpoint == "" || packets[0].Endpoint != packets[1].Endpoint {
			t.Errorf("endpoints %q and %q: sessionAffinity must keep the client on one", packets[0].Endpoint, packets[1].Endpoint)
		}
		// The first connection records the client, the second finds it.
		if !hasMeaning(packets[0], "sessionAffinity: ClientIP") {
			t.Errorf("first connection: no hop says the client is remembered for sessionAffinity:\n%s", res.Stdout)
		}
		if !hasMeaning(packets[1], "again (sessionAffinity: ClientIP") {
			t.Errorf("second connection: no hop says the endpoint was chosen again by sessionAffinity:\n%s", res.Stdout)
		}
	})
	env.AssertNoLeftovers(t)
}

// The cases' Services are named without "svctrace": kube-proxy's rules
// name them, and AssertNoLeftovers looks for svctrace in every rule.
const (
	lbsrService     = "e2e-lbsr"
	lbsrIP          = "10.199.0.240" // in the local cluster's LB range, unused by hack/local-cluster.sh lb
	affinityService = "e2e-affinity"
)

var kubeProxyCaseManifests = `apiVersion: v1
kind: Service
metadata:
  name: ` + lbsrService + `
  namespace: default
  labels: {svctrace-e2e: kube-proxy}
spec:
  type: LoadBalancer
  selector: {app: myapp, release: canary}
  loadBalancerSourceRanges: ["203.0.113.0/24"]
  ports:
  - {name: http, port: 80, targetPort: 80, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata:
  name: ` + affinityService + `
  namespace: default
  labels: {svctrace-e2e: kube-proxy}
spec:
  selector: {app: myapp, release: canary}
  sessionAffinity: ClientIP
  ports:
  - {port: 80, targetPort: 80, protocol: TCP}
`

// applyKubeProxyCases creates the Services of the cases (a load-balancer IP
// set by hand, as hack/local-cluster.sh lb does, and routed from the
// gateway through svctrace-node) and removes them when the test ends.
func applyKubeProxyCases(t *testing.T) {
	t.Helper()
	file := t.TempDir() + "/kube-proxy-cases.yaml"
	if err := os.WriteFile(file, []byte(kubeProxyCaseManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		RunContext(ctx, t, env.Exec, env.KubectlBin, "delete", "svc", "-n", "default", "-l", "svctrace-e2e=kube-proxy", "--wait=true", "--ignore-not-found")
		RunContext(ctx, t, env.ExecExternal, "ip", "route", "del", lbsrIP+"/32")
	})
	env.Kubectl(t, "apply", "-f", file)
	env.Kubectl(t, "patch", "svc", lbsrService, "-n", "default", "--subresource=status", "--type=merge",
		"-p", `{"status":{"loadBalancer":{"ingress":[{"ip":"`+lbsrIP+`"}]}}}`)
	if res := env.External(t, "ip", "route", "replace", lbsrIP+"/32", "via", nodeIP); res.ExitCode != 0 {
		t.Fatalf("route %s via %s in the gateway:\n%s", lbsrIP, nodeIP, res)
	}
	// Wait until kube-proxy has programmed the source-range firewall for
	// the new IP: its nat rules can be there a sync before the filter ones.
	check, want := []string{"nft", "list", "map", "ip", "kube-proxy", "firewall-ips"}, lbsrIP+" . tcp . 80"
	if !nftablesMode() {
		save := "iptables-nft-save"
		if env.Backend == "legacy" {
			save = "iptables-legacy-save"
		}
		check, want = []string{save, "-t", "filter"}, "default/"+lbsrService+":http traffic not accepted"
	}
	for i := 0; ; i++ {
		res := env.InCluster(t, check...)
		if strings.Contains(res.Stdout, want) {
			return
		}
		if i == 60 {
			t.Fatalf("kube-proxy did not program the source-range firewall of %s in 60s (%q):\n%s", lbsrIP, want, res)
		}
		time.Sleep(time.Second)
	}
}

// firstPacket returns the first packet record of a trace (a dropped SYN
// may be sent again before the trace stops).
func firstPacket(t testing.TB, res Result) record.Packet {
	t.Helper()
	if res.ExitCode != 0 {
		t.Fatalf("trace failed:\n%s", res)
	}
	packets, types := records(t, res.Stdout)
	if len(packets) == 0 {
		t.Fatalf("no packet (records %v):\n%s", types, res)
	}
	return packets[0]
}

// wantDrop checks a dropped packet and its reason, and the summary's count.
func wantDrop(t testing.TB, p record.Packet, reason string) {
	t.Helper()
	dump, _ := json.MarshalIndent(p, "", "  ")
	if p.Verdict != record.VerdictDrop || p.Explain == nil || !strings.Contains(p.Explain.Reason, reason) {
		t.Errorf("want DROP because %q:\n%s", reason, dump)
	}
	if p.VerdictHop < 0 || p.VerdictHop >= len(p.Hops) || !strings.Contains(p.Hops[p.VerdictHop].Meaning, reason) {
		t.Errorf("the deciding hop does not say %q:\n%s", reason, dump)
	}
}

func hasMeaning(p record.Packet, sub string) bool {
	for _, h := range p.Hops {
		if strings.Contains(h.Meaning, sub) {
			return true
		}
	}
	return false
}
