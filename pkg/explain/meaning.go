package explain

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/rules"
)

// meaning says in a few words what hop i means for the packet.
func (a *annotator) meaning(i int, r *rules.Rule) string {
	h := &a.rec.Hops[i]
	info := a.chainInfo(h.Table, h.Chain)
	switch h.Kind {
	case "policy":
		if h.Verdict == "" {
			return "end of built-in chain: its policy applies"
		}
		return "end of built-in chain: policy " + h.Verdict
	case "return":
		return returnMeaning(info)
	}
	if h.Verdict == verdictJump || h.Verdict == verdictGoto {
		return a.jumpMeaning(h, info, r)
	}
	switch h.Verdict {
	case verdictReturn:
		return returnMeaning(info)
	case verdictDNAT:
		if info.Kind == rules.ChainEndpoint || info.Kind == rules.ChainService {
			return "DNAT to endpoint " + h.Target + svcSuffix(info.Service)
		}
		return "DNAT to " + h.Target
	case verdictMasquerade:
		if info.Kind == rules.ChainPostrouting {
			return "masquerade marked traffic: SNAT to the address of " + ifaceOr(h.Out, "the outgoing interface")
		}
		return "SNAT to the address of " + ifaceOr(h.Out, "the outgoing interface")
	case verdictSNAT:
		return "SNAT to " + h.Target
	case record.VerdictReject:
		if s := serviceFromComment(commentOf(r)); s != "" {
			return "Service " + s + " has no endpoints: connection rejected"
		}
		if info.Kind == rules.ChainServices || info.Kind == rules.ChainExternalServices {
			// kube-proxy rejects in these chains only for Services
			// without endpoints (nft monitor prints no comment).
			dst := a.p.Hops[i].Header
			return "the Service at " + endpoint(dst.Dst, dst.DPort, dst.Proto) + " has no endpoints: connection rejected"
		}
		return "rejected" + ownerSuffix(info)
	case record.VerdictDrop:
		return dropMeaning(info, r)
	}
	switch info.Kind {
	case rules.ChainMarkMasq:
		return "mark 0x4000: masquerade (SNAT) this connection at POSTROUTING"
	case rules.ChainPostrouting:
		if r != nil && strings.Contains(r.Text, "0x4000/0x0") || strings.Contains(h.Text, "xor 0x4000") {
			return "clear the masquerade mark before SNAT"
		}
	case rules.ChainServices:
		if r != nil && strings.Contains(r.Text, "cluster IPs") || strings.Contains(h.Text, "@cluster-ips") {
			return "cluster IP traffic from outside the cluster CIDR: mark for masquerade"
		}
	case rules.ChainSvctrace:
		return "svctrace's TRACE rule: this packet is traced from here"
	}
	if strings.Contains(h.Text, "-j TRACE") || strings.Contains(h.Text, "nftrace set 1") {
		return "TRACE rule: this packet is traced from here"
	}
	return commentOf(r)
}

// jumpMeaning explains why a rule sent the packet to another chain.
func (a *annotator) jumpMeaning(h *record.Hop, from rules.ChainInfo, r *rules.Rule) string {
	to := a.chainInfo(h.Table, h.Target)
	comment := commentOf(r)
	switch to.Kind {
	case rules.ChainServices:
		return "kube-proxy: check Service portals"
	case rules.ChainNodePorts:
		if from.Kind == rules.ChainServices {
			return "destination is a local address: check NodePorts"
		}
		return "kube-proxy: check NodePorts"
	case rules.ChainService, rules.ChainServiceLocal:
		what := "cluster IP"
		switch {
		case from.Kind == rules.ChainNodePorts:
			what = "NodePort"
		case strings.Contains(comment, "loadbalancer IP"):
			what = "load-balancer IP"
		case strings.Contains(comment, "external IP"):
			what = "external IP"
		case from.Kind == rules.ChainExternal:
			what = "external traffic"
		}
		local := ""
		if to.Kind == rules.ChainServiceLocal {
			local = " (local endpoints only)"
		}
		if to.Service == "" {
			return fmt.Sprintf("a Service's %s matched%s (give the ruleset to name it)", what, local)
		}
		return fmt.Sprintf("Service %s: %s matched%s", to.Service, what, local)
	case rules.ChainExternal:
		return "Service " + orUnknown(to.Service) + ": traffic from outside the node or cluster"
	case rules.ChainFirewall:
		return "Service " + orUnknown(to.Service) + ": load-balancer source ranges check"
	case rules.ChainEndpoint:
		ep := to.Endpoint
		if _, after, ok := strings.Cut(comment, " -> "); ep == "" && ok {
			ep = after
		}
		if ep == "" {
			ep = orUnknown(a.rec.Endpoint)
		}
		if r != nil && r.Probability > 0 {
			return fmt.Sprintf("chose endpoint %s (probability %s)", ep, strconv.FormatFloat(r.Probability, 'f', 3, 64))
		}
		return "chose endpoint " + ep
	case rules.ChainMarkMasq:
		switch {
		case from.Kind == rules.ChainEndpoint:
			return "hairpin: the endpoint calls its own Service: mark for masquerade"
		case from.Kind == rules.ChainExternal:
			return "external traffic (externalTrafficPolicy: Cluster): mark for masquerade"
		case r != nil && strings.Contains(r.Text, "! -s "):
			return "source outside the cluster CIDR: mark for masquerade"
		}
		return "mark for masquerade"
	case rules.ChainPostrouting:
		return "kube-proxy: SNAT marked traffic"
	case rules.ChainForward:
		return "kube-proxy: forwarding rules"
	case rules.ChainProxyFirewall:
		return "kube-proxy: load-balancer source ranges firewall"
	case rules.ChainExternalServices:
		return "kube-proxy: externally-visible Service checks"
	case rules.ChainKubeletFirewall:
		return "kubelet: block martian localhost traffic"
	case rules.ChainCalico:
		return "Calico chain " + h.Target
	case rules.ChainCilium:
		return "Cilium chain " + h.Target
	}
	return comment
}

func returnMeaning(info rules.ChainInfo) string {
	switch info.Kind {
	case rules.ChainMarkMasq:
		return "marked: back to the Service chain"
	case rules.ChainPostrouting:
		return "not marked for masquerade: source kept"
	case rules.ChainServices, rules.ChainExternalServices:
		return "no reject or drop rule for this destination"
	case rules.ChainProxyFirewall:
		return "no source-range restriction matched"
	case rules.ChainKubeletFirewall:
		return "not martian localhost traffic"
	case rules.ChainForward:
		return "no forwarding rule matched"
	}
	return "end of chain: back to the caller"
}

func dropMeaning(info rules.ChainInfo, r *rules.Rule) string {
	comment := commentOf(r)
	text := ""
	if r != nil {
		text = r.Text
	}
	switch {
	case strings.HasSuffix(comment, " has no local endpoints"):
		return "Service " + serviceFromComment(comment) + " has no endpoint on this node (externalTrafficPolicy: Local): dropped"
	case info.Kind == rules.ChainForward && strings.Contains(text, "INVALID"):
		return "conntrack state INVALID: dropped"
	case info.Kind == rules.ChainProxyFirewall || info.Kind == rules.ChainFirewall:
		return "source not in the Service's loadBalancerSourceRanges: dropped"
	case info.Kind == rules.ChainKubeletFirewall:
		return "kubelet: martian localhost traffic dropped"
	}
	return "dropped" + ownerSuffix(info)
}

// ownerSuffix names a chain's owner when it is recognisable.
func ownerSuffix(info rules.ChainInfo) string {
	switch info.Kind {
	case rules.ChainCalico:
		return " by a Calico chain (NetworkPolicy)"
	case rules.ChainCilium:
		return " by a Cilium chain"
	case rules.ChainKubeletFirewall:
		return " by kubelet's KUBE-FIREWALL"
	}
	return ""
}

func commentOf(r *rules.Rule) string {
	if r == nil {
		return ""
	}
	return r.Comment
}

func svcSuffix(svc string) string {
	if svc == "" {
		return ""
	}
	return " of " + svc
}

func ifaceOr(iface, fallback string) string {
	if iface == "" {
		return fallback
	}
	return iface
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
