// Package kube is svctrace's cluster side. It resolves a Service into the
// addresses, ports and names a node agent needs (Resolve), picks the nodes
// to trace on (ChooseNodes), builds the privileged agent pod (AgentPod, a
// pure function), and runs live sessions: it creates the agent pods, follows
// them with one watch on the session's label, streams their NDJSON records,
// names what it can (nodes, endpoint pods, Services, and what the cluster's
// NetworkPolicies say about a packet's policy checks: Policies), joins the
// legs one packet leaves on several nodes (package join) and explains the
// whole path (explain.WithCluster), goes on without an agent that fails or
// is lost, and always deletes the pods again (Tracer, Cleanup).
//
// It talks to the API server only through kubernetes.Interface (so unit
// tests use fake.NewClientset) and a small PodIO seam for the pod's log and
// attach streams. It never runs host commands: everything on the node is the
// agent's job (pkg/agent).
package kube
