//go:build linux

// Package kernel is svctrace's kernel I/O on Linux nodes: route netlink
// (route lookups, interface addresses and names), nf_tables listings and
// generation, the nftables trace socket, entering a pod's network
// namespace, and the legacy x_tables table shapes. The agent (package
// agent) orchestrates; everything it asks the kernel directly goes through
// here. Host commands (iptables, nft) are not kernel I/O: package agent
// runs them.
//
// Which library does what:
//   - vishvananda/netlink: RTM_GETROUTE with input/output interface, source
//     and mark (Rtnl.Route), address dumps (Rtnl.Addrs, Rtnl.HasAddr),
//     link lookups (Rtnl.LinkIndex, Rtnl.LinkName: the one interface-name
//     resolver; LinkNames caches it for trace events), handles in another
//     namespace (OpenRtnlAt).
//   - vishvananda/netns: setns on a locked OS thread (Netns.Do) and the
//     namespace handles.
//   - google/nftables: the tables of a family and a chain's rules with
//     their handles and comments (userdata, or the xtables comment match).
//   - mdlayher/netlink: the sockets, and the attribute encoder/decoder for
//     the nf_tables requests google/nftables does not make well (see
//     Nftables).
//   - golang.org/x/sys/unix: every kernel constant.
//
// What stays ours, and why:
//   - the trace socket reader (TraceSocket): no library reads NFT_MSG_TRACE
//     events, and a reused buffer keeps it allocation-free; the decoding
//     itself is package trace's (NetlinkDecoder), pure and fuzzed.
//   - the chain listing of one table, the single-chain lookup and the
//     generation id (Nftables): see there.
//   - finding a pod's namespace by its address among /proc's processes
//     (FindNetnsByAddr).
//   - IPT_SO_GET_INFO (LegacyFingerprint): x/sys/unix lacks it.
package kernel
