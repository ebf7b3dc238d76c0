package explain

import (
	"sort"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
)

// Summarizer aggregates packet records into a session summary.
type Summarizer struct {
	node     string
	packets  int
	verdicts map[string]int
	snat     int
	// retransmits counts SYN retransmissions (Explain.Retransmit).
	retransmits int
	lost        uint64
	drops       map[string]int
	endpoints   map[[2]string]*record.EndpointShare // (service, endpoint)
	known       map[string][]string                 // service -> all its endpoints
	pods        map[string]string                   // endpoint -> pod
	shares      map[[2]string]float64               // (service, endpoint) -> share the rules give it
	policy      policyDrops
	nodes       map[string]string // endpoint IP -> node
}

// NewSummarizer returns an empty summary for node ("" offline).
func NewSummarizer(node string) *Summarizer {
	return &Summarizer{
		node:      node,
		verdicts:  map[string]int{},
		drops:     map[string]int{},
		endpoints: map[[2]string]*record.EndpointShare{},
		known:     map[string][]string{},
		pods:      map[string]string{},
		shares:    map[[2]string]float64{},
		nodes:     map[string]string{},
	}
}

// SetNodes tells the summary which node hosts each endpoint IP (live), so
// the spread is also given per node.
func (s *Summarizer) SetNodes(byIP map[string]string) {
	for ip, n := range byIP {
		s.nodes[ip] = n
	}
}

// SetEndpoints tells the summary every endpoint of a Service (and its pod,
// when known), so endpoints that got no packet are listed and expected
// shares are known.
func (s *Summarizer) SetEndpoints(service string, endpoints []string, pods map[string]string) {
	s.known[service] = endpoints
	for _, ep := range endpoints {
		s.share(service, ep)
		if pod := pods[ep]; pod != "" {
			s.pods[ep] = pod
		}
	}
}

func (s *Summarizer) share(service, ep string) *record.EndpointShare {
	k := [2]string{service, ep}
	e := s.endpoints[k]
	if e == nil {
		e = &record.EndpointShare{Service: service, Endpoint: ep}
		s.endpoints[k] = e
	}
	return e
}

// Add counts one packet.
func (s *Summarizer) Add(p *record.Packet) {
	s.packets++
	s.verdicts[p.Verdict]++
	for _, n := range p.NAT {
		if n.Kind == record.NATSNAT || n.Kind == record.NATMasquerade {
			s.snat++
			break
		}
	}
	if p.Explain != nil && p.Explain.Retransmit {
		s.retransmits++
	}
	if p.Endpoint != "" && newConnection(p) {
		e := s.share(p.Service, p.Endpoint)
		e.Count++
		for i := range p.Hops {
			if h := &p.Hops[i]; h.Share > 0 && (h.Role == record.RoleEndpoint || h.Role == record.RoleDNAT) {
				s.shares[[2]string{p.Service, p.Endpoint}] = h.Share
			}
		}
		if p.EndpointPod != "" {
			s.pods[p.Endpoint] = p.EndpointPod
		}
	}
	if p.Verdict == record.VerdictDrop || p.Verdict == record.VerdictReject {
		reason := p.Verdict
		if p.Explain != nil && p.Explain.Reason != "" {
			reason = p.Explain.Reason
		}
		if k := s.policy.add(p); k != "" {
			reason = k // by policy, not by each source's sentence
		}
		s.drops[reason]++
	}
}

// AddLost counts lost trace records.
func (s *Summarizer) AddLost(n uint64) { s.lost += n }

// Summary returns the summary so far, in a stable order.
func (s *Summarizer) Summary() record.Summary {
	sum := record.Summary{
		Type:        record.TypeSummary,
		Node:        s.node,
		Packets:     s.packets,
		Verdicts:    s.verdicts,
		SNAT:        s.snat,
		Retransmits: s.retransmits,
		Lost:        s.lost,
		Endpoints:   []record.EndpointShare{},
		Drops:       []record.Count{},
	}
	perService := map[string]int{}
	for k, e := range s.endpoints {
		perService[k[0]] += e.Count
	}
	for k, e := range s.endpoints {
		share := *e
		share.Pod = s.pods[share.Endpoint]
		share.Node = s.nodes[record.Host(share.Endpoint)]
		if total := perService[k[0]]; total > 0 {
			share.Share = float64(share.Count) / float64(total)
		}
		if x, ok := s.shares[k]; ok {
			share.Expected = x
		} else if n := len(s.known[k[0]]); n > 0 {
			share.Expected = 1 / float64(n)
		}
		sum.Endpoints = append(sum.Endpoints, share)
	}
	sort.Slice(sum.Endpoints, func(i, j int) bool {
		a, b := sum.Endpoints[i], sum.Endpoints[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.Endpoint < b.Endpoint
	})
	sum.PolicyDrops = s.policy.list()
	sum.Nodes = nodeShares(sum.Endpoints, perService)
	for r, n := range s.drops {
		sum.Drops = append(sum.Drops, record.Count{Reason: r, Count: n})
	}
	sort.Slice(sum.Drops, func(i, j int) bool {
		if sum.Drops[i].Count != sum.Drops[j].Count {
			return sum.Drops[i].Count > sum.Drops[j].Count
		}
		return sum.Drops[i].Reason < sum.Drops[j].Reason
	})
	return sum
}

// newConnection reports whether the nat table chose p's endpoint (the first
// packet of a connection), rather than conntrack replaying the choice.
func newConnection(p *record.Packet) bool {
	for _, n := range p.NAT {
		if n.Kind == record.NATDNAT && n.Chain != "" {
			return true
		}
	}
	return false
}

// nodeShares sums the endpoints' spread per (Service, node): kube-proxy
// balances over endpoints, so a node's expected share is its endpoints'.
func nodeShares(eps []record.EndpointShare, perService map[string]int) []record.NodeShare {
	type key struct{ svc, node string }
	byNode := map[key]*record.NodeShare{}
	endpoints := map[string]int{}
	var order []key
	for _, e := range eps {
		if e.Node == "" {
			continue
		}
		k := key{e.Service, e.Node}
		n := byNode[k]
		if n == nil {
			n = &record.NodeShare{Service: e.Service, Node: e.Node}
			byNode[k] = n
			order = append(order, k)
		}
		n.Endpoints++
		n.Count += e.Count
		endpoints[e.Service]++
	}
	if len(order) == 0 {
		return nil
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].svc != order[j].svc {
			return order[i].svc < order[j].svc
		}
		return order[i].node < order[j].node
	})
	out := make([]record.NodeShare, 0, len(order))
	for _, k := range order {
		n := *byNode[k]
		if total := perService[k.svc]; total > 0 {
			n.Share = float64(n.Count) / float64(total)
		}
		n.Expected = float64(n.Endpoints) / float64(endpoints[k.svc])
		out = append(out, n)
	}
	return out
}
