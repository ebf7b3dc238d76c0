// Command workload is the server of the local cluster's demo pods (image
// docker.io/library/svctrace-workload:1, built by hack/build-image.sh).
//
// `workload http -addr :80` answers every HTTP request with the pod's host name
// and prints one line per request to stdout with the client's source address,
// so tests can tell whether kube-proxy masqueraded a connection.
// `workload udp-echo -addr :5353` sends every datagram back to its sender and
// logs the sender the same way. Debian's busybox has no UDP server, hence this.
package main
