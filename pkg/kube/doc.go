// Package kube is svctrace's cluster side. It resolves a Service into the
// addresses, ports and names a node agent needs (Resolve), picks the nodes
// to trace on (ChooseNodes), builds the privileged agent pod (AgentPod, a
// pure function), and runs live sessions: it creates the agent pods, waits
// for them, streams their NDJSON records, names what it can (nodes, endpoint
// pods, Services, and what the cluster's NetworkPolicies say about a
// packet's policy checks: Policies) and always deletes the pods again
// (Tracer, Cleanup).
//
// It talks to the API server only through kubernetes.Interface (so unit
// tests use fake.NewClientset) and a small PodIO seam for the pod's log and
// attach streams. It never runs host commands: everything on the node is the
// agent's job (pkg/agent).
package kube
