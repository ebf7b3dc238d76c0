package rules

import "strings"

// standardTargets are iptables targets that are not user chains.
var standardTargets = map[string]bool{
	"ACCEPT": true, "DROP": true, "REJECT": true, "RETURN": true, "QUEUE": true, "NFQUEUE": true,
	"DNAT": true, "SNAT": true, "MASQUERADE": true, "REDIRECT": true, "NETMAP": true, "TPROXY": true,
	"MARK": true, "CONNMARK": true, "LOG": true, "NFLOG": true, "TRACE": true, "CT": true, "NOTRACK": true,
	"TCPMSS": true, "CLASSIFY": true, "DSCP": true, "TOS": true, "TTL": true, "HL": true, "AUDIT": true,
	"CHECKSUM": true, "SET": true, "CONNSECMARK": true, "SECMARK": true, "IDLETIMER": true, "LED": true,
}

// ParseRuleText parses one rule as a trace prints it, without a snapshot:
// the iptables -S form ("-A CHAIN ...") or an nft rule. A rule that does not
// parse keeps only its Text.
func ParseRuleText(text string) Rule {
	r := Rule{Text: text}
	rest, ok := strings.CutPrefix(text, "-A ")
	if !ok {
		parseNftRule(&r, nil)
		return r
	}
	_, args, _ := strings.Cut(rest, " ")
	target, isGoto, err := parseIptArgs(args, &r)
	if err != nil || target == "" {
		return r
	}
	r.Target, r.Goto = target, isGoto
	if isGoto || !standardTargets[target] {
		r.Jump = target
	}
	return r
}
