package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/svctrace/kubectl-svctrace/pkg/record"
	"github.com/svctrace/kubectl-svctrace/pkg/version"
)

// decodeRecord turns one line of agent output into a record value
// (*record.Packet, *record.Lost, *record.Ready, *record.Warning, *record.Bye,
// *record.Summary). ok is false for lines that are not records: the agent's
// human log lines share the container log with its records.
func decodeRecord(line []byte) (rec any, ok bool, err error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, false, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return nil, false, fmt.Errorf("garbled agent record: %w", err)
	}
	switch head.Type {
	case record.TypePacket:
		rec = &record.Packet{}
	case record.TypeLost:
		rec = &record.Lost{}
	case record.TypeReady:
		rec = &record.Ready{}
	case record.TypeWarning:
		rec = &record.Warning{}
	case record.TypeBye:
		rec = &record.Bye{}
	case record.TypeSummary:
		rec = &record.Summary{}
	case record.TypeAttached:
		rec = &record.Attached{}
	default:
		// A newer agent may send record types this plugin does not know;
		// they are skipped, like unknown fields.
		return nil, false, nil
	}
	if err := json.Unmarshal(line, rec); err != nil {
		return nil, false, fmt.Errorf("garbled %s record: %w", head.Type, err)
	}
	return rec, true, nil
}

// annotate adds what only the cluster knows to a packet from node: the
// node's name, the endpoint's pod and node (for a packet caught arriving
// for an endpoint: the one it was addressed to), and the Service when no
// rule named it.
func annotate(p *record.Packet, t *Target, node string) {
	if p.Node == "" {
		p.Node = node
	}
	ep := record.Host(p.Endpoint)
	if p.Endpoint == "" && p.TracedBy == record.TracedEndpoint {
		ep = record.Host(p.Dst)
	}
	if ep != "" {
		if p.EndpointPod == "" {
			p.EndpointPod = t.PodByIP[ep]
		}
		if p.EndpointNode == "" {
			p.EndpointNode = t.NodeOf(ep)
		}
	}
	if p.Service == "" {
		p.Service = t.ServiceByAddr[p.Dst]
	}
}

// checkVersion compares the agent's version (from its ready record) with
// this plugin's. Different major versions fail: their record formats may
// not match. Other differences warn.
func checkVersion(agent, image string) (warning string, err error) {
	client := version.Version
	switch {
	case agent == client:
		return "", nil
	case agent == "":
		return fmt.Sprintf("the agent image %s did not report its version; this plugin is %s: use a matching image with --image if the output looks wrong", image, client), nil
	}
	am, aok := majorOf(agent)
	cm, cok := majorOf(client)
	if aok && cok && am != cm {
		return "", fmt.Errorf("the agent image %s runs svctrace %s but this plugin is %s: their record formats differ; pass a matching image with --image (e.g. the one `kubectl svctrace version` prints) or upgrade the plugin with `kubectl krew upgrade svctrace`", image, agent, client)
	}
	return fmt.Sprintf("the agent image %s runs svctrace %s but this plugin is %s: pass a matching image with --image if the output looks wrong", image, agent, client), nil
}

// majorOf returns the major number of "vX.Y.Z" ("X.Y.Z"); ok is false for
// anything else (e.g. "dev").
func majorOf(v string) (int, bool) {
	v = strings.TrimPrefix(v, "v")
	dot := strings.IndexByte(v, '.')
	if dot <= 0 {
		return 0, false
	}
	n, err := strconv.Atoi(v[:dot])
	return n, err == nil
}
