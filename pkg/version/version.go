// Package version holds the build's version and the agent image it pairs
// with, both stamped in at link time (see the Makefile).
package version

// Version is the svctrace release ("dev" for an unstamped build).
var Version = "dev"

// Image is the agent image this build runs on nodes. The default is the
// development image that hack/local-cluster.sh up imports into the local
// cluster, so a plain go build works against it with no flags.
var Image = "docker.io/library/svctrace-agent:dev"
