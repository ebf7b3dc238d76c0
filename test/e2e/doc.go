// Package e2e drives the built kubectl-svctrace binary against a real cluster.
//
// The tests build only with `-tags e2e` and are run by hack/e2e.sh, which builds the
// binary, brings up the local cluster (hack/local-cluster.sh, two nodes) for each kube-proxy
// configuration and sets:
//
//	SVCTRACE_BIN           absolute path of the built binary (required)
//	KUBECONFIG             the cluster (required)
//	SVCTRACE_EXEC          command prefix that runs a command inside the cluster's network,
//	                       e.g. "/abs/hack/local-cluster.sh exec --" (empty: run directly)
//	SVCTRACE_EXEC_EXTERNAL command prefix for a client outside the cluster (the local
//	                       cluster's gateway namespace); empty: tests that need it skip
//	SVCTRACE_EXEC_NODE     command prefix that runs a command on one node, its element {node}
//	                       replaced by the node's name, e.g.
//	                       "/abs/hack/local-cluster.sh exec --node {node} --"; empty: tests
//	                       that need it skip (Env.OnNode, Env.NodePrefix; Env.Nodes lists the
//	                       nodes with their addresses and pod CIDRs)
//	SVCTRACE_BACKEND       kube-proxy's iptables backend under test: nft or legacy
//	SVCTRACE_PROXY_MODE    kube-proxy's mode under test: iptables or nftables
//	SVCTRACE_KUBECTL       kubectl to use (default: kubectl on PATH, run through SVCTRACE_EXEC)
//
// main_test.go holds the helpers every e2e test uses; cluster_test.go checks that the
// demo workload (hack/manifests) is up and carries real traffic.
package e2e
