package rules

import (
	"math"
	"strconv"
	"strings"
)

// endpointShares returns each rule's share of new connections when it sends
// them to an endpoint chain (see Facts.Share), nil when no rule does.
func endpointShares(rs []Rule) []float64 {
	var shares []float64
	left := 1.0
	for i := range rs {
		if ClassifyName(rs[i].Jump).Kind != ChainEndpoint {
			continue
		}
		if shares == nil {
			shares = make([]float64, len(rs))
		}
		p := rs[i].Probability
		if p <= 0 || p > 1 {
			p = 1 // the last endpoint rule takes what is left
		}
		// kube-proxy writes probabilities with 11 decimals: round off
		// what that leaves (0.333333333255 for 1/3).
		shares[i] = math.Round(left*p*1e6) / 1e6
		left *= 1 - p
	}
	return shares
}

// NumgenShare returns the share of new connections a kube-proxy nftables
// "dnat to numgen random mod N map { 0 : IP . PORT, ... }" rule sends to
// endpoint ("ip:port"): the map elements naming it over N. 0 when text is
// not such a rule or does not name the endpoint.
func NumgenShare(text, endpoint string) float64 {
	_, rest, ok := strings.Cut(text, "numgen random mod ")
	if !ok {
		return 0
	}
	num, _, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return 0
	}
	hits := 0
	for _, ep := range NftNumgenTargets(text) {
		if ep == endpoint {
			hits++
		}
	}
	return math.Round(float64(hits)/float64(n)*1e6) / 1e6
}

// SetsMasqueradeMark reports whether a rule sets kube-proxy's masquerade
// mark 0x4000 (iptables "-j MARK --set-xmark 0x4000/0x4000", nftables
// "meta mark set meta mark | 0x00004000").
func SetsMasqueradeMark(text string) bool {
	return strings.Contains(text, "--set-xmark 0x4000/0x4000") ||
		strings.Contains(text, "meta mark set meta mark | 0x00004000") ||
		strings.Contains(text, "meta mark set mark or 0x4000")
}
